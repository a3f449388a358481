"""The Model Registry, with meaning: every write to it goes through this module.

- Every version says what it is: tags (mode, train/test modalities, fusion, data digest, test
  accuracy, config digest, labels used, content digest) and a Markdown description.
- `@candidate` is the newest version trained with the project's default mode: trained and tested
  on every modality the data has (multimodal on image + text data).
- `@champion` is the version that serves. It moves when a candidate's test accuracy on the same
  test data (same data digest) is at least the champion's, or by an explicit `mmpipe promote`.
- Only the pipeline's own runs move aliases. Comparison cells, sweeps and other modes register
  versions (tagged with their role) but never move either alias.
- A training that produced the same chain (same weights, spec and code: same content digest) adds
  no version: the existing one is reused.

The pipeline calls `register_candidate` after training and `consider_for_champion` after testing
(the test accuracy is known only then), with the stages' refs; both also run on cache hits, so a
cached default run still points `@candidate` at its model. `register_version` and
`decide_champion` are the same with explicit arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mmcore.config import PipelineConfig
from tasks.tracking.runs import tracking_uri as store_uri
from tasks.tracking.runs import using_tracking_uri

if TYPE_CHECKING:  # annotations only: tracking never imports the engine at run time
    from tasks.engine.keys import StageRef

CANDIDATE = "candidate"
CHAMPION = "champion"
# Who registers: the pipeline's own run, a comparison cell, a sweep trial.
Role = Literal["pipeline", "comparison", "sweep"]
ROLES: tuple[str, ...] = ("pipeline", "comparison", "sweep")


@dataclass(frozen=True)
class VersionFacts:
    """What a model version is, as tags."""

    mode: str
    train_modalities: list[str]
    test_modalities: list[str]
    fusion: str  # the multimodal operator, or "none"
    data_digest: str  # identifies the data, hence the test split, the model was scored on
    config_digest: str
    config_name: str
    labels_used: list[str]
    content_digest: str  # the chain's weights + spec + the code it ships
    role: str
    default_mode: bool
    run_id: str

    def tags(self) -> dict[str, str]:
        return {
            "mode": self.mode,
            "train_modalities": "+".join(self.train_modalities),
            "test_modalities": "+".join(self.test_modalities),
            "fusion": self.fusion,
            "data.digest": self.data_digest,
            "config.digest": self.config_digest,
            "config.name": self.config_name,
            "labels_used": "+".join(self.labels_used),
            "content.digest": self.content_digest,
            "registered_by": self.role,
            "default_mode": str(self.default_mode).lower(),
        }


def is_default_mode(plan: dict, data_modalities: list[str]) -> bool:
    """The project's default mode: trained and tested on every modality the data has (the
    multimodal default; on a one-modality dataset, that modality)."""
    every = set(data_modalities)
    return set(plan["train"]) == every and set(plan["test"]) == every


def labels_used(plan: dict, data_modalities: list[str]) -> list[str]:
    """Whose labels the whole chain learned from. A plan that records its own `labels_used`
    wins; otherwise every modality's: each encoder and the shared space train on labels."""
    return sorted(plan.get("labels_used") or data_modalities)


@dataclass(frozen=True)
class Registration:
    version: str
    created: bool  # False: a version with the same content digest already existed
    candidate: bool  # whether `@candidate` points at it now


def register_version(tracking_uri: str, name: str, model_uri: str, facts: VersionFacts,
                     ) -> Registration:
    """Register the logged model (or reuse the version with the same content digest) and, for the
    pipeline's own default-mode run, point `@candidate` at it."""
    client = MlflowClient(tracking_uri)
    existing = _version_with_digest(client, name, facts.content_digest)
    if existing is None:
        with using_tracking_uri(tracking_uri):
            created = mlflow.register_model(model_uri, name, tags=facts.tags())
        version, is_new = str(created.version), True
    else:
        version, is_new = str(existing.version), False
    moves_aliases = facts.role == "pipeline" and facts.default_mode
    if moves_aliases:
        client.set_registered_model_alias(name, CANDIDATE, version)
    if is_new:
        client.update_model_version(name, version, describe(client.get_model_version(name,
                                                                                      version)))
    return Registration(version, is_new, moves_aliases)


