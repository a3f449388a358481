"""Typed pipeline configuration: one section per stage, loaded from YAML plus `key=value` overrides.

Unknown keys and values of the wrong type are errors (pydantic, `extra="forbid"`), so a typo in a
config never silently runs the defaults.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# `training.fusion` accepts exactly the names of mmcore/fusion/operators.py (a test keeps the two
# equal). Listed, not imported: every stage imports the config, and its code fingerprint would
# then cover every fusion operator's code (tasks/engine/fingerprint.py).
FUSION_NAMES = ("late", "concat", "sum", "mean", "gmu", "tensor", "lmf", "attention")

STAGES = ("preprocessing", "feature_extraction", "shared_space", "training", "testing")
# Old names that still load, with a warning: the stage that learns the shared space was called
# "fusion", which is also the word for the operators that combine modalities (`training.fusion`).
RENAMED = {"fusion": "shared_space"}
# Which config section each stage reads; its cache key covers exactly that section (plus `seed`).
STAGE_SECTION = {
    "preprocessing": "data",
    "feature_extraction": "features",
    "shared_space": "shared_space",
    "training": "training",
    "testing": "testing",
}


# Settings of a section that change none of its stage's output, so not its cache key either:
# whether and under which name the trained model is registered (the registry's business).
NOT_IN_KEY = {"training": ("model_name", "register_model")}


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says which key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TextNoise(_Section):
    """Shares of generated texts that are deliberately imperfect (built-in/generated texts only)."""

    uninformative: float = Field(0.15, ge=0, le=1)  # "a scanned digit"
    ambiguous: float = Field(0.15, ge=0, le=1)  # "a 1 or a 7"
    wrong: float = Field(0.10, ge=0, le=1)  # names another digit

    @model_validator(mode="after")
    def _total(self) -> TextNoise:
        if self.uninformative + self.ambiguous + self.wrong > 1:
            raise ValueError("text_noise shares add up to more than 1")
        return self


class ImageNoise(_Section):
    """Corruption of the built-in digits' images, so that images alone are not near-perfect.

    Applied once to the raw [0, 1] pixels when the source is opened (the same on both reads of
    preprocessing), seeded by `seed`; definitions in `mmcore.robustness`.
    """

    # Defaults measured over 5 seeds (docs/decisions.md): the image encoder alone ~0.82 instead
    # of ~0.99, so that fusing the texts has something to win.
    gaussian: float = Field(0.2, ge=0, le=1)  # std of added pixel noise, [0, 1] pixel scale
    occlusion: float = Field(0.2, ge=0, le=1)  # share of each image hidden by one patch


class SplitConfig(_Section):
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.20, gt=0, lt=1)

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError("split.val + split.test leave no rows for train")
        return self


class PairSide(_Section):
    source: Literal["digits", "mnist", "imdb", "manifest"]
    path: str | None = None


class PairConfig(_Section):
    """Two single-modality datasets paired by class (the MNIST-SVHN construction)."""

    images: PairSide
    texts: PairSide
    # text-side label -> image-side label; pairs are built per image-side class.
    label_map: dict[int, int] | None = None


class DataConfig(_Section):
    source: Literal["digits", "mnist", "imdb", "manifest", "paired"] = "digits"
    path: str | None = None  # folder (mnist, imdb) or file (manifest)
    text: Literal["source", "generated", "none"] = "source"  # where the text modality comes from
    text_noise: TextNoise = TextNoise()
    image_noise: ImageNoise = ImageNoise()  # built-in digits only
    split: SplitConfig = SplitConfig()
    on_bad_row: Literal["skip", "fail"] = "skip"
    encoding_errors: Literal["replace", "fail"] = "replace"
    # longer texts are cut; "auto": a high percentile of the train texts' lengths, within
    # bounds (mmcore/data/tokenizer.py:auto_max_tokens); the quality report says what was cut
    max_text_tokens: int | Literal["auto"] = "auto"
    lowercase: bool = True
    min_token_count: int = Field(1, ge=1)
    image_size: int | None = Field(None, ge=4)  # resize manifest images to this square size
    image_mode: Literal["L", "RGB"] = "L"
    classes: list[str] | None = None  # declared class names (manifest); others are bad rows
    limit: int | None = Field(None, ge=1)  # keep at most this many rows (quick runs)
    pair: PairConfig | None = None
    batch_rows: int = Field(8192, ge=1)  # rows per streamed batch / Parquet row group
    # `path` holds batch subfolders `<path>/<batch>/`, ingested incrementally (docs/batches.md)
    batched: bool = False
    # the first N batches: the window the vocabulary, normalisation and encoders are fitted on
    reference_batches: int = Field(1, ge=1)

    @field_validator("max_text_tokens")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return value

    @model_validator(mode="after")
    def _batches_need_a_path(self) -> DataConfig:
        if self.batched and self.source in ("digits", "paired"):
            raise ValueError(f"data.batched needs a source that reads data.path (mnist, imdb, "
                             f"manifest), not {self.source}; `mmpipe data batches` writes the "
                             "digits as manifest batches")
        return self


class FeaturesConfig(_Section):
    image_dim: int = Field(64, ge=2)
    text_dim: int = Field(64, ge=2)
    image_channels: int = Field(32, ge=1)  # width of the first conv block
    # 3x3 convolutions per block; auto: two in all (docs/decisions.md)
    image_convs: int | Literal["auto"] = "auto"
    # training-time random shift of each image by up to this many pixels (0: none)
    image_shift: int = Field(0, ge=0)
    # the image encoder's dropout; auto: none from 28x28 up (a few epochs over many rows),
    # `dropout` below (the 8x8 digits); docs/decisions.md, issue 19
    image_dropout: float | Literal["auto"] = "auto"
    # nbbag (the default: n-gram embeddings weighted by Naive-Bayes ratios; docs/decisions.md),
    # gru (a bidirectional RNN), cnn (1-D convolutions, max over time), bag (n-gram embeddings),
    # nbsvm (NB-LR: its embedding is the class scores; text_dim 2 for two classes)
    text_encoder: Literal["gru", "cnn", "bag", "nbbag", "nbsvm"] = "nbbag"
    text_embedding: int = Field(32, ge=2)
    text_hidden: int = Field(64, ge=2)
    # "auto": enough epochs for about `image_auto_steps` (images) or `auto_steps` (text)
    # optimizer steps, within [3, 20]
    image_epochs: int | Literal["auto"] = Field("auto")
    text_epochs: int | Literal["auto"] = Field("auto")
    auto_steps: int = Field(1500, ge=1)
    # 28x28 images need more steps than text to converge (docs/decisions.md, issue 19 item 5)
    image_auto_steps: int = Field(2300, ge=1)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    patience: int | None = Field(None, ge=1)  # stop after this many epochs without a better val
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    dropout: float = Field(0.25, ge=0, lt=1)
    # How a label-free encoder learns from the labelled one's class scores of the paired row:
    # soft (their softened probabilities, weighted by confidence) or l2 (regress the scores);
    # docs/decisions.md, "Cross-modal distillation"
    distill: Literal["soft", "l2"] = "soft"
    distill_temperature: float = Field(2.0, gt=0)

    @field_validator("image_dropout")
    @classmethod
    def _a_share(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0 <= value < 1:
            raise ValueError("must be in [0, 1) or 'auto'")
        return value

    @field_validator("image_epochs", "text_epochs", "image_convs")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return value

    def resolve_epochs(self, epochs: int | str, steps_per_epoch: int, budget: int) -> int:
        """An epochs setting as a count: `auto` = ceil(budget / steps_per_epoch) for the
        modality's step budget, kept within [3, 20], so large data trains few epochs and small
        data enough steps."""
        if epochs != "auto":
            return int(epochs)
        return min(max(-(-budget // max(steps_per_epoch, 1)), 3), 20)


class SharedSpaceConfig(_Section):
    """The shared-space stage: one space for every modality, learned with an alignment loss."""

    shared_dim: int = Field(32, ge=2)
    loss: Literal["l2", "infonce"] = "l2"
    # The L2 term alone is minimised by mapping everything to one point; a class term keeps the
    # space discriminative (see docs/decisions.md).
    cls_weight: float = Field(20.0, ge=0)
    temperature: float = Field(0.1, gt=0)
    epochs: int = Field(30, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(128, ge=1)


class TrainingConfig(_Section):
    mode: Literal["multimodal", "unimodal", "cross_modal"] = "multimodal"
    modality: Literal["image", "text"] = "image"  # unimodal: which one; cross_modal: train on it
    # multimodal fusion operator (mmcore/fusion/operators.py); late = product of experts over the
    # shared space, the default (docs/decisions.md)
    fusion: Literal[FUSION_NAMES] = "late"
    hidden: int = Field(64, ge=2)
    # Graceful fusion (docs/learning-modes.md; defaults from the `mmpipe tune` search in
    # docs/decisions.md, "Graceful fusion defaults"). With this probability per training row,
    # one modality is replaced by its missing embedding (zeros without one).
    modality_dropout: float = Field(0.27, ge=0, lt=1)
    # a learned stand-in for an absent modality and for a blank input (an empty image or text);
    # late fusion drops a blank modality's expert instead
    missing_embedding: bool = True
    # per modality, a learned prediction of how corrupted its input is (trained on the corruption
    # levels of `corruption_copies`), which moves its embedding towards the missing one (late
    # fusion: scales its expert down)
    confidence_gates: bool = True
    # corrupted copies of the train split added to it (one modality per row, a test-time
    # corruption of mmcore/robustness.py at a random level), embedded by the trained encoders
    corruption_copies: int = Field(3, ge=0, le=10)
    epochs: int = Field(20, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    # Train the classifier together with its encoders and projections, end to end from the raw
    # train samples (`mmcore/finetune.py`), not on frozen embeddings: those of the train split
    # are the ones its encoder memorised (docs/decisions.md, "Text encoder for reviews").
    # Labelled encoders only (not cross_modal); no corrupted copies, no batch window.
    finetune: bool = False
    model_name: str = "mmpipe-classifier"
    register_model: bool = True
    # batched data (docs/batches.md): train on every batch, or on the newest N ("last N")
    window: str = Field("all", pattern=r"^(all|last [1-9][0-9]*)$")

    @model_validator(mode="after")
    def _finetune_labelled(self) -> TrainingConfig:
        if self.finetune and self.mode == "cross_modal":
            raise ValueError("training.finetune=true cannot train cross_modal: its test side was "
                             "fitted label-free onto the train side's frozen space")
        return self

    def window_batches(self, batches: list[str]) -> list[str]:
        """The batches (names, in order) that `window` covers."""
        if self.window == "all":
            return list(batches)
        return list(batches)[-int(self.window.split()[1]):]


class TestingConfig(_Section):
    batch_size: int = Field(512, ge=1)
    # accuracy with each test modality corrupted at levels 0, 0.1, ..., 1 (mmcore/robustness.py)
    robustness: bool = True
    # rows of the test split the curves use at most (a fixed draw by sample id, the same for
    # every model; smaller splits whole; null: always whole): 11 levels x each corruption
    # re-embed them. 2,000 rows: a standard error of 0.7 points at 0.9 accuracy.
    robustness_rows: int | None = Field(2000, ge=1)


class DriftConfig(_Section):
    """Drift checks of a run's new rows against the champion's reference (docs/nightly.md). In
    no stage's cache key: they run after testing, against whichever version is champion."""

    enabled: bool = True
    alpha: float = Field(0.05, gt=0, lt=1)  # family-wise false-alarm rate per batch (Bonferroni)
    # MMD subsamples (rows of the reference / of the batch): bound the cost on large data
    max_reference: int = Field(2000, ge=10)
    max_batch: int = Field(2000, ge=10)


