"""After testing, what a pipeline run owes someone who owns a nightly retraining job
(docs/nightly.md): drift of the new rows against the champion's reference, champion against
challenger on the same new rows, the registry decision, and the events that alert on them.

- New rows: the test rows of the batches the run ingested as new (docs/batches.md); without
  batch folders, the run's whole test split. Unlabelled rows get the drift checks and the
  champion's estimated accuracy, not the gate.
- Reference: the champion's profile on its validation split, stored beside the champion version
  (`drift/reference_profile.npz` and `drift/temperature.json` on the run that trained it) when
  it is promoted, so every later night compares with the same rows.
- MLflow: metrics `drift/<test>.p_value` (and `.statistic`, `drift/estimated_accuracy`, `gate/*`)
  on the parent run with step = the newest new batch's index, or without batches the night's
  ordinal (the registered model's `mmpipe.nights`), so the charts show the nights side by side;
  the report as `drift/report.json` + `drift/report.png`;
  the parent's tag `mmpipe.drift` = `none` | `detected`; the decision as the challenger's tags
  `gate/*`; a degraded champion as its tag `gate/degraded`.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from mmcore.config import PipelineConfig
from mmcore.drift import DriftReport, Profile, check_batch, load_profile, plot_report, save_profile
from tasks.tracking import alerts, model_registry, runs
from tasks.tracking.runs import tracking_uri as store_uri
from tasks.tracking.runs import using_tracking_uri

if TYPE_CHECKING:
    from mmcore.inference import InferenceChain
    from mmcore.nightly import GateResult, Rows
    from tasks.engine.keys import StageRef

REFERENCE = "drift/reference_profile.npz"
TEMPERATURE = "drift/temperature.json"
DRIFT_TAG = "mmpipe.drift"
NIGHTS_TAG = "mmpipe.nights"  # on the registered model: how many nights were checked


@dataclass
class Night:
    """What one run found and decided, for the summaries and the return value."""

    new_rows: int
    data_digest: str
    labelled: bool = True  # False: labels not there yet, so drift and an estimate, no gate
    step: int = 0  # the newest new batch's index, else the night's ordinal
    drift: dict[str, Any] | None = None  # DriftReport.to_dict()
    gate: dict[str, Any] | None = None  # GateResult.to_dict()
    decision: str = ""
    events: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """What was new, what drifted, what was decided: a section of the run's summaries."""
        lines = ["## This night", "",
                 f"- new rows: {self.new_rows} test rows (data `{self.data_digest}`), night "
                 f"{self.step}"]
        if self.drift is None:
            lines.append("- drift: not checked (no champion yet, or `drift.enabled: false`)")
        else:
            flagged = [t for t in self.drift["tests"] if t["detected"]]
            verdict = ("**drift detected** in " + ", ".join(
                f"{t['name']} (p {t['p_value']:.3g} <= {t['threshold']:.3g})" for t in flagged)
                if flagged else f"none of {len(self.drift['tests'])} tests flagged")
            lines.append(f"- drift: {verdict} (alpha {self.drift['alpha']:g}, Bonferroni)")
            if self.drift.get("estimated_accuracy") is not None:
                lines.append(f"- champion accuracy estimated from confidence alone: "
                             f"{self.drift['estimated_accuracy']:.4f} (an estimate)")
        if not self.labelled:
            lines.append("- gate: not run (the new rows have no labels yet)")
        if self.gate:
            g = self.gate
            lines.append(f"- gate on {g['rows']} rows: challenger {g['challenger_accuracy']:.4f}"
                         f", champion {g['champion_accuracy']:.4f}, Δ {g['delta']:+.4f}, "
                         f"McNemar p {g['p_value']:.4g}")
            if g["champion_degraded"]:
                lines.append(f"- **champion degraded**: {g['degraded_reason']}")
        lines.append(f"- decision: {self.decision}")
        if self.events:
            lines.append(f"- alerts sent: {', '.join(self.events)}")
        return "\n".join(lines)


def load_chain(client: MlflowClient, name: str, version: str) -> InferenceChain:
    """A registered version's inference chain, from its logged model's `chain` artifact."""
    from mmcore.inference import InferenceChain

    with tempfile.TemporaryDirectory() as tmp, using_tracking_uri(client.tracking_uri):
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}",
                                                          dst_path=tmp))
        found = sorted(folder.rglob("chain.json"))
        if not found:
            raise ValueError(f"{name} v{version}: its model holds no chain.json")
        return InferenceChain.load(found[0].parent)


