"""The shared-space stage's library code: map every modality into ONE shared space with an
alignment loss. (The operators that combine modalities into one vector, also called fusion, are in
`mmcore.fusion`.)

Loss = alignment(P_img(x_img), P_txt(x_txt)) + cls_weight * classification of both projections
by one shared linear classifier. The L2 term alone, sum ||f(x_img) - f(x_txt)||^2, is minimised by
sending everything to a single point; the shared classifier term keeps classes apart and makes the
two modalities put each class in the same region (docs/decisions.md). InfoNCE is the stronger
alternative (`shared_space.loss=infonce`): it pushes unpaired rows apart by itself.

That is the `joint` space of multimodal learning. Unimodal and cross-modal learning use an
`anchored:A` space instead, which only A's labels reach (`mmcore.stages.anchored_space`); a
modality trained without labels gets a null label in its shared file.

With one modality there is nothing to align: fusion is a pass-through (shared = features).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from mmcore.config import SharedSpaceConfig
from mmcore.fusion import ProjectionHead
from mmcore.io.parquet import embedding_table, read_embeddings, write_table
from mmcore.learning_plan import JOINT, anchor_of, labelled
from mmcore.losses import info_nce_loss, l2_alignment_loss
from mmcore.metrics import best_epoch, paired_distances, retrieval_at_1
from mmcore.stages.anchored_space import fit_anchor_side, fit_student_side, project
from mmcore.training import ArrayBatches, fit, resolve_device, seed_everything


class SharedSpace(nn.Module):
    """One projection head per modality into the shared space, plus the shared classifier."""

    def __init__(self, dims: dict[str, int], shared_dim: int, n_classes: int):
        super().__init__()
        self.modalities = sorted(dims)
        self.heads = nn.ModuleDict({m: ProjectionHead(dims[m], shared_dim) for m in dims})
        self.classifier = nn.Linear(shared_dim, n_classes)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.heads[m](x[m]) for m in self.modalities}  # each (B, shared_dim)


def _alignment_loss(cfg: SharedSpaceConfig) -> Callable:
    def loss_fn(model: SharedSpace, batch: dict[str, torch.Tensor]):
        z = model({m: batch[m] for m in model.modalities})
        a, b = (z[m] for m in model.modalities)
        align = (l2_alignment_loss(a, b) if cfg.loss == "l2"
                 else info_nce_loss(a, b, cfg.temperature))
        cls = sum(F.cross_entropy(model.classifier(v), batch["label"]) for v in z.values())
        return align + cfg.cls_weight * cls, {"count": len(batch["label"])}
    return loss_fn


def _project(model: SharedSpace, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    device = next(model.parameters()).device
    with torch.no_grad():
        z = model({m: torch.from_numpy(v).to(device) for m, v in feats.items()})
    return {m: v.cpu().numpy() for m, v in z.items()}


def run_shared_space(features_dir: Path, modalities: list[str], n_classes: int,
                     cfg: SharedSpaceConfig,
               seed: int, out_dir: Path, file_meta: dict[str, Any],
               on_epoch: Callable[[int, dict[str, float]], None] | None = None,
               device: str = "cpu", space: str = JOINT) -> dict[str, Any]:
    """Learn the shared space; write `shared_<modality>.parquet` and `projections.pt`. The space
    is `joint`, or `anchored:A` (`mmcore.stages.anchored_space`)."""
    feats = {m: read_embeddings(features_dir / f"{m}.parquet") for m in modalities}
    first = feats[modalities[0]]
    for m in modalities[1:]:
        if not np.array_equal(feats[m]["id"], first["id"]):
            raise ValueError(f"features of '{m}' and '{modalities[0]}' are not row-aligned")
    anchor = anchor_of(space)
    seed_everything(seed)
    if len(modalities) == 1:
        shared = {modalities[0]: first["embedding"]}
        metrics: dict[str, Any] = {"pass_through": 1.0}
    elif anchor is None:
        shared, metrics = _joint(feats, n_classes, cfg, seed, out_dir, on_epoch, device)
    else:
        shared, metrics = _anchored(feats, anchor, n_classes, cfg, seed, out_dir, on_epoch,
                                    device)
    used = labelled(space, modalities)
    for m, matrix in shared.items():
        labels = feats[m]["label"] if m in used else pa.nulls(len(matrix), pa.int64())
        table = embedding_table(first["id"], first["split"], labels, matrix)
        write_table(out_dir / f"shared_{m}.parquet", table,
                    {**file_meta, "modality": m, "dim": int(matrix.shape[1]), "space": space})
    return {"metrics": metrics, "shared_dim": int(next(iter(shared.values())).shape[1]),
            "labels_used": used}


def _joint(feats: dict[str, dict[str, Any]], n_classes: int, cfg: SharedSpaceConfig, seed: int,
           out_dir: Path, on_epoch, device: str) -> tuple[dict[str, np.ndarray], dict]:
    """Both projections and the shared classifier: alignment + class term on both modalities."""
    first = next(iter(feats.values()))
    model = SharedSpace({m: f["embedding"].shape[1] for m, f in feats.items()},
                        cfg.shared_dim, n_classes)
    train = first["split"] == "train"
    val = first["split"] == "val"
    arrays = {m: f["embedding"][train] for m, f in feats.items()}
    arrays["label"] = first["label"][train]

    def evaluate(m: SharedSpace) -> dict[str, float]:
        z = _project(m, {k: f["embedding"][val] for k, f in feats.items()})
        a, b = (z[k] for k in m.modalities)
        return paired_distances(a, b, seed)

    history = fit(model, ArrayBatches(arrays, cfg.batch_size, seed=seed),
                  _alignment_loss(cfg), epochs=cfg.epochs, lr=cfg.lr, evaluate=evaluate,
                  on_epoch_end=on_epoch, device=resolve_device(device),
                  loss_name=f"{cfg.loss}_plus_class_nll")
    shared = _project(model, {m: f["embedding"] for m, f in feats.items()})
    torch.save(model.cpu().state_dict(), out_dir / "projections.pt")
    a, b = (shared[m][val] for m in model.modalities)
    return shared, {**history[-1],
                    "val_retrieval_at_1": retrieval_at_1(a, b, first["label"][val])}


def _kept(history: list[dict[str, float]]) -> dict[str, float]:
    """The record of the epoch whose weights `fit` kept (its best on the value it selects on),
    not the last one: the summary then agrees with the curve's best and `best_epoch`."""
    best = best_epoch(history)
    return history[best - 1] if best is not None else history[-1]


