"""Feature extraction: train one encoder per modality on its own train split, then embed every
split into the dataset `<modality>.parquet/` (id, split, label, embedding as
fixed_size_list<float32>), one part file per row group of the samples (`mmcore/io/partitions.py`).

An encoder learns with labels, or, in an anchored space (`mmcore.learning_plan`), label-free
from the pairs (`mmcore.stages.paired_encoder`); a label-free encoder's file has a null label.

Training streams row groups from the samples files and embedding streams 1,024-row slices of
them, so memory stays bounded whatever the size of the data. Embedding a row group needs only
the saved weights and the samples, so the parts can run in other processes (on Dask).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmcore.config import FeaturesConfig, digest
from mmcore.data.batches import batch_row_groups
from mmcore.data.validation import SPLITS
from mmcore.io.parquet import (
    atomic_writer,
    embedding_schema,
    embedding_table,
    read_embeddings,
    read_metadata,
    write_table,
)
from mmcore.io.partitions import MapParts, one_thread, run_inline
from mmcore.learning_plan import JOINT, LABELS, encoder_recipe, labelled
from mmcore.losses import classification_loss
from mmcore.modalities import MODALITIES
from mmcore.modalities.encoder_classifier import EncoderClassifier
from mmcore.stages.paired_encoder import label_free_columns, pair_loss_on, train_paired_encoder
from mmcore.training import ParquetBatches, fit, resolve_device, seed_everything, to_device
from mmcore.training.batches import sample_decoder
from mmcore.training.loop import Progress

EMBED_ROWS = 1024
PART_ROWS = 8192  # rows per part of an embedding dataset (the pipeline: data.batch_rows)

OnEpoch = Callable[[str, int, dict[str, float]], None]
OnProgress = Callable[[str, Progress], None]


def _columns(modality: str) -> list[str]:
    return ["id", "split", "label", *MODALITIES[modality].columns]


def _window(samples: Path, split: str, meta: dict[str, Any]) -> list[int] | None:
    """Batched data: the row groups of the reference window's batches, which encoders are
    trained on and then frozen (docs/batches.md); None (all) otherwise."""
    reference = meta.get("reference_batches")
    return batch_row_groups(samples / f"{split}.parquet", reference) if reference else None


def _predict(model: EncoderClassifier, batches: ParquetBatches, device: torch.device,
             ) -> tuple[np.ndarray, np.ndarray]:
    labels, preds = [], []
    with torch.no_grad():
        for batch in batches():
            preds.append(model(to_device(batch, device)).argmax(1).cpu().numpy())
            labels.append(batch["label"].numpy())
    return np.concatenate(labels), np.concatenate(preds)


def train_encoder(modality: str, samples: Path, cfg: FeaturesConfig, seed: int,
                  meta: dict[str, Any], on_epoch: OnEpoch | None = None,
                  device: torch.device | str = "cpu",
                  on_progress: OnProgress | None = None) -> EncoderClassifier:
    """Train the modality's encoder (with a linear head) on train, choosing the best val epoch."""
    seed_everything(seed)
    model = EncoderClassifier(modality, cfg, meta, len(meta["class_names"]))
    decode = sample_decoder(modality, meta)
    train = ParquetBatches(samples / "train.parquet", _columns(modality), decode,
                           cfg.batch_size, shuffle=True, seed=seed,
                           row_groups=_window(samples, "train", meta))
    val = ParquetBatches(samples / "val.parquet", _columns(modality), decode, 1024,
                         shuffle=False, row_groups=_window(samples, "val", meta))

    def evaluate(m):
        labels, preds = _predict(m, val, device)
        return {"val_acc": float((labels == preds).mean())}

    prime = getattr(model.encoder, "prime", None)
    if prime is not None:  # statistics of the labelled train split (text_nbbag.py)
        prime(train(0), len(meta["class_names"]))
    spec = MODALITIES[modality]
    epochs = cfg.resolve_epochs(spec.epochs(cfg), len(train), spec.step_budget(cfg))
    fit(model, train, classification_loss, epochs=epochs, lr=cfg.lr, evaluate=evaluate,
        select_best="val_acc", device=device,
        schedule=cfg.schedule, patience=cfg.patience, loss_name="nll",
        on_epoch_end=(lambda e, r: on_epoch(modality, e, r)) if on_epoch else None,
        on_progress=(lambda p: on_progress(modality, p)) if on_progress else None)
    return model


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of a model's weights (names and bytes): what its embeddings were computed from,
    so that a part left by an earlier attempt is reused only for the very same encoder."""
    blob = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        blob.update(name.encode())
        blob.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return blob.hexdigest()[:16]


def row_group_parts(file: Path, part_rows: int) -> list[list[int]]:
    """A file's row groups in consecutive runs of at least `part_rows` rows (the last may have
    fewer): the partitions of one split."""
    meta = pq.ParquetFile(file).metadata
    parts: list[list[int]] = []
    rows = part_rows
    for group in range(meta.num_row_groups):
        if rows >= part_rows:
            parts.append([])
            rows = 0
        parts[-1].append(group)
        rows += meta.row_group(group).num_rows
    return parts


def _batch_parts(samples: Path, meta: dict[str, Any], cache: Path, weights: str,
                 ) -> list[dict[str, Any]]:
    """Batched data: one part per split and batch, each with the file of the per-batch cache
    that holds its embeddings once computed (keyed by the batch's preprocessing key and the
    encoder's weights)."""
    jobs = []
    for split in SPLITS:
        for name in meta["batches"]:
            groups = batch_row_groups(samples / f"{split}.parquet", [name])
            if groups:
                key = digest({"batch": meta["batch_keys"][name], "split": split,
                              "weights": weights})
                jobs.append({"samples": str(samples / f"{split}.parquet"), "row_groups": groups,
                             "batch": name, "cache_file": str(cache / f"{key}.parquet")})
    return jobs


def embed_jobs(samples: Path, weights: Path, modality: str, cfg: FeaturesConfig,
               meta: dict[str, Any], file_meta: dict[str, Any], with_labels: bool,
               part_rows: int, device: str = "cpu", batch_cache: Path | None = None,
               weights_id: str = "", out_of_fold: Path | None = None) -> list[dict[str, Any]]:
    """One job per run of whole row groups of about `part_rows` rows, split by split in row
    order (batched data: per split and batch): what `embed_part` needs to embed them in any
    process that reaches the run folder."""
    common = {"weights": str(weights), "modality": modality,
              "features": cfg.model_dump(mode="json"), "sample_meta": meta,
              "with_labels": with_labels, "device": device, "meta": file_meta,
              "out_of_fold": None if out_of_fold is None else str(out_of_fold)}
    if "batches" in meta and batch_cache is not None:
        parts = _batch_parts(samples, meta, batch_cache / "embeddings",
                             f"{modality}-{with_labels}-{weights_id}-{device}")
    else:
        parts = [{"samples": str(samples / f"{split}.parquet"), "row_groups": groups}
                 for split in SPLITS
                 for groups in row_group_parts(samples / f"{split}.parquet", part_rows)]
    return [{**part, **common} for part in parts]


def load_trained(weights: str | Path, modality: str, cfg: FeaturesConfig,
                 meta: dict[str, Any]) -> EncoderClassifier:
    """An encoder (with its head) from the state dict feature extraction saved."""
    state = torch.load(weights, weights_only=True)
    model = EncoderClassifier(modality, cfg, meta, state["head.weight"].shape[0])
    model.load_state_dict(state)
    return model.eval()


def embed_part(out: Path, meta: dict[str, Any], samples: str, row_groups: list[int],
               weights: str, modality: str, features: dict[str, Any],
               sample_meta: dict[str, Any], with_labels: bool, device: str = "cpu",
               rows_per_pass: int = EMBED_ROWS, batch: str | None = None,
               cache_file: str | None = None, out_of_fold: str | None = None) -> None:
    """Embed row groups of a samples file into the part file `out` (written atomically).

    Batched data (`batch`): the part's rows carry the batch's name, and `cache_file` keeps its
    embeddings across runs: a part found there is copied (with this part's metadata), one
    computed here is linked there (`keep_in_cache`).

    At most `rows_per_pass` rows go through the encoder at once: a whole row group (8,192 rows
    of 28x28) in one forward pass peaked at 3.3 GB, 1,024 rows at ~1 GB, and is no slower.
    A label-free encoder (`with_labels=False`) reads no label and writes a null one. A row
    found in `out_of_fold` (`write_out_of_fold`) gets its cross-fitted embedding from there.
    """
    if cache_file is not None and Path(cache_file).exists():
        write_table(out, pq.read_table(cache_file), meta)
        return
    model = load_trained(weights, modality, FeaturesConfig(**features), sample_meta).to(device)
    columns = _columns(modality) if with_labels else label_free_columns(modality)
    spec = MODALITIES[modality]
    crossed = read_embeddings(out_of_fold) if out_of_fold is not None else None
    file = pq.ParquetFile(samples)
    schema = embedding_schema(model.encoder.dim, batched=batch is not None)
    with one_thread(), atomic_writer(out, schema, meta) as writer:
        for chunk in file.iter_batches(rows_per_pass, row_groups=row_groups, columns=columns):
            table = pa.Table.from_batches([chunk])
            with torch.no_grad():
                emb = model.embed(to_device(spec.from_table(table, sample_meta), device))
            labels = table.column("label") if with_labels else pa.nulls(table.num_rows,
                                                                         pa.int64())
            emb = emb.cpu().numpy()
            if crossed is not None:
                emb = _cross_fitted(emb, table.column("id").to_numpy(zero_copy_only=False),
                                    crossed)
            writer.write_table(embedding_table(
                table.column("id"), table.column("split"), labels, emb,
                None if batch is None else [batch] * table.num_rows))
    if cache_file is not None:
        keep_in_cache(Path(out), Path(cache_file))


def _cross_fitted(emb: np.ndarray, ids: np.ndarray, crossed: dict[str, Any]) -> np.ndarray:
    """`emb` with the rows whose id `crossed` holds replaced by their cross-fitted embedding."""
    index = {rid: i for i, rid in enumerate(crossed["id"])}
    rows = [(n, index[rid]) for n, rid in enumerate(ids) if rid in index]
    if not rows:
        return emb
    emb = emb.copy()
    mine, theirs = (np.array(r) for r in zip(*rows, strict=True))
    emb[mine] = crossed["embedding"][theirs]
    return emb


def write_out_of_fold(model: EncoderClassifier, samples: Path, meta: dict[str, Any],
                      out_dir: Path) -> Path | None:
    """An encoder that can score its train rows cross-fitted (`fold_scores`: `nbsvm`) gets them
    written to `out_of_fold_<modality>.parquet` (id, split, label, embedding), which
    `embed_part` then writes for those rows: a model that separates every train row it was fitted
    on says nothing, on those rows, about where a classifier's threshold belongs. None for every
    other encoder."""
    fold_scores = getattr(model.encoder, "fold_scores", None)
    if fold_scores is None:
        return None
    modality = model.modality
    groups = _window(samples, "train", meta)
    train = ParquetBatches(samples / "train.parquet", _columns(modality),
                           sample_decoder(modality, meta), EMBED_ROWS, shuffle=False,
                           row_groups=groups)
    scores = fold_scores(list(train()), len(meta["class_names"]))
    file = pq.ParquetFile(samples / "train.parquet")
    rows = file.read_row_groups(groups if groups is not None else range(file.num_row_groups),
                                columns=["id", "split", "label"])
    out = out_dir / f"out_of_fold_{modality}.parquet"
    write_table(out, embedding_table(rows.column("id"), rows.column("split"),
                                     rows.column("label"), scores.numpy()), {"modality": modality})
    return out


def keep_in_cache(part: Path, cache_file: Path) -> None:
    """A hard link to a finished part in the per-batch cache (renamed into place: a reader
    never sees half a file; files are never changed in place, so the link stays valid)."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.link(part, tmp)
    except OSError:  # another file system: a copy
        shutil.copyfile(part, tmp)
    os.replace(tmp, cache_file)


def embed_splits(model: EncoderClassifier, samples: Path, out_dir: Path, meta: dict[str, Any],
                 cfg: FeaturesConfig, file_meta: dict[str, Any], map_parts: MapParts,
                 part_rows: int, with_labels: bool = True,
                 batch_cache: Path | None = None, out_of_fold: Path | None = None) -> Path:
    """Save the encoder to `encoder_<modality>.pt` and embed every split into the dataset
    `<modality>.parquet/`, one part per `part_rows` rows (whole row groups) of the samples,
    through `map_parts` (here one after another, or on a cluster: `tasks/parallel/partitions.py`).
    Returns the dataset folder."""
    weights = out_dir / f"encoder_{model.modality}.pt"
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, weights)
    device = str(next(model.parameters()).device)
    jobs = embed_jobs(samples, weights, model.modality, cfg, meta, file_meta, with_labels,
                      part_rows, device, batch_cache, weights_digest(model), out_of_fold)
    return map_parts(f"{model.modality}.parquet", embed_part, jobs, weights_digest(model))


def split_accuracies(teacher: dict[str, Any]) -> dict[str, float]:
    """The encoder's own head's accuracy per split, from its class scores per row."""
    correct = teacher["embedding"].argmax(1) == teacher["label"]
    return {f"{split}_acc": float(correct[teacher["split"] == split].sum()
                                  / max(int((teacher["split"] == split).sum()), 1))
            for split in SPLITS}


def teacher_scores(model: EncoderClassifier, features: Path) -> dict[str, Any]:
    """What a label-free encoder of another modality learns to predict: this encoder's class
    scores (its linear head on its embeddings) for every row. The scores carry what the
    embedding says about the class, without the wording or style that no other modality can
    predict (regressing the raw text embedding, an image encoder learned 12% of its variance and
    transferred at 0.30; the class scores, see docs/decisions.md)."""
    rows = read_embeddings(features)
    with torch.no_grad():
        scores = model.head(torch.from_numpy(rows["embedding"]).to(
            next(model.parameters()).device)).cpu().numpy()
    return {**rows, "embedding": scores}


def _supervised(modality: str, samples: Path, cfg: FeaturesConfig, seed: int,
                meta: dict[str, Any], on_epoch: OnEpoch | None, device: torch.device,
                reuse: Path | None, on_progress: OnProgress | None) -> EncoderClassifier:
    """The modality's label-trained encoder: loaded from `reuse` (another output of this stage
    for the same samples, config and seed) when it has one, else trained. Either way the same
    weights: the training is seeded and depends on nothing else."""
    weights = reuse / f"encoder_{modality}.pt" if reuse is not None else None
    if weights is None or not weights.exists():
        return train_encoder(modality, samples, cfg, seed, meta, on_epoch, device, on_progress)
    model = EncoderClassifier(modality, cfg, meta, len(meta["class_names"]))
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.to(device).eval()


def extract_labelled(modality: str, samples: Path, cfg: FeaturesConfig, seed: int,
                     out_dir: Path, file_meta: dict[str, Any], on_epoch: OnEpoch | None = None,
                     device: torch.device | str = "cpu", reuse: Path | None = None,
                     on_progress: OnProgress | None = None, map_parts: MapParts | None = None,
                     part_rows: int = PART_ROWS, batch_cache: Path | None = None,
                     ) -> tuple[dict[str, float], dict[str, Any]]:
    """An encoder trained with labels: writes its embeddings and weights; returns its own
    head's accuracies and its class scores per row (what a label-free encoder learns from)."""
    meta = read_metadata(samples / "train.parquet")
    model = _supervised(modality, samples, cfg, seed, meta, on_epoch, resolve_device(device),
                        reuse, on_progress)
    features = embed_splits(model, samples, out_dir, meta, cfg,
                            {**file_meta, "modality": modality, "learned_from": LABELS,
                             "dim": model.encoder.dim}, map_parts or run_inline(out_dir),
                            part_rows, batch_cache=batch_cache,
                            out_of_fold=write_out_of_fold(model, samples, meta, out_dir))
    teacher = teacher_scores(model, features)
    return split_accuracies(teacher), teacher


