"""The ``mpu`` console script: everything a person runs by hand."""

import os

# numpy loads OpenBLAS, which starts one thread per core at import: about 0.1 CPU-s of start-up on every
# ``mpu`` run. We do no linear algebra (only element-wise work and small 1-D dot products), so one
# thread is enough. Set here, before any cli module imports numpy; a value from the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
