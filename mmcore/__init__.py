"""mmcore: the pipeline's library (data, encoders, fusion, losses, training, metrics, IO).

Pure: tables and tensors in, tables and tensors out. Never imports prefect or mlflow.

OpenMP threads that wait for work sleep instead of spinning (`OMP_WAIT_POLICY=PASSIVE`, unless
the environment says otherwise): on a machine whose cores are busy with other processes,
spinning threads made training 4-5x slower (benchmarks/README.md). It takes effect only when
mmcore is imported before torch, as the CLI and the tasks do.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