@dataclass(frozen=True)
class Decision:
    champion: str | None  # the version `@champion` points at afterwards
    moved: bool
    considered: bool  # False: a run whose role or mode never moves aliases
    reason: str


def decide_champion(tracking_uri: str, name: str, version: str, test_accuracy: float,
                    role: str) -> Decision:
    """Record the version's test accuracy; move `@champion` to it when it is the candidate of a
    pipeline run and at least as accurate as the champion on the same test data. The decision
    of a considered version is kept in its `champion.decision` tag."""
    client = MlflowClient(tracking_uri)
    client.set_model_version_tag(name, version, "test.accuracy", f"{test_accuracy:.6f}")
    decision = _decide(client, name, client.get_model_version(name, version), test_accuracy,
                       role)
    if decision.moved:
        _set_champion(client, name, version, "auto")
    if decision.considered:
        client.set_model_version_tag(name, version, "champion.decision", decision.reason)
    client.update_model_version(name, version, describe(client.get_model_version(name,
                                                                                  version)))
    return decision


def _decide(client: MlflowClient, name: str, mv: ModelVersion, accuracy: float,
            role: str) -> Decision:
    champion = _alias(client, name, CHAMPION)
    current = str(champion.version) if champion else None

    def keep(reason: str, considered: bool = True) -> Decision:
        return Decision(current, False, considered, reason)

    def move(reason: str) -> Decision:
        return Decision(str(mv.version), True, True, reason)

    if role != "pipeline" or mv.tags.get("default_mode") != "true":
        return keep(f"not considered: a {role} run of mode {mv.tags.get('mode')} never moves "
                    "aliases", considered=False)
    candidate = _alias(client, name, CANDIDATE)
    if candidate is None or str(candidate.version) != str(mv.version):
        return keep("not considered: no longer the candidate", considered=False)
    if champion is None:
        return move("promoted: first champion")
    if current == str(mv.version):
        return keep("already champion")
    theirs, ours = champion.tags.get("data.digest"), mv.tags.get("data.digest")
    if theirs != ours:
        return keep(f"kept v{current}: different test data (champion {theirs}, this {ours}); "
                    f"`mmpipe promote {mv.version}` to switch")
    if "test.accuracy" not in champion.tags:
        return keep(f"kept v{current}: the champion has no test accuracy")
    best = float(champion.tags["test.accuracy"])
    if accuracy >= best:
        return move(f"promoted: test accuracy {accuracy:.4f} >= {best:.4f} of v{current}")
    return keep(f"kept v{current}: test accuracy {accuracy:.4f} < {best:.4f}")


def promote(tracking_uri: str, name: str, version: str) -> ModelVersion:
    """Point `@champion` at `version` by hand (`mmpipe promote VERSION`)."""
    client = MlflowClient(tracking_uri)
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise ValueError(f"model {name!r} has no version {version!r}") from None
    _set_champion(client, name, version, "manual")
    client.update_model_version(name, version, describe(client.get_model_version(name,
                                                                                 version)))
    return client.get_model_version(name, version)


def _set_champion(client: MlflowClient, name: str, version: str, how: str) -> None:
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "champion.promoted", how)


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _version_with_digest(client: MlflowClient, name: str, digest: str) -> ModelVersion | None:
    found = client.search_model_versions(
        f"name = '{name}' and tags.`content.digest` = '{digest}'")
    return min(found, key=lambda mv: int(mv.version)) if found else None


