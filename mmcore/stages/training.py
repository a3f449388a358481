"""Training: a classifier on the shared embeddings, for one learning mode
(`mmcore.learning_plan`).

- multimodal: fuse the modalities (the `training.fusion` operator), train and test on both;
- unimodal A: A's shared embedding alone, in the space anchored on A;
- cross_modal A -> B: train and validate on A (A's labels only), test on B, which works only
  because B was fitted, label-free, into A's space.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmcore.config import TrainingConfig
from mmcore.fusion.fusion_classifier import BLANK, EVIDENCE, LEVEL, build_classifier
from mmcore.io.parquet import read_embeddings, write_json
from mmcore.learning_plan import plan_for
from mmcore.losses import classification_loss, classification_loss_name
from mmcore.training import ArrayBatches, fit, resolve_device, seed_everything

# (shared, labels, copies, seed) -> extra training arrays: corrupted copies of the train split
# (`mmcore.stages.corruption_augment.corrupted_copies` with the run's folders filled in)
Augment = Callable[[dict[str, dict[str, Any]], np.ndarray, int, int], dict[str, np.ndarray]]
# (shared) -> None: sets `evidence` in each modality's shared rows, the raw input's signs of
# corruption that the confidence gates read (`mmcore.stages.corruption_augment.add_evidence`)
Evidence = Callable[[dict[str, dict[str, Any]]], None]

# Told every epoch's record of the classifier's training, beside `on_epoch`: how a caller that
# runs the whole pipeline (a `mmpipe tune` trial) follows the val curve, and stops a hopeless
# trial by raising. Stopping must raise, never end training early: the stage's output would
# then be cached as if all its epochs had run.
# (on_epoch) -> (classifier, shared embeddings, epoch records): the classifier that
# `classifier.pt` holds, trained together with its encoders (`mmcore.finetune.finetune_chain`
# with the run's folders filled in), and the shared embeddings re-embedded by them
Finetune = Callable[[Callable[[int, dict[str, float]], None] | None],
                    tuple[torch.nn.Module, dict[str, dict[str, Any]], list[dict[str, float]]]]

EPOCH_LISTENER: ContextVar[Callable[[int, dict[str, float]], None] | None] = ContextVar(
    "EPOCH_LISTENER", default=None)


# The confidence gates' learning rate: a small MLP on a plain binary target, fitted on its own
# (`_fit_gates`); at the classifier's rate it barely moves from the mean level in 20 epochs.
GATE_LR = 1e-2


def mode_plan(cfg: TrainingConfig, modalities: list[str]) -> dict[str, Any]:
    """Which modalities a mode trains on and tests on, its space and the labels it uses."""
    return plan_for(cfg, modalities).to_dict()


def load_shared(shared_dir: Path, modalities: list[str]) -> dict[str, dict[str, Any]]:
    return {m: read_embeddings(shared_dir / f"shared_{m}.parquet") for m in modalities}


def labels_of(shared: dict[str, dict[str, Any]], plan: dict[str, Any]) -> np.ndarray:
    """The label column, from a modality the plan uses labels of (the others' files have none:
    reading them would be label use too). Used for training, validation and scoring."""
    return shared[plan["labels_used"][0]]["label"].astype(np.int64)


def _inputs(shared: dict[str, dict[str, Any]], use: list[str], rows: np.ndarray,
            as_modalities: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Embeddings of `use` for `rows`, keyed as `as_modalities` (cross-modal renames), and their
    `evidence.<modality>` where the shared rows have it."""
    pairs = list(zip(use, as_modalities, strict=True))
    return ({key: torch.from_numpy(shared[m]["embedding"][rows]).to(device) for m, key in pairs}
            | {EVIDENCE + key: torch.from_numpy(shared[m]["evidence"][rows]).to(device)
               for m, key in pairs if "evidence" in shared[m]})


