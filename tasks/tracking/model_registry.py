"""The Model Registry, with meaning: every write to it goes through this module.

- The registered model says what it is and what its aliases mean (`MODEL_DESCRIPTION`).
- Every version says what it is: a few tags a reviewer filters on (`VersionFacts.tags`: mode,
  fusion, registered by, test accuracy, and the data and content digests the champion decision
  and the reuse of versions compare) and a Markdown description with the rest (modalities,
  labels used, config, the run that trained it, the champion decision).
- `@candidate` is the newest version trained with the project's default mode: trained and tested
  on every modality the data has (multimodal on image + text data).
- `@champion` is the version that serves. It moves when a candidate passes the gate against it
  on the same new rows (`mmcore.nightly.gate`: floor, minimum gain, McNemar; scored by
  `tasks/tracking/nightly.py`), or by an explicit `mmpipe promote`.
- `@previous_champion` is the version `@champion` pointed at before it last moved;
  `mmpipe rollback` moves `@champion` back to it and records why.
- Only the pipeline's own runs move aliases. Comparison and sweep cells log their models as run
  artifacts and register nothing, unless asked (`mmpipe compare --register`: registered in their
  role, they never move either alias); nor does a pipeline run in another mode.
- A training that produced the same chain (same weights, spec and code: same content digest)
  adds no version: the existing one is reused.

The pipeline calls `register_candidate` after training and, through `tasks/tracking/nightly.py`
(which scores the gate first), `consider_for_champion` after testing (the test accuracy is known
only then), with the stages' refs; both also run on cache hits, so a cached default run still
points `@candidate` at its model. `register_version` and
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
from tasks.tracking.run_summary import run_link
from tasks.tracking.runs import tracking_uri as store_uri
from tasks.tracking.runs import using_tracking_uri

if TYPE_CHECKING:  # annotations only: tracking never imports the engine at run time
    from mmcore.nightly import GateResult
    from tasks.engine.keys import StageRef

CANDIDATE = "candidate"
CHAMPION = "champion"
PREVIOUS = "previous_champion"
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
        """The few a reviewer filters versions on, and those the registry's decisions read
        (`data.digest`, `content.digest`); the rest is in the description."""
        return {
            "mode": self.mode,
            "fusion": self.fusion,
            "registered_by": self.role,
            "data.digest": self.data_digest,
            "content.digest": self.content_digest,
        }

    def description(self, run_route: str) -> str:
        """What the version is, in Markdown: the part of its description that never changes
        (`run_route`: the UI route of the run that trained it)."""
        fusion = f" · {self.fusion} fusion" if self.fusion != "none" else ""
        rows = [
            ("labels used", "+".join(self.labels_used)),
            ("default mode", f"{'yes' if self.default_mode else 'no'} (trained and tested on "
                             "every modality of the data)"),
            ("data digest", f"`{self.data_digest}` (the data, hence the test split)"),
            ("config", f"`{self.config_name}` (digest `{self.config_digest}`)"),
            ("content digest", f"`{self.content_digest}` (weights + spec + code)"),
            ("registered by", f"{self.role} run"),
            ("trained in run", f"[{self.run_id}]({run_route})"),
        ]
        # Plain text first: the registry's versions table shows the description's start raw.
        return "\n".join([
            f"{self.mode}{fusion}: trained on {'+'.join(self.train_modalities)}, tested on "
            f"{'+'.join(self.test_modalities)}.", "", "| | |", "|---|---|",
            *(f"| {name}&emsp; | {value} |" for name, value in rows)])


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
    _describe_model(client, name)
    moves_aliases = facts.role == "pipeline" and facts.default_mode
    if moves_aliases:
        client.set_registered_model_alias(name, CANDIDATE, version)
    if is_new:
        client.update_model_version(name, version, describe(
            client.get_model_version(name, version), facts.description(_run_route(client,
                                                                                  facts.run_id))))
    return Registration(version, is_new, moves_aliases)


# The registered model's description: what it is, what its aliases mean, where versions come
# from and what their tags say.
MODEL_DESCRIPTION = """\
**The mmpipe classifier**: the whole inference chain as one MLflow pyfunc model, raw image
and/or text in, class probabilities out (one column per class). Each version is one training of
the pipeline (`mmpipe run`); its description says its mode, modalities, labels, config and run.

- **`@candidate`**: the newest version trained in the project's default mode (trained and tested
  on every modality of the data), by `mmpipe run`.