def _anchored(feats: dict[str, dict[str, Any]], anchor: str, n_classes: int, cfg: SharedSpaceConfig,
              seed: int, out_dir: Path, on_epoch, device: str,
              ) -> tuple[dict[str, np.ndarray], dict]:
    """A's side with A's labels, then each other modality fitted label-free onto it."""
    target = resolve_device(device)
    model = SharedSpace({m: f["embedding"].shape[1] for m, f in feats.items()},
                        cfg.shared_dim, n_classes).to(target)
    a = feats[anchor]

    def prefixed(modality: str):
        return (lambda e, r: on_epoch(e, {f"{modality}.{k}": v for k, v in r.items()})
                ) if on_epoch else None

    history = fit_anchor_side(model, anchor, a["embedding"], a["label"], a["split"], cfg, seed,
                              target, prefixed(anchor))
    metrics: dict[str, Any] = {f"{anchor}.{k}": v for k, v in _kept(history).items()}
    z_anchor = project(model, {anchor: a})[anchor]
    val = a["split"] == "val"
    for student in sorted(set(feats) - {anchor}):
        b = feats[student]
        history = fit_student_side(model, student, b["embedding"], z_anchor, a["split"], cfg,
                                   seed, target, on_epoch)
        metrics.update({f"{student}.{k}": v for k, v in _kept(history).items()})
    shared = project(model, feats)
    torch.save(model.cpu().state_dict(), out_dir / "projections.pt")
    for student in sorted(set(feats) - {anchor}):
        metrics.update(paired_distances(shared[anchor][val], shared[student][val], seed))
        metrics["val_retrieval_at_1"] = retrieval_at_1(shared[student][val],
                                                       shared[anchor][val], a["label"][val])
    return shared, metrics