class GateConfig(_Section):
    """Champion against challenger on the same new rows: the challenger is promoted only when
    its accuracy there is at least `floor`, beats the champion's by at least `min_gain`, and
    McNemar's paired test says the difference is more than chance (p <= `alpha`; `alpha: 1`
    turns the test off). A champion whose accuracy on new rows is below `floor`, or more than
    `max_drop` below its accuracy when it was promoted (and significantly so, a one-sided
    binomial test at `alpha`), is reported as degraded."""

    floor: float = Field(0.0, ge=0, le=1)
    min_gain: float = Field(0.0, ge=-1, le=1)
    alpha: float = Field(0.05, gt=0, le=1)
    max_drop: float = Field(0.05, ge=0, le=1)
    # a samples table (another run's test.parquet) scored too, every night the same rows
    benchmark: str | None = None


class DaskConfig(_Section):
    """Where work that runs in parallel runs: the partitions of feature extraction's and
    testing's inference (and `mmpipe sweep`'s cells). In no stage's cache key: the outputs are
    the same bytes wherever they are computed (tests/test_partitions.py)."""

    address: str | None = None  # tcp://host:8786: an existing cluster; None: a LocalCluster
    # parts side by side: LocalCluster processes, or threads inline; None: one per core
    workers: int | None = Field(None, ge=1)
    # A stage's partitions: "inline" on threads of the flow's process; "dask" as one Prefect
    # task each on the cluster (a LocalCluster without `address`); "auto": on the cluster at
    # `address` from `min_rows` rows of the stage's input on, else inline (on one machine,
    # threads are as parallel as a LocalCluster, without its costs).
    partitions: Literal["auto", "inline", "dask"] = "auto"
    min_rows: int = Field(200_000, ge=0)


