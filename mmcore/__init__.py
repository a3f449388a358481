"""mmcore: the pipeline's library (data, encoders, fusion, losses, training, metrics, IO).

Pure: tables and tensors in, tables and tensors out. Never imports prefect or mlflow.
"""

__version__ = "0.1.0"
