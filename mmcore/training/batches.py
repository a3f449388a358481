"""Batches for `fit`: from arrays in memory, or streamed from Parquet row groups.

Streaming shuffles the order of row groups and the rows inside each, so memory stays bounded by
one row group however large the split is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmcore.modalities import MODALITIES

Batch = dict[str, torch.Tensor]


class ArrayBatches:
    """Callable(epoch) -> minibatches of dict[name, Tensor] drawn from equal-length arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, shuffle: bool = True,
                 seed: int = 0):
        self.arrays = {k: torch.as_tensor(v) for k, v in arrays.items()}
        self.n = len(next(iter(arrays.values())))
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed

    def __len__(self) -> int:
        """Batches per epoch (a one-cycle schedule needs it up front)."""
        return -(-self.n // self.batch_size)

    def __call__(self, epoch: int = 0) -> Iterator[Batch]:
        order = (torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
                 if self.shuffle else torch.arange(self.n))
        for start in range(0, self.n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield {k: v[idx] for k, v in self.arrays.items()}


def sample_decoder(modality: str, meta: dict[str, Any]) -> Callable[[pa.Table], Batch]:
    """Table of samples -> one modality's model inputs, plus labels (`meta`: the samples'
    metadata)."""
    spec = MODALITIES[modality]

    def decode(table: pa.Table) -> Batch:
        labels = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
        return {"label": labels, **spec.from_table(table, meta)}
    return decode


class ParquetBatches:
    """Callable(epoch) -> minibatches decoded from a Parquet file, one row group at a time."""

    def __init__(self, path: str | Path, columns: list[str], decode: Callable[[pa.Table], Batch],
                 batch_size: int, shuffle: bool = True, seed: int = 0,
                 row_groups: list[int] | None = None):
        """`row_groups`: read only these (e.g. a batch window's, docs/batches.md); all if None."""
        self.path, self.columns, self.decode = Path(path), columns, decode
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.row_groups = row_groups

    def _groups(self, file: pq.ParquetFile) -> list[int]:
        return (list(range(file.num_row_groups)) if self.row_groups is None
                else list(self.row_groups))

    def __len__(self) -> int:
        """Batches per epoch: each row group is cut into batches on its own."""
        file = pq.ParquetFile(self.path)
        return sum(-(-file.metadata.row_group(g).num_rows // self.batch_size)
                   for g in self._groups(file))

    def __call__(self, epoch: int = 0) -> Iterator[Batch]:
        file = pq.ParquetFile(self.path)
        rng = np.random.default_rng([self.seed, epoch])
        groups = rng.permutation(self._groups(file)) if self.shuffle else self._groups(file)
        for group in groups:
            table = file.read_row_group(int(group), columns=self.columns)
            if self.shuffle:
                table = table.take(pa.array(rng.permutation(table.num_rows)))
            for start in range(0, table.num_rows, self.batch_size):
                yield self.decode(table.slice(start, self.batch_size))
