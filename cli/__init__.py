"""The ``mpu`` console script: everything a person runs by hand."""