def extract_label_free(modality: str, samples: Path, teacher: dict[str, Any], anchor: str,
                       cfg: FeaturesConfig, seed: int, out_dir: Path, file_meta: dict[str, Any],
                       on_epoch: OnEpoch | None = None, device: torch.device | str = "cpu",
                       on_progress: OnProgress | None = None, map_parts: MapParts | None = None,
                       part_rows: int = PART_ROWS, batch_cache: Path | None = None,
                       ) -> dict[str, float]:
    """An encoder trained from the pairs alone (B side): reads no label from `samples`, writes
    its embeddings (null label) and weights; returns its val pair loss."""
    meta = read_metadata(samples / "train.parquet")
    model = train_paired_encoder(modality, samples, teacher, cfg, seed, meta, on_epoch,
                                 resolve_device(device), on_progress)
    embed_splits(model, samples, out_dir, meta, cfg,
                 {**file_meta, "modality": modality, "learned_from": f"pairs:{anchor}",
                  "dim": model.encoder.dim}, map_parts or run_inline(out_dir), part_rows,
                 with_labels=False, batch_cache=batch_cache)
    return {"val_pair_loss": pair_loss_on(model, samples, "val", teacher, meta, cfg)}


def run_feature_extraction(samples: Path, cfg: FeaturesConfig, seed: int, out_dir: Path,
                           file_meta: dict[str, Any], on_epoch: OnEpoch | None = None,
                           device: str = "cpu", space: str = JOINT,
                           reuse: Path | None = None, on_progress: OnProgress | None = None,
                           map_parts: MapParts | None = None, part_rows: int = PART_ROWS,
                           batch_cache: Path | None = None) -> dict[str, Any]:
    """Encoders for every modality the samples have, each learning as the space's recipe says
    (`mmcore.learning_plan.encoder_recipe`): with labels, or label-free from the class scores
    the anchor's encoder gives the paired rows. Writes `<modality>.parquet/` and
    `encoder_<modality>.pt` (a state dict); embedding maps over the samples' row groups through
    `map_parts` (default: one after another, here). Batched data: encoders learn from the
    reference window, and `batch_cache` keeps each batch's embeddings across runs. Returns each
    labelled encoder's accuracies (its own linear head: a diagnostic) and each label-free one's
    val pair loss."""
    meta = read_metadata(samples / "train.parquet")
    recipe = encoder_recipe(space, meta["modalities"])
    results: dict[str, Any] = {}
    teachers: dict[str, dict[str, Any]] = {}
    # Labelled encoders first: a label-free one learns from their outputs.
    for modality in sorted(recipe, key=lambda m: (recipe[m] != LABELS, m)):
        if recipe[modality] == LABELS:
            results[modality], teachers[modality] = extract_labelled(
                modality, samples, cfg, seed, out_dir, file_meta, on_epoch, device, reuse,
                on_progress, map_parts, part_rows, batch_cache)
        else:
            anchor = recipe[modality].split(":")[1]
            results[modality] = extract_label_free(modality, samples, teachers[anchor], anchor,
                                                   cfg, seed, out_dir, file_meta, on_epoch,
                                                   device, on_progress, map_parts,
                                                   part_rows, batch_cache)
    return {"modalities": meta["modalities"], "scores": results,
            "class_names": meta["class_names"], "encoders": recipe,
            "labels_used": labelled(space, meta["modalities"])}