class PipelineConfig(_Section):
    name: str = "default"
    seed: int = 0
    run_dir: str = "runs"
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # auto: CUDA when torch sees one
    data: DataConfig = DataConfig()
    features: FeaturesConfig = FeaturesConfig()
    shared_space: SharedSpaceConfig = SharedSpaceConfig()
    training: TrainingConfig = TrainingConfig()
    testing: TestingConfig = TestingConfig()
    drift: DriftConfig = DriftConfig()
    gate: GateConfig = GateConfig()
    dask: DaskConfig = DaskConfig()

    def section(self, stage: str) -> dict[str, Any]:
        """The part of the config a stage depends on: its own section plus the seed, without
        the settings that change none of its output (`NOT_IN_KEY`)."""
        name = STAGE_SECTION[stage]
        section = getattr(self, name).model_dump(mode="json",
                                                 exclude=set(NOT_IN_KEY.get(name, ())))
        return {"seed": self.seed, "device": self.device, **section}

    def digest(self) -> str:
        # Where the outputs are stored and where parallel parts run change no output.
        return digest(self.model_dump(mode="json", exclude={"run_dir", "dask"}))

    def flat(self) -> dict[str, str]:
        """The whole resolved config as dotted keys (MLflow params)."""
        return flatten(self.model_dump(mode="json"))


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable object."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[leaf] = value


