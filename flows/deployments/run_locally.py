"""`mmpipe serve`: run prefect.yaml's deployments from this machine, in one process.

Served deployments are named `local-<name>` (e.g. `mmpipe/local-nightly-full-run`), so they never
touch the deployments `mmpipe deploy` puts on a work pool, which keep prefect.yaml's names. A
`local-` name held by a work-pool deployment is refused, not taken over. Each schedule keeps its
time zone and parameters; on exit Prefect pauses the served schedules, i.e. only the `local-`
deployments this command created.
"""

from __future__ import annotations

import importlib
from typing import Any

from flows.deployments import prefect_yaml
from flows.errors import UsageError

LOCAL_PREFIX = "local-"
SERVE_TAG = "mmpipe-serve"


def load_flow(entrypoint: str):
    """The flow object a prefect.yaml entrypoint names (`flows/pipeline.py:pipeline`)."""
    module_path, _, name = entrypoint.partition(":")
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def schedules(spec: dict[str, Any]) -> list:
    """prefect.yaml's schedules of one deployment, each with its time zone and parameters."""
    from prefect.schedules import Cron

    out = []
    for item in spec.get("schedules") or []:
        if "cron" not in item:
            raise UsageError(f"prefect.yaml, deployment {spec['name']}: `mmpipe serve` reads cron "
                             f"schedules only, found {sorted(item)}")
        out.append(Cron(item["cron"], timezone=item.get("timezone"),
                        day_or=item.get("day_or", True), active=item.get("active", True),
                        parameters=item.get("parameters") or {}))
    return out


def build(spec: dict[str, Any]):
    """A RunnerDeployment for one prefect.yaml entry, named `local-<name>`."""
    flow = load_flow(spec["entrypoint"])
    return flow.to_deployment(
        name=LOCAL_PREFIX + spec["name"], description=spec.get("description"),
        parameters=spec.get("parameters", {}), schedules=schedules(spec),
        tags=[*spec.get("tags", []), SERVE_TAG],
    )


def refuse_taken_names(deployments: list) -> None:
    """Stop before serving a name that a work-pool deployment (not ours) holds."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for deployment in deployments:
            name = f"{deployment.flow_name}/{deployment.name}"
            try:
                existing = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                raise UsageError(f"deployment {name} exists on work pool "
                                 f"{existing.work_pool_name!r}; `mmpipe serve` only serves the "
                                 f"{LOCAL_PREFIX}* deployments it creates, and will not take "
                                 "it over: delete or rename it")


def serve(dry_run: bool = False) -> list[Any]:
    """Serve every prefect.yaml deployment (run from the project folder: entrypoints and
    config paths are relative to it)."""
    from prefect import serve as prefect_serve

    deployments = [build(spec) for spec in prefect_yaml.deployments()]
    if not dry_run:
        refuse_taken_names(deployments)
        prefect_serve(*deployments)
    return deployments