def predict_proba(model: torch.nn.Module, shared: dict[str, dict[str, Any]], plan: dict[str, Any],
                  split: str, use: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and labels on one split, with the modalities `use` (default: the
    plan's test modalities)."""
    first = next(iter(shared.values()))
    rows = np.flatnonzero(first["split"] == split)
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(_inputs(shared, use or plan["test"], rows, plan["train"], device))
    return torch.softmax(logits, dim=1).cpu().numpy(), labels_of(shared, plan)[rows]


def set_aside(shared: dict[str, dict[str, Any]], window: set[str]) -> None:
    """Training on a window of batches (`training.window`): the train and val rows of other
    batches get the split `outside`, so that neither training nor model selection sees them."""
    for rows in shared.values():
        outside = ~np.isin(rows["id"], list(window)) & (rows["split"] != "test")
        rows["split"] = np.where(outside, "outside", rows["split"])


def run_training(shared_dir: Path, modalities: list[str], n_classes: int, cfg: TrainingConfig,
                 seed: int, out_dir: Path,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                 device: str = "cpu", window: set[str] | None = None,
                 batches: list[str] | None = None, augment: Augment | None = None,
                 finetune: Finetune | None = None,
                 evidence: Evidence | None = None) -> dict[str, Any]:
    """Train the mode's classifier; write `classifier.pt` and `classifier.json`. Batched data:
    `window`, the ids of the rows the training window covers (all rows if None), and `batches`,
    the batches it covers (recorded in `classifier.json`). A multimodal classifier trains on
    `cfg.corruption_copies` corrupted copies of the train split too, made by `augment`; its
    confidence gates are fitted on them first (`_fit_gates`), reading each row's raw-input
    evidence too, set by `evidence`. With `cfg.finetune`, `finetune` trains it together with
    its encoders instead, from the samples."""
    plan = mode_plan(cfg, modalities)
    if cfg.finetune:
        _can_finetune(cfg, plan, finetune, window)
    shared = load_shared(shared_dir, modalities)
    if window is not None:
        set_aside(shared, window)
    first = shared[modalities[0]]
    dim = first["embedding"].shape[1]
    gated = (evidence is not None and cfg.confidence_gates and not cfg.finetune
             and plan["mode"] == "multimodal" and len(plan["train"]) > 1)
    if gated:
        evidence(shared)
    evidence_dims = ({m: shared[m]["evidence"].shape[1] for m in plan["train"]} if gated
                     else None)
    seed_everything(seed)
    model = build_classifier(cfg, plan["train"], dim, n_classes, evidence_dims)
    train = np.flatnonzero(first["split"] == "train")
    arrays = {m: shared[m]["embedding"][train] for m in plan["train"]}
    arrays |= {EVIDENCE + m: shared[m]["evidence"][train] for m in evidence_dims or {}}
    arrays["label"] = labels_of(shared, plan)[train]
    if augment is not None and cfg.corruption_copies and plan["mode"] == "multimodal":
        extra = augment(shared, labels_of(shared, plan), cfg.corruption_copies, seed)
        arrays = ({BLANK + m: np.zeros(len(train), dtype=bool) for m in plan["train"]}
                  | {LEVEL + m: np.zeros(len(train), dtype=np.float32) for m in plan["train"]}
                  | arrays)
        arrays = {k: np.concatenate([v, extra[k]]) for k, v in arrays.items()}

    # Validation sees what training sees: a cross-modal model is chosen on A, never on B's labels.
    # `val_nll` is the NLL of the model's (for late fusion: the fused) prediction, as `train_nll`.
    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        probs, labels = predict_proba(m, shared, plan, "val", use=plan["train"])
        loss = torch.nn.functional.nll_loss(torch.log(torch.from_numpy(probs) + 1e-12),
                                            torch.from_numpy(labels)).item()
        return {"val_nll": loss, "val_acc": float((probs.argmax(1) == labels).mean())}

    spec = {"plan": plan, "dim": dim, "n_classes": n_classes, "evidence_dims": evidence_dims,
            "training": cfg.model_dump(mode="json"), "training_batches": batches}
    if cfg.finetune:  # the fresh classifier, trained together with its encoders instead
        _save(model, spec, out_dir)
        model, shared, history = finetune(_with_listener(on_epoch))
        first = shared[modalities[0]]
    else:
        if getattr(model, "confidence", None) is not None:
            _fit_gates(model, arrays, cfg, seed, device)
        history = fit(model, ArrayBatches(arrays, cfg.batch_size, seed=seed),
                      classification_loss, epochs=cfg.epochs, lr=cfg.lr, evaluate=evaluate,
                      select_best="val_acc", on_epoch_end=_with_listener(on_epoch),
                      device=resolve_device(device), loss_name=classification_loss_name(model))
    # `val_acc`: the kept (best) epoch's, as on the val curve. Late fusion then fits the
    # modalities' weights on the same val split: the accuracy after that says so in its name.
    probs, labels = predict_proba(model, shared, plan, "val", use=plan["train"])
    val = {"val_acc": float((probs.argmax(1) == labels).mean())}
    weights = {}
    if hasattr(model, "calibrate"):  # late fusion: fit the modalities' weights on val
        rows = np.flatnonzero(first["split"] == "val")
        target = next(model.parameters()).device
        weights = model.calibrate(_inputs(shared, plan["train"], rows, plan["train"], target),
                                  torch.from_numpy(labels_of(shared, plan)[rows]).to(target))
    if weights:  # something was fitted on val: its accuracy there is no longer a fair check
        probs, labels = predict_proba(model, shared, plan, "val", use=plan["train"])
        val["val_acc_after_calibration"] = float((probs.argmax(1) == labels).mean())
    _save(model, spec, out_dir)
    return {"plan": plan, "history": history, "val": val, "fusion_weights": weights}


def _fit_gates(model: torch.nn.Module, arrays: dict[str, np.ndarray], cfg: TrainingConfig,
               seed: int, device: str) -> None:
    """Fit the confidence gates on their own loss (the corruption levels of the training rows,
    `FusionClassifier.gate_loss`) for `cfg.epochs`, then freeze them: they are no part of the
    classifier's fit, whose best epoch (often the first) would otherwise reset them."""
    fit(model.confidence, ArrayBatches(arrays, cfg.batch_size, seed=seed),
        lambda _, batch: (model.gate_loss(batch), {"count": len(batch["label"])}),
        epochs=cfg.epochs, lr=GATE_LR, device=resolve_device(device), loss_name="gate_bce")
    model.confidence.requires_grad_(False)


def _can_finetune(cfg: TrainingConfig, plan: dict[str, Any], finetune: Finetune | None,
                  window: set[str] | None) -> None:
    """Fine-tuning reads every train sample and trains on them alone: say so rather than drop
    a setting that would have changed what the classifier learns."""
    if finetune is None:
        raise ValueError("training.finetune=true: no fine-tuning given (the run's samples and "
                         "encoders)")
    if window is not None:
        raise ValueError("training.finetune=true trains on every train sample; it cannot train "
                         "on a window of batches (set training.window=all)")
    if cfg.corruption_copies and plan["mode"] == "multimodal":
        raise ValueError("training.finetune=true trains on the clean samples; corrupted copies "
                         "are embeddings of the frozen encoders (set training.corruption_copies=0)")


def _save(model: torch.nn.Module, spec: dict[str, Any], out_dir: Path) -> None:
    torch.save(model.cpu().state_dict(), out_dir / "classifier.pt")
    write_json(out_dir / "classifier.json", spec)



def _with_listener(on_epoch: Callable[[int, dict[str, float]], None] | None):
    """`on_epoch`, then the `EPOCH_LISTENER` of this context, if any."""
    listener = EPOCH_LISTENER.get()
    if listener is None:
        return on_epoch

    def both(epoch: int, record: dict[str, float]) -> None:
        if on_epoch is not None:
            on_epoch(epoch, record)
        listener(epoch, record)
    return both


def load_classifier(training_dir: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    import json

    spec = json.loads((training_dir / "classifier.json").read_text())
    model = build_classifier(TrainingConfig(**spec["training"]), spec["plan"]["train"],
                             spec["dim"], spec["n_classes"], spec.get("evidence_dims"))
    model.load_state_dict(torch.load(training_dir / "classifier.pt", weights_only=True))
    return model.eval(), spec