def store_reference(client: MlflowClient, mv: ModelVersion, reference: Profile,
                    temperature: float) -> None:
    """The champion's reference profile and its calibration temperature beside it: artifacts of
    the run that trained it (machine state, not version tags a reviewer reads)."""
    with tempfile.TemporaryDirectory() as tmp:
        profile = save_profile(reference, Path(tmp) / Path(REFERENCE).name)
        calibration = Path(tmp) / Path(TEMPERATURE).name
        calibration.write_text(json.dumps({"temperature": temperature}))
        for path in (profile, calibration):
            client.log_artifact(mv.run_id, str(path), str(Path(REFERENCE).parent))


def load_reference(client: MlflowClient, mv: ModelVersion) -> tuple[Profile, float] | None:
    """The reference stored beside `mv`, or None when it has none (promoted before drift
    checks, or by hand)."""
    stored = {a.path for a in client.list_artifacts(mv.run_id, str(Path(REFERENCE).parent))}
    if not {REFERENCE, TEMPERATURE} <= stored:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        profile = load_profile(client.download_artifacts(mv.run_id, REFERENCE, tmp))
        calibration = Path(client.download_artifacts(mv.run_id, TEMPERATURE, tmp))
        return profile, float(json.loads(calibration.read_text())["temperature"])


def _next_night(client: MlflowClient, name: str) -> int:
    """The ordinal of this night (1, 2, ...): the step of its drift and gate metrics."""
    done = int(client.get_registered_model(name).tags.get(NIGHTS_TAG, "0"))
    client.set_registered_model_tag(name, NIGHTS_TAG, str(done + 1))
    return done + 1