def describe(mv: ModelVersion) -> str:
    """The version's Markdown description, from its tags."""
    t = mv.tags
    accuracy = t.get("test.accuracy")
    fusion = f" · {t['fusion']} fusion" if t.get("fusion", "none") != "none" else ""
    lines = [
        f"**{t.get('mode', '?')}{fusion}**: trained on {t.get('train_modalities', '?')}, "
        f"tested on {t.get('test_modalities', '?')}.",
        "",
        "| | |",
        "|---|---|",
        f"| test accuracy | {float(accuracy):.4f} |" if accuracy else "| test accuracy | "
                                                                      "not tested yet |",
        f"| data digest | `{t.get('data.digest', '?')}` |",
        f"| labels used | {t.get('labels_used', '?')} |",
        f"| config | `{t.get('config.name', '?')}` (digest `{t.get('config.digest', '?')}`) |",
        f"| content digest | `{t.get('content.digest', '?')}` (weights + spec + code) |",
        f"| registered by | {t.get('registered_by', '?')} run |",
        f"| trained in run | `{mv.run_id}` |",
    ]
    if "champion.decision" in t:
        lines += ["", f"Champion decision: {t['champion.decision']}."]
    if "champion.promoted" in t:
        lines += ["", f"Promoted to `@champion` ({t['champion.promoted']})."]
    return "\n".join(lines)


def facts_for(cfg: PipelineConfig, refs: dict[str, StageRef], role: str) -> VersionFacts:
    """What the model trained in this pipeline run is, from its stages' refs."""
    if role not in ROLES:
        raise ValueError(f"registry role must be one of {ROLES}; got {role!r}")
    summary = refs["training"].summary
    plan, modalities = summary["plan"], summary["modalities"]
    return VersionFacts(
        mode=plan["mode"], train_modalities=sorted(plan["train"]),
        test_modalities=sorted(plan["test"]),
        fusion=cfg.training.fusion if plan["mode"] == "multimodal" else "none",
        data_digest=refs["preprocessing"].key, config_digest=cfg.digest(),
        config_name=cfg.name, labels_used=labels_used(plan, modalities),
        content_digest=summary["content_digest"], role=role,
        default_mode=is_default_mode(plan, modalities), run_id=refs["training"].run_id or "")


def register_candidate(cfg: PipelineConfig, refs: dict[str, StageRef], role: str,
                       ) -> Registration | None:
    """After training: the run's model as a registered version (None when the config turns
    registration off)."""
    if not cfg.training.register_model:
        return None
    summary = refs["training"].summary
    return register_version(store_uri(cfg.run_dir), cfg.training.model_name,
                            summary["model_uri"], facts_for(cfg, refs, role))


def consider_for_champion(cfg: PipelineConfig, refs: dict[str, StageRef], role: str,
                          ) -> Decision | None:
    """After testing: record the test accuracy on the run's version and decide `@champion`."""
    if not cfg.training.register_model:
        return None
    uri, name = store_uri(cfg.run_dir), cfg.training.model_name
    mv = _version_with_digest(MlflowClient(uri), name,
                              refs["training"].summary["content_digest"])
    if mv is None:
        raise ValueError(f"no version of {name!r} holds this run's model; register it first")
    metrics = refs["testing"].summary["metrics"]
    if "test.accuracy" not in mv.tags:  # first tested: the logged model gets its real scores
        _log_model_metrics(MlflowClient(uri), mv, {**refs["training"].summary["metrics"],
                                                   **metrics})
    return decide_champion(uri, name, str(mv.version), metrics["test.accuracy"], role)


def _log_model_metrics(client: MlflowClient, mv: ModelVersion,
                       metrics: dict[str, float]) -> None:
    """The final and test metrics on the logged model's page (not only per-epoch curves)."""
    if not getattr(mv, "model_id", None) or not mv.run_id:
        return
    for key, value in metrics.items():
        if isinstance(value, int | float):
            client.log_metric(mv.run_id, key, float(value), model_id=mv.model_id)