- **`@champion`**: the version that serves (`models:/{name}@champion`). It moves to a candidate
  that passes the gate against it on the same new rows (tags `gate/*`: Δ, McNemar p, rows
  compared), or by hand: `mmpipe promote VERSION`.
- **`@previous_champion`**: the champion before the last move; `mmpipe rollback` restores it.

Comparisons and sweeps log their cells' models with their runs and register none, unless run
with `--register`; versions they register never move an alias. Tags, to filter on: `mode`,
`fusion`, `registered_by`, `test.accuracy`, `data.digest`, `content.digest` (the same weights, spec
and code are never registered twice).
"""


def _describe_model(client: MlflowClient, name: str) -> None:
    text = MODEL_DESCRIPTION.replace("{name}", name)
    if (client.get_registered_model(name).description or "") != text:
        client.update_registered_model(name, description=text)


def _run_route(client: MlflowClient, run_id: str) -> str:
    """The UI route of a run (its experiment looked up), in the model-training view."""
    try:
        experiment = client.get_run(run_id).info.experiment_id
    except MlflowException:
        return f"#/runs/{run_id}"
    return run_link(experiment, run_id)


@dataclass(frozen=True)
class Decision:
    champion: str | None  # the version `@champion` points at afterwards
    moved: bool
    considered: bool  # False: a run whose role or mode never moves aliases
    reason: str


def decide_champion(tracking_uri: str, name: str, version: str, test_accuracy: float,
                    role: str, default_mode: bool, gate: GateResult | None = None) -> Decision:
    """Record the version's test accuracy; move `@champion` to it when it is the candidate of a
    pipeline run in the default mode and either there is no champion or it passed `gate`
    against the champion on the same rows. The decision of a considered version goes into its
    description."""
    client = MlflowClient(tracking_uri)
    client.set_model_version_tag(name, version, "test.accuracy", f"{test_accuracy:.6f}")
    mv = client.get_model_version(name, version)
    decision = _decide(client, name, mv, role, default_mode, gate)
    status = {"champion decision": decision.reason} if decision.considered else {}
    if decision.moved:
        _set_champion(client, name, version, f"{test_accuracy:.6f}")
        status["promoted to champion"] = "automatically, by this decision"
    _update_status(client, name, version, status)
    return decision


def _decide(client: MlflowClient, name: str, mv: ModelVersion, role: str, default_mode: bool,
            gate: GateResult | None) -> Decision:
    champion = _alias(client, name, CHAMPION)
    current = str(champion.version) if champion else None

    def keep(reason: str, considered: bool = True) -> Decision:
        return Decision(current, False, considered, reason)

    def move(reason: str) -> Decision:
        return Decision(str(mv.version), True, True, reason)

    if role != "pipeline" or not default_mode:
        return keep(f"not considered: a {role} run of mode {mv.tags.get('mode')} never moves "
                    "aliases", considered=False)
    candidate = _alias(client, name, CANDIDATE)
    if candidate is None or str(candidate.version) != str(mv.version):
        return keep("not considered: no longer the candidate", considered=False)
    if champion is None:
        return move("promoted: first champion")
    if current == str(mv.version):
        return keep("already champion")
    if gate is None:
        return keep(f"kept v{current}: not compared with it on the same rows; "
                    f"`mmpipe promote {mv.version}` to switch")
    verdict = f"on {gate.rows} rows, {gate.challenger_accuracy:.4f} vs {gate.champion_accuracy:.4f}"
    if gate.promote:
        return move(f"promoted over v{current} {verdict}: {gate.reason}")
    return keep(f"kept v{current} {verdict}: {gate.reason}")


def promote(tracking_uri: str, name: str, version: str) -> ModelVersion:
    """Point `@champion` at `version` by hand (`mmpipe promote VERSION`)."""
    client = MlflowClient(tracking_uri)
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise ValueError(f"model {name!r} has no version {version!r}") from None
    _set_champion(client, name, version)
    _update_status(client, name, version,
                   {"promoted to champion": "by hand (`mmpipe promote`)"})
    return client.get_model_version(name, version)


def _set_champion(client: MlflowClient, name: str, version: str,
                  accuracy: str | None = None) -> None:
    """Point `@champion` at `version`, keeping the one it leaves as `@previous_champion`, and
    record the accuracy it was promoted with (`champion.accuracy`: degradation is measured from
    it)."""
    old = _alias(client, name, CHAMPION)
    if old is not None and str(old.version) != str(version):
        client.set_registered_model_alias(name, PREVIOUS, str(old.version))
    client.set_registered_model_alias(name, CHAMPION, version)
    accuracy = accuracy or client.get_model_version(name, version).tags.get("test.accuracy")
    if accuracy:
        client.set_model_version_tag(name, version, "champion.accuracy", accuracy)


def rollback(tracking_uri: str, name: str, reason: str) -> tuple[str, str]:
    """`mmpipe rollback`: point `@champion` back at `@previous_champion` (which then names the
    version rolled back from), recording `reason` on both; (from, to) versions."""
    client = MlflowClient(tracking_uri)
    previous, current = _alias(client, name, PREVIOUS), _alias(client, name, CHAMPION)
    if previous is None or current is None:
        raise ValueError(f"model {name!r} has no @previous_champion to roll back to")
    _set_champion(client, name, str(previous.version))
    client.set_model_version_tag(name, str(current.version), "rollback.reason", reason)
    _update_status(client, name, str(current.version),
                   {"rolled back": f"to v{previous.version}: {reason}"})
    _update_status(client, name, str(previous.version),
                   {"promoted to champion": f"by rollback from v{current.version}: {reason}"})
    return str(current.version), str(previous.version)


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _version_with_digest(client: MlflowClient, name: str, digest: str) -> ModelVersion | None:
    found = client.search_model_versions(
        f"name = '{name}' and tags.`content.digest` = '{digest}'")
    return min(found, key=lambda mv: int(mv.version)) if found else None


# Where a version's description turns from what it is (fixed) to what became of it (updated).
STATUS = "**Status**"


def describe(mv: ModelVersion, facts: str | None = None, status: dict[str, str] | None = None,
             ) -> str:
    """The version's Markdown description: what it is (`facts`, else kept from its current
    description), then its status: the test accuracy (its tag) and, from `status` or kept, the
    champion decision and how it became champion."""
    old_facts, _, old_status = (mv.description or "").partition(f"\n\n{STATUS}\n")
    items = dict(line[2:].split(": ", 1) for line in old_status.splitlines()
                 if line.startswith("- ") and ": " in line)
    accuracy = mv.tags.get("test.accuracy")
    items["test accuracy"] = f"{float(accuracy):.4f}" if accuracy else "not tested yet"
    items |= status or {}
    order = ["test accuracy", *(k for k in items if k != "test accuracy")]
    return "\n".join([facts or old_facts, "", STATUS, "",
                      *(f"- {key}: {items[key]}" for key in order)])


def _update_status(client: MlflowClient, name: str, version: str,
                   status: dict[str, str]) -> None:
    mv = client.get_model_version(name, version)
    client.update_model_version(name, version, describe(mv, status=status))


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


def version_of(client: MlflowClient, name: str, content_digest: str) -> ModelVersion:
    """The version holding the model of that content digest; ValueError if none does."""
    mv = _version_with_digest(client, name, content_digest)
    if mv is None:
        raise ValueError(f"no version of {name!r} holds this run's model; register it first")
    return mv


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version `@champion` points at, if any."""
    return _alias(client, name, CHAMPION)


