"""Alerts as Prefect events (docs/nightly.md): what a scheduled run found, with its figures in
the payload, on the model's resource (`mmpipe.model.<name>`). `mmpipe deploy` installs one
automation per event that sends it to a notification block; anyone may add more on the server.

- `mmpipe.drift.detected`: a drift test flagged the new rows (tests, p-values, thresholds);
- `mmpipe.champion.promoted`: `@champion` moved (version, the gate's figures);
- `mmpipe.gate.failed`: the champion degraded on the new rows and no challenger passed the gate
  to replace it (Δ, p, rows compared, both accuracies, why). A challenger that is merely not
  better is a quiet night: recorded (tags, summaries), not alerted;
- `mmpipe.run.failed`: the pipeline flow failed (the error).

Emitted from inside the flow run, so Prefect relates each event to the flow run and its flow.
"""

from __future__ import annotations

from typing import Any

DRIFT = "mmpipe.drift.detected"
PROMOTED = "mmpipe.champion.promoted"
GATE_FAILED = "mmpipe.gate.failed"
RUN_FAILED = "mmpipe.run.failed"
EVENTS = (DRIFT, PROMOTED, GATE_FAILED, RUN_FAILED)


def emit(event: str, model: str, payload: dict[str, Any]) -> None:
    """One event on the model's resource."""
    from prefect.events import emit_event

    emit_event(event=event, resource={"prefect.resource.id": f"mmpipe.model.{model}",
                                      "prefect.resource.name": model}, payload=payload)


def after_night(model: str, version: str, drift: dict[str, Any] | None,
                gate: dict[str, Any] | None, promoted: bool, decision: str, night: int,
                ) -> list[str]:
    """The events a night's findings call for, emitted; their names."""
    sent = []
    if drift is not None and drift["drifted"]:
        flagged = [t for t in drift["tests"] if t["detected"]]
        emit(DRIFT, model, {"night": night, "version": version, "alpha": drift["alpha"],
                            "rows": drift["n_batch"],
                            "estimated_accuracy": drift.get("estimated_accuracy"),
                            "tests": {t["name"]: {"p_value": t["p_value"],
                                                  "threshold": t["threshold"],
                                                  "statistic": t["statistic"]}
                                      for t in flagged}})
        sent.append(DRIFT)
    figures = ({k: gate[k] for k in ("rows", "champion_accuracy", "challenger_accuracy",
                                     "delta", "p_value", "champion_degraded",
                                     "degraded_reason")} if gate else {})
    if promoted:
        emit(PROMOTED, model, {"night": night, "version": version, "decision": decision,
                               **figures})
        sent.append(PROMOTED)
    elif gate is not None and gate["champion_degraded"]:
        emit(GATE_FAILED, model, {"night": night, "version": version, "decision": decision,
                                  **figures})
        sent.append(GATE_FAILED)
    return sent


def on_flow_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect `on_failure` hook of the pipeline flow: `mmpipe.run.failed` with the error.

    Sent with one synchronous request, not through `emit_event`: the run's process exits right
    after this hook, and Prefect's background events worker, which `emit_event` feeds, hung in
    this hook on a busy machine (the nightly integration test saw the hook start and never
    finish, and the event never reached the server). When this returns, the server has it."""
    from prefect.client.orchestration import get_client
    from prefect.events import Event
    from prefect.events.related import tags_as_related_resources

    related = [{"prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                "prefect.resource.role": "flow", "prefect.resource.name": flow.name}]
    if flow_run.deployment_id:
        related.append({"prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                        "prefect.resource.role": "deployment"})
    event = Event(event=RUN_FAILED,
                  resource={"prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                            "prefect.resource.name": flow_run.name},
                  related=[*related, *tags_as_related_resources(flow_run.tags)],
                  payload={"flow": flow.name, "flow_run": flow_run.name,
                           "parameters": {k: str(v) for k, v in flow_run.parameters.items()},
                           "message": state.message or ""})
    with get_client(sync_client=True) as client:
        client.request("POST", "/events", json=[event.model_dump(mode="json")],
                       ).raise_for_status()