def check_drift(cfg: PipelineConfig, parent: str, chain: InferenceChain, rows: Rows,
                reference: Profile, temperature: float, seed: int, step: int,
                ) -> DriftReport:
    """Profile the new rows with the champion's chain and temperature, test them against its
    reference, and log the report on the parent run."""
    from mmcore.nightly import drift_profile

    batch, _ = drift_profile(chain, rows, temperature)
    report = check_batch(reference, batch, alpha=cfg.drift.alpha, seed=seed,
                         max_reference=cfg.drift.max_reference, max_batch=cfg.drift.max_batch)
    metrics = {f"drift/{t.result.name}.p_value": t.result.p_value for t in report.tests}
    metrics |= {f"drift/{t.result.name}.statistic": t.result.statistic for t in report.tests}
    metrics["drift/detected_tests"] = len(report.detected)
    if report.estimated_accuracy is not None:
        metrics["drift/estimated_accuracy"] = report.estimated_accuracy
    runs.log_metrics(cfg, parent, metrics, step=step)
    client = runs.client_for(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(parent, str(report.save_json(Path(tmp) / "report.json")), "drift")
        client.log_artifact(parent, str(plot_report(report, Path(tmp) / "report.png")), "drift")
    client.set_tag(parent, DRIFT_TAG, "detected" if report.drifted else "none")
    return report


def _gate_rows(cfg: PipelineConfig, rows: Rows) -> list[Rows]:
    """The rows both models are scored on: the new rows, plus the fixed benchmark if set."""
    from mmcore.nightly import read_rows

    return [rows, *([read_rows(cfg.gate.benchmark)] if cfg.gate.benchmark else [])]


def compare(cfg: PipelineConfig, champion: InferenceChain, challenger: InferenceChain,
            champion_mv: ModelVersion, rows: Rows) -> GateResult:
    """Champion and challenger scored on the same rows, through the gate."""
    import numpy as np

    from mmcore.nightly import correct, gate

    sets = _gate_rows(cfg, rows)
    ours = np.concatenate([correct(champion, r) for r in sets])
    theirs = np.concatenate([correct(challenger, r) for r in sets])
    promoted_at = champion_mv.tags.get("champion.accuracy")
    return gate(ours, theirs, cfg.gate, float(promoted_at) if promoted_at else None)


def _record_gate(client: MlflowClient, cfg: PipelineConfig, parent: str, name: str,
                 challenger: str | None, champion: str, result: GateResult, decision: str,
                 digest: str, step: int) -> None:
    """The gate's figures as the challenger's version tags and the parent's metrics; a degraded
    champion as its own tag. `challenger` None: the run's model is the champion (only its
    degradation is recorded)."""
    tags = {"gate/decision": "promote" if result.promote else "keep",
            "gate/delta": f"{result.delta:+.6f}", "gate/p_value": f"{result.p_value:.6g}",
            "gate/rows": str(result.rows), "gate/champion": champion,
            "gate/champion_accuracy": f"{result.champion_accuracy:.6f}",
            "gate/challenger_accuracy": f"{result.challenger_accuracy:.6f}",
            "gate/data_digest": digest, "gate/reason": decision}
    for key, value in tags.items() if challenger else ():
        client.set_model_version_tag(name, challenger, key, value)
    client.set_model_version_tag(name, champion, "gate/degraded",
                                 result.degraded_reason or "no")
    runs.log_metrics(cfg, parent, {"gate/champion_accuracy": result.champion_accuracy,
                                   "gate/challenger_accuracy": result.challenger_accuracy,
                                   "gate/delta": result.delta, "gate/p_value": result.p_value,
                                   "gate/champion_degraded": float(result.champion_degraded)},
                     step=step)


def _against_champion(cfg: PipelineConfig, client: MlflowClient, parent: str,
                      champion: ModelVersion, this: ModelVersion, rows: Rows, samples: Path,
                      result: Night, chain: Callable[[str], InferenceChain],
                      ) -> GateResult | None:
    """The drift check of the new rows and the gate (None: unlabelled rows cannot be scored),
    both through the champion's chain; fills `result`. `chain`: a version's chain, by number."""
    from mmcore.nightly import read_rows, reference_profile

    old = chain(str(champion.version))
    stored = load_reference(client, champion)
    if stored is None:  # promoted by hand or before drift checks: build it once now
        stored = reference_profile(old, read_rows(samples / "val.parquet"))
        store_reference(client, champion, *stored)
    if cfg.drift.enabled:
        result.drift = check_drift(cfg, parent, old, rows, *stored, cfg.seed + result.step,
                                   result.step).to_dict()
    if rows.labels is None:
        return None
    return compare(cfg, old, chain(str(this.version)), champion, rows)


def night(cfg: PipelineConfig, refs: dict[str, StageRef], role: str, parent: str,
          ) -> tuple[model_registry.Decision, Night]:
    """Drift, gate and the champion decision for a tested pipeline run whose model is
    registered; emits the alerts. The registry decision itself is `decide_champion`'s."""
    from mmcore.nightly import newest_rows, read_rows, reference_profile

    client, name = MlflowClient(store_uri(cfg.run_dir)), cfg.training.model_name
    chain = functools.cache(lambda version: load_chain(client, name, version))  # one download
    samples = Path(refs["preprocessing"].path)
    rows, batch_index = newest_rows(samples)
    this = model_registry.version_of(client, name, refs["training"].summary["content_digest"])
    champion = model_registry.champion(client, name)
    result = Night(len(rows), refs["preprocessing"].key, labelled=rows.labels is not None)
    gate = None
    if (role == "pipeline" and model_registry.default_mode_of(refs) and champion is not None
            and len(rows)):
        result.step = batch_index if batch_index is not None else _next_night(client, name)
        gate = _against_champion(cfg, client, parent, champion, this, rows, samples, result,
                                 chain)
    compared = gate is not None and str(champion.version) != str(this.version)
    decision = model_registry.consider_for_champion(cfg, refs, role, gate if compared else None)
    result.decision = decision.reason
    if gate is not None:
        result.gate = gate.to_dict()
        _record_gate(client, cfg, parent, name, str(this.version) if compared else None,
                     str(champion.version), gate, decision.reason, result.data_digest,
                     result.step)
    if decision.moved:  # the new champion's reference: this run's validation split
        store_reference(client, client.get_model_version(name, str(this.version)),
                        *reference_profile(chain(str(this.version)),
                                           read_rows(samples / "val.parquet")))
    result.events = alerts.after_night(name, str(this.version), result.drift, result.gate,
                                       decision.moved, decision.reason, result.step)
    return decision, result
