"""`mmpipe deploy`: put prefect.yaml's deployments on a Prefect server, for a process worker.

Each step fails with one line that names the fix, instead of a misleading error later:

1. the API URL (`--api-url` or PREFECT_API_URL) must answer as a Prefect API;
2. the project folder (MMPIPE_PROJECT_DIR, else this checkout) must hold prefect.yaml; it is
   exported for prefect.yaml's pull step, so no deployment stores `{{ $MMPIPE_PROJECT_DIR }}`
   literally and later runs in a temporary folder;
3. each work pool prefect.yaml names is created (process type) unless it exists;
4. `prefect deploy --all` runs in the project folder, without prompts;
5. every deployment is read back: its pull step must name the project folder;
6. the automation that marks runs whose heartbeats stopped as Crashed is created or updated;
7. with a webhook URL (`--webhook-url` or MMPIPE_ALERT_WEBHOOK), Prefect's Custom Webhook
   notification block `mmpipe-alerts` and one automation per alert event
   (`tasks/tracking/alerts.py`) that sends the event, its payload as JSON, to that block.

Every step is idempotent: deploying twice changes nothing the second time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from flows.deployments import prefect_yaml
from flows.deployments.prefect_yaml import PROJECT
from flows.errors import UsageError
from mmcore.uris import public_uri
from tasks.tracking import alerts

PROJECT_ENV = "MMPIPE_PROJECT_DIR"
# The flows prefect.yaml deploys (flows/compare.py:compare runs `mmpipe` flows as subflows).
FLOW_NAMES = ["mmpipe", "mmpipe-compare"]
CRASH_AUTOMATION = "mmpipe: runs whose heartbeats stopped are Crashed"
# Prefect 3.9 flow runs send a heartbeat every 180 s: three missed ones, as Prefect Cloud's
# managed automation does.
DEFAULT_CRASH_AFTER_S = 540
WEBHOOK_ENV = "MMPIPE_ALERT_WEBHOOK"
ALERT_BLOCK = "mmpipe-alerts"
ALERT_AUTOMATION = "mmpipe alert: {event}"
# The notification's body: the event as JSON, for a receiver to parse (Prefect renders it with
# the triggering event in its template context).
ALERT_BODY = ('{"event": "{{ event.event }}", "resource": "{{ event.resource.id }}", '
              '"occurred": "{{ event.occurred }}", "payload": {{ event.payload | tojson }}}')


def check_api_url(given: str | None) -> str:
    """The Prefect API URL to deploy to, checked to answer as one."""
    url = (given or os.environ.get("PREFECT_API_URL") or "").strip().rstrip("/")
    if not url:
        raise UsageError("no Prefect server to deploy to: start one (`prefect server start`), "
                         "then `export PREFECT_API_URL=http://127.0.0.1:4200/api` "
                         "or pass --api-url")
    shown = public_uri(url)  # in messages: never with credentials
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            body = response.read(100).strip()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):  # answers, and wants credentials (PREFECT_API_KEY)
            return url
        raise UsageError(f"the Prefect API at {shown} answered {exc.code} on /health: is the URL "
                         "right? A Prefect server's API URL ends in /api") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"the Prefect API at {shown} does not answer ({reason}): start the "
                         "server (`prefect server start`) or fix PREFECT_API_URL") from None
    if body != b"true":
        raise UsageError(f"{shown} answers, but not as a Prefect API: a Prefect server's API URL "
                         f"ends in /api (e.g. {shown}/api)")
    return url


def project_dir() -> Path:
    """The project folder deployments run in: MMPIPE_PROJECT_DIR if set, else this checkout."""
    raw = os.environ.get(PROJECT_ENV, "").strip()
    folder = Path(raw).expanduser().resolve() if raw else PROJECT
    if not (folder / prefect_yaml.FILE).is_file():
        where = f"{PROJECT_ENV}={raw}" if raw else f"this installation ({folder})"
        raise UsageError(f"{where} has no prefect.yaml: point {PROJECT_ENV} at the mmpipe "
                         "checkout the worker should run")
    return folder


def ensure_work_pools(specs: list[dict[str, Any]]) -> dict[str, str]:
    """Create each process work pool prefect.yaml names; {pool: 'created' | 'exists'}."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    names = sorted({spec["work_pool"]["name"] for spec in specs})
    done: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                pool = client.read_work_pool(name)
            except ObjectNotFound:
                template = ProcessWorker.get_default_base_job_template()
                try:
                    client.create_work_pool(WorkPoolCreate(name=name, type="process",
                                                           base_job_template=template))
                    done[name] = "created"
                except ObjectAlreadyExists:  # another deploy created it just now
                    done[name] = "exists"
                continue
            if pool.type != "process":
                raise UsageError(f"work pool {name!r} exists with type {pool.type!r}; "
                                 "prefect.yaml's deployments need a process pool: delete it "
                                 "(`prefect work-pool delete`) or rename work_pool.name")
            done[name] = "exists"
    return done


