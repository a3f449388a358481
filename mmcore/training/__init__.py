"""The training loop and the batch sources it draws from."""

from mmcore.training.batches import ArrayBatches, ParquetBatches
from mmcore.training.loop import fit, resolve_device, seed_everything, to_device

__all__ = ["ArrayBatches", "ParquetBatches", "fit", "resolve_device", "seed_everything",
           "to_device"]
