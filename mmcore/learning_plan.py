"""Which labels each learning mode uses, and so which stage trains what (DESIGN.md, "Learning
modes"; docs/decisions.md, "Label-free cross-modal learning").

A mode is learned in one of two kinds of shared space:

- `joint`: both encoders trained with labels, both projections with the class term and the
  alignment loss. Multimodal learning, with any fusion operator.
- `anchored:A`: A's encoder, A's projection and the classifier are trained with labels on A's
  rows; B's encoder and projection learn only from the pairs, to land where A's paired row lands.
  Unimodal A (tested on A) and cross-modal A -> B (tested on B) share it; nothing of B touches A.

The space is a function of the training config alone (`space_of`), so every stage's cache key
can carry it and `mmpipe status` still answers without running anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mmcore.config import TrainingConfig

JOINT = "joint"
LABELS = "labels"  # an encoder trained with the label column


def space_of(cfg: TrainingConfig) -> str:
    """`joint` for multimodal learning, `anchored:<modality>` for unimodal and cross-modal."""
    return JOINT if cfg.mode == "multimodal" else f"anchored:{cfg.modality}"


def anchor_of(space: str) -> str | None:
    """The labelled modality of an anchored space, None for the joint space."""
    return None if space == JOINT else space.removeprefix("anchored:")


def encoder_recipe(space: str, modalities: list[str]) -> dict[str, str]:
    """How each modality's encoder learns: `labels`, or `pairs:<A>` (from A's paired rows).

    In the joint space, or with one modality, every encoder learns with labels."""
    anchor = anchor_of(space)
    if anchor is None or len(modalities) == 1:
        return {m: LABELS for m in modalities}
    if anchor not in modalities:
        raise ValueError(f"training.modality={anchor} but the data has only {modalities}")
    return {m: LABELS if m == anchor else f"pairs:{anchor}" for m in modalities}


def labelled(space: str, modalities: list[str]) -> list[str]:
    """The modalities whose rows any step of this space reads labels with, sorted."""
    return sorted(m for m, how in encoder_recipe(space, modalities).items() if how == LABELS)


@dataclass(frozen=True)
class LearningPlan:
    """What a learning mode trains on, tests on, and which labels it uses."""

    mode: str  # unimodal | multimodal | cross_modal (after fallbacks for one-modality data)
    train: list[str]
    test: list[str]
    space: str
    labels_used: list[str]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def plan_for(cfg: TrainingConfig, modalities: list[str]) -> LearningPlan:
    """The plan of `cfg` on data with `modalities`: which modalities are trained and tested on.

    A one-modality dataset learns multimodal as unimodal; cross-modal needs two modalities."""
    space = space_of(cfg)
    if cfg.mode == "multimodal":
        mode = "multimodal" if len(modalities) > 1 else "unimodal"
        both = sorted(modalities)
        return LearningPlan(mode, both, both, space, labelled(space, modalities))
    if cfg.modality not in modalities:
        raise ValueError(f"training.modality={cfg.modality} but the data has only {modalities}")
    used = labelled(space, modalities)
    if cfg.mode == "cross_modal":
        others = [m for m in modalities if m != cfg.modality]
        if not others:
            raise ValueError("cross_modal learning needs two modalities")
        return LearningPlan("cross_modal", [cfg.modality], [others[0]], space, used)
    return LearningPlan("unimodal", [cfg.modality], [cfg.modality], space, used)


def mode_label(mode: str, train: Sequence[str], test: Sequence[str],
               fusion: str | None = None) -> str:
    """How every screen names a learning mode (MLflow and Prefect run names, the comparison's
    tables, plot legends, the terminal): `multimodal late · image+text`, `unimodal · text`,
    `cross_modal · image->text` (ASCII arrow: Prefect's run graph draws labels in an ASCII font)."""
    trained, tested = "+".join(train), "+".join(test)
    if mode == "multimodal":
        return f"multimodal {fusion} · {trained}" if fusion else f"multimodal · {trained}"
    if mode == "cross_modal":
        return f"cross_modal · {trained}->{tested}"
    return f"{mode} · {trained}"


def planned_label(cfg: TrainingConfig, modalities: Sequence[str] = ("image", "text")) -> str:
    """`mode_label` of a training config before its data is read (a Prefect flow run's name,
    given when the run starts): the plan on data with `modalities`, by default both."""
    try:
        plan = plan_for(cfg, list(modalities))
    except ValueError:
        return cfg.mode
    return mode_label(plan.mode, plan.train, plan.test,
                      cfg.fusion if plan.mode == "multimodal" else None)
