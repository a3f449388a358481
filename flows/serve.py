"""Serve the deployments declared in prefect.yaml from this machine: one process, schedules and
all (`prefect deploy --all` instead puts them on a Prefect server's work pool)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parent.parent


def load_deployments(path: Path = PROJECT / "prefect.yaml") -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["deployments"]


def build(spec: dict[str, Any]):
    """A RunnerDeployment for one prefect.yaml entry (same entrypoint, parameters, schedules)."""
    module_path, _, name = spec["entrypoint"].partition(":")
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    crons = [s["cron"] for s in spec.get("schedules", [])]
    return flow.to_deployment(name=spec["name"], description=spec.get("description"),
                              parameters=spec.get("parameters", {}), cron=crons or None)


def serve(dry_run: bool = False) -> list[Any]:
    from prefect import serve as prefect_serve

    deployments = [build(spec) for spec in load_deployments()]
    if not dry_run:
        prefect_serve(*deployments)
    return deployments
