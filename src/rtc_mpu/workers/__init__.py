"""Mix tasks as a service: the task records and their Redis store, the Celery app and the mix task."""