def renamed_key(dotted: str, where: str = "--set") -> str:
    """`fusion.loss` -> `shared_space.loss`, with a FutureWarning (shown to users by default);
    other keys unchanged."""
    section, dot, rest = dotted.partition(".")
    if section not in RENAMED:
        return dotted
    new = RENAMED[section]
    warnings.warn(f"{where}: config section '{section}' is now '{new}' ({new}{dot}{rest})",
                  FutureWarning, stacklevel=3)
    return f"{new}{dot}{rest}"


def _renamed_sections(tree: dict[str, Any], where: str) -> dict[str, Any]:
    """A config file's old section names under their new names (a warning says so); both names
    at once is an error, since one would silently win."""
    for old, new in RENAMED.items():
        if old in tree:
            if new in tree:
                raise ConfigError(f"{where}: sections '{old}' and '{new}' are the same section "
                                  f"(renamed); keep only '{new}'")
            tree = {(renamed_key(k, where) if k == old else k): v for k, v in tree.items()}
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                ) -> PipelineConfig:
    """Read a YAML config (or the defaults) and apply `key.sub=value` overrides (YAML values)."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from exc
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        tree.pop("sweep", None)  # what to sweep, not a setting (mmcore/experiments/grid.py)
        tree.pop("tune", None)  # what to search (mmcore/experiments/tuning.py)
        tree = _renamed_sections(tree, str(path))
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
        _set_dotted(tree, renamed_key(key.strip()), value)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{where}invalid config: {problems}") from None
