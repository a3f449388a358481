"""Fine-tuning (`training.finetune`): the classifier trained together with its encoders and
projections, end to end from the raw train samples, the encoders starting from the stages' weights.

Why: the classifier otherwise learns on frozen embeddings, and the train split's embeddings are
the ones its encoder memorised (a bag of n-grams reaches 1.0 on 892 train reviews): any boundary
separates them, and an MLP head on them lost 1-1.5 points on test against the encoder's own linear
head (docs/decisions.md, "Text encoder for reviews"). Trained through, the encoder adapts to the
head. A head first trained on the frozen embeddings is no start: its loss on the memorised split
is near zero, and fine-tuning it changed nothing (0.824 on full reviews).

What it leaves in the training folder, beside `classifier.pt`: the fine-tuned `encoder_<m>.pt`
and `projections.pt` (`InferenceChain.from_stage_dirs` prefers them to the earlier stages'), and
`shared_<m>.parquet` re-embedded by them, which testing then reads. Feature extraction's and the
shared space's outputs stay what they were: the encoders before fine-tuning, and their probes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from mmcore.config import TrainingConfig
from mmcore.data.validation import SPLITS
from mmcore.fusion.fusion_classifier import FusionClassifier
from mmcore.inference import InferenceChain
from mmcore.io.parquet import embedding_array, read_embeddings, read_metadata, write_table
from mmcore.losses import classification_loss, classification_loss_name
from mmcore.modalities import MODALITIES
from mmcore.stages.feature_extraction import EMBED_ROWS
from mmcore.training import ParquetBatches, fit, resolve_device, seed_everything, to_device


def _decoder(modalities: list[str], meta: dict[str, Any]):
    """Samples -> labels and every modality's model inputs in one dict (their keys differ)."""
    def decode(table) -> dict[str, torch.Tensor]:
        out = {"label": torch.from_numpy(table.column("label").to_numpy().astype(np.int64))}
        for m in modalities:
            out |= MODALITIES[m].from_table(table, meta)
        return out
    return decode


def finetune_chain(samples: Path, features: Path, shared_dir: Path, features_cfg: dict[str, Any],
                   cfg: TrainingConfig, device: str, training_dir: Path, seed: int,
                   on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                   ) -> tuple[FusionClassifier, dict[str, dict[str, Any]], list[dict[str, float]]]:
    """Train the chain of the stage folders (`training_dir` holds the fresh classifier) for
    `cfg.epochs`, keeping the best val epoch; write its weights and re-embedded shared files
    into `training_dir`. Returns the classifier, the new shared embeddings (as
    `mmcore.io.parquet.read_embeddings` reads them) and the epochs' records."""
    chain = InferenceChain.from_stage_dirs(samples, features, shared_dir, training_dir,
                                           features_cfg)
    trained = chain.spec["plan"]["train"]
    for m, encoder in chain.encoders.items():
        encoder.requires_grad_(m in trained)
        encoder.head.requires_grad_(False)  # feature extraction's probe: not in the chain
    meta = read_metadata(samples / "train.parquet")
    columns = ["label", *{c for m in trained for c in MODALITIES[m].columns}]
    decode = _decoder(trained, meta)
    target = resolve_device(device)
    val = ParquetBatches(samples / "val.parquet", columns, decode, EMBED_ROWS, shuffle=False)

    def evaluate(model: InferenceChain) -> dict[str, float]:
        correct = total = 0
        for batch in val():
            batch = to_device(batch, target)
            correct += int((model(batch).argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
        return {"val_acc": correct / max(total, 1)}

    seed_everything(seed)
    history = fit(chain, ParquetBatches(samples / "train.parquet", columns, decode,
                                        cfg.batch_size, seed=seed),
                  classification_loss, epochs=cfg.epochs, lr=cfg.lr, evaluate=evaluate,
                  select_best="val_acc", on_epoch_end=on_epoch, device=target,
                  loss_name=classification_loss_name(chain.classifier))
    chain.cpu()
    for m in trained:
        torch.save({k: v for k, v in chain.encoders[m].state_dict().items()
                    if not k.startswith("head.")}, training_dir / f"encoder_{m}.pt")
    if chain.space is not None:
        torch.save(chain.space.state_dict(), training_dir / "projections.pt")
    shared = {m: reembed(chain, m, samples, shared_dir / f"shared_{m}.parquet",
                         training_dir / f"shared_{m}.parquet", meta)
              for m in chain.modalities}
    return chain.classifier, shared, history


def reembed(chain: InferenceChain, modality: str, samples: Path, source: Path, out: Path,
            meta: dict[str, Any]) -> dict[str, Any]:
    """`source` (a shared-space file) with its embeddings recomputed by `chain`, written to
    `out` with the same rows and metadata; returned as `read_embeddings` reads it."""
    table = pq.read_table(source)
    ids, parts = [], []
    for split in SPLITS:
        file = pq.ParquetFile(samples / f"{split}.parquet")
        for chunk in file.iter_batches(EMBED_ROWS,
                                       columns=["id", *MODALITIES[modality].columns]):
            ids += chunk.column("id").to_pylist()
            inputs = MODALITIES[modality].from_table(chunk, meta)
            parts.append(chain.embed(modality, inputs)[modality].numpy())
    if ids != table.column("id").to_pylist():
        raise ValueError(f"{source}: its rows are not the samples of {samples}, in order: not "
                         "the samples this space was learned from")
    table = table.set_column(table.schema.get_field_index("embedding"), "embedding",
                             embedding_array(np.concatenate(parts)))
    write_table(out, table, read_metadata(source))
    return read_embeddings(out)
