"""The training loop and the batch sources it draws from."""

from mmcore.training.batches import ArrayBatches, ParquetBatches
from mmcore.training.loop import fit, seed_everything

__all__ = ["ArrayBatches", "ParquetBatches", "fit", "seed_everything"]
