"""prefect.yaml, read in one place: the project folder it lives in, and its deployments.

`mmpipe serve` (`run_locally`) and `mmpipe deploy` (`deploy`) read the same file; a file they
cannot use is one line naming it and what is wrong, not a KeyError later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flows.errors import UsageError

PROJECT = Path(__file__).resolve().parents[2]  # this checkout
FILE = "prefect.yaml"


def deployments(project: Path = PROJECT) -> list[dict[str, Any]]:
    """The `deployments:` of `<project>/prefect.yaml`, each with at least a name and an
    entrypoint."""
    path = project / FILE
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read it: {' '.join(str(exc).split())}") from None
    specs = tree.get("deployments") if isinstance(tree, dict) else None
    if not isinstance(specs, list) or not specs:
        raise UsageError(f"{path}: expected a `deployments:` list")
    for index, spec in enumerate(specs):
        missing = [key for key in ("name", "entrypoint")
                   if not isinstance(spec, dict) or not isinstance(spec.get(key), str)]
        if missing:
            raise UsageError(f"{path}: deployments[{index}]: missing {' and '.join(missing)}")
    return specs