def run_prefect_deploy(project: Path, api_url: str) -> None:
    """`prefect --no-prompt deploy --all` in the project folder, the folder exported."""
    prefect = Path(sys.executable).with_name("prefect")
    env = {**os.environ, PROJECT_ENV: str(project), "PREFECT_API_URL": api_url}
    result = subprocess.run([str(prefect), "--no-prompt", "deploy", "--all"], cwd=project,
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        raise UsageError("`prefect deploy --all` failed: " + (lines[-1] if lines else
                                                              f"exit {result.returncode}"))


def flow_name(entrypoint: str) -> str:
    """The flow name of a prefect.yaml entrypoint (`flows/pipeline.py:pipeline` -> mmpipe)."""
    from flows.deployments.run_locally import load_flow

    return load_flow(entrypoint).name


def verify(specs: list[dict[str, Any]], project: Path) -> list[str]:
    """Read every deployment back; its pull step must name the project folder."""
    from prefect.client.orchestration import get_client

    names = []
    with get_client(sync_client=True) as client:
        for spec in specs:
            name = f"{flow_name(spec['entrypoint'])}/{spec['name']}"
            deployment = client.read_deployment_by_name(name)
            directories = [step[key]["directory"] for step in deployment.pull_steps or []
                           for key in step if key.endswith("set_working_directory")]
            if directories != [str(project)]:
                raise UsageError(f"deployment {name} runs in {directories}, not {project}: "
                                 "check the pull step in prefect.yaml")
            names.append(name)
    return names


def crash_automation(within_s: float):
    """Prefect's "zombie flow runs" automation, for this project's flows: after a heartbeat,
    another event of the same flow run (a heartbeat or any state change) must follow within
    `within_s`, or the run is marked Crashed."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=CRASH_AUTOMATION,
        description=f"Marks a flow run of {', '.join(FLOW_NAMES)} Crashed when no heartbeat "
                    f"or state change follows its last heartbeat within {within_s:g} s "
                    "(its process or machine died). Created by `mmpipe deploy`.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAMES},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"No heartbeat for {within_s:g} s: the flow run's process stopped "
                    "(marked by the mmpipe heartbeat automation)."
        )],
    )


def alert_block(url: str) -> Any:
    """The `mmpipe-alerts` Custom Webhook block, saved (or updated) on the server; its id."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name=ALERT_BLOCK, url=url, method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}"})
    return block.save(ALERT_BLOCK, overwrite=True)


def alert_automation(event: str, block_id: Any):
    """Each `event` sends one notification, its payload as JSON, to the block."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=ALERT_AUTOMATION.format(event=event),
        description=f"Sends every {event} event to the {ALERT_BLOCK} webhook block. "
                    "Created by `mmpipe deploy`.",
        trigger=EventTrigger(expect={event}, posture=Posture.Reactive, threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject=f"mmpipe: {event}",
                                  body=ALERT_BODY)],
    )


def ensure_automation(automation: Any) -> str:
    """Create the automation, or update the one of its name; 'created' | 'updated'."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        if not existing:
            client.create_automation(automation)
            return "created"
        client.update_automation(existing[0].id, automation)
        for duplicate in existing[1:]:  # e.g. two deploys at once: keep one
            client.delete_automation(duplicate.id)
        return "updated"


def ensure_alerts(webhook_url: str | None) -> dict[str, str]:
    """The alert block and automations when a webhook URL is given; {automation: state}."""
    url = (webhook_url or os.environ.get(WEBHOOK_ENV) or "").strip()
    if not url:
        return {}
    block_id = alert_block(url)
    return {ALERT_AUTOMATION.format(event=e): ensure_automation(alert_automation(e, block_id))
            for e in alerts.EVENTS}


def deploy(api_url: str | None = None, crash_after_s: float = DEFAULT_CRASH_AFTER_S,
           webhook_url: str | None = None) -> dict[str, Any]:
    """Check, create the pools, deploy, verify, set up the heartbeat automation and, with a
    webhook URL, the alerts; a summary."""
    if crash_after_s < 10:
        raise UsageError(f"--crash-after {crash_after_s:g}: Prefect's proactive automations "
                         "need at least 10 s")
    url = check_api_url(api_url)
    project = project_dir()
    specs = prefect_yaml.deployments(project)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        pools = ensure_work_pools(specs)
        run_prefect_deploy(project, url)
        return {"api_url": url, "project": str(project), "work_pools": pools,
                "deployments": verify(specs, project),
                "automation": ensure_automation(crash_automation(crash_after_s)),
                "alerts": ensure_alerts(webhook_url)}


def describe(summary: dict[str, Any]) -> str:
    """What `mmpipe deploy` prints: what it did, and how to start a worker."""
    pools = ", ".join(f"{name} ({state})" for name, state in summary["work_pools"].items())
    lines = [f"Prefect API: {public_uri(summary['api_url'])}",
             f"project folder: {summary['project']}",
             f"work pools: {pools}", "deployments:"]
    lines += [f"  {name}" for name in summary["deployments"]]
    lines.append(f"automation: {CRASH_AUTOMATION!r} ({summary['automation']})")
    lines += [f"automation: {name!r} ({state})" for name, state in summary["alerts"].items()]
    if not summary["alerts"]:
        lines.append(f"alerts: none (no --webhook-url or {WEBHOOK_ENV})")
    pool = next(iter(summary["work_pools"]))
    lines.append("start a worker (in the project's venv):\n"
                 f"  . {summary['project']}/.venv/bin/activate && "
                 f"PREFECT_API_URL={public_uri(summary['api_url'])} prefect worker start "
                 f"--pool {pool}")
    return "\n".join(lines)