def default_mode_of(refs: dict[str, StageRef]) -> bool:
    """Whether the run's model was trained in the project's default mode."""
    summary = refs["training"].summary
    return is_default_mode(summary["plan"], summary["modalities"])


def consider_for_champion(cfg: PipelineConfig, refs: dict[str, StageRef], role: str,
                          gate: GateResult | None = None) -> Decision | None:
    """After testing: record the test accuracy on the run's version and decide `@champion`
    (`gate`: the run's version against the champion on the same new rows)."""
    if not cfg.training.register_model:
        return None
    uri, name = store_uri(cfg.run_dir), cfg.training.model_name
    mv = version_of(MlflowClient(uri), name, refs["training"].summary["content_digest"])
    metrics = refs["testing"].summary["metrics"]
    if "test.accuracy" not in mv.tags:  # first tested: the logged model gets its real scores
        _log_model_metrics(MlflowClient(uri), mv, {**refs["training"].summary["metrics"],
                                                   **metrics})
    return decide_champion(uri, name, str(mv.version), metrics["test.accuracy"], role,
                           default_mode_of(refs), gate)


def _log_model_metrics(client: MlflowClient, mv: ModelVersion,
                       metrics: dict[str, float]) -> None:
    """The final and test metrics on the logged model's page (not only per-epoch curves)."""
    if not getattr(mv, "model_id", None) or not mv.run_id:
        return
    for key, value in metrics.items():
        if isinstance(value, int | float):
            client.log_metric(mv.run_id, key, float(value), model_id=mv.model_id)
