"""`mmpipe verify`: every file of every stage output against its marker, fully hashed.

Runs check sizes always and hash only small or touched files (`mmcore/io/integrity.py`); this reads
every byte, so it also finds what that policy lets through (bit rot, a clock set back). A
damaged folder needs no action: the next run that wants it rebuilds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmcore.config import STAGES, PipelineConfig
from mmcore.io.parquet import verify_folder
from tasks.engine.keys import stage_dir
from tasks.stages.table import status_all


def _folders(cfg: PipelineConfig, only_config: bool) -> list[tuple[str, Path]]:
    """(stage, folder) pairs: the config's five stages, or every stage folder in the run dir."""
    if only_config:
        return [(row["stage"], stage_dir(cfg, row["stage"], row["key"]))
                for row in status_all(cfg)]
    root = Path(cfg.run_dir) / "stages"
    return [(stage, path) for stage in STAGES
            for path in sorted((root / stage).glob("*"))
            if path.is_dir() and not path.name.startswith(".")]


def verify(cfg: PipelineConfig, only_config: bool = False) -> list[dict[str, Any]]:
    """One row per stage folder: state ok | damaged | unverifiable (an older marker, which
    runs do not trust either) | incomplete | absent, and the problems."""
    rows = []
    for stage, folder in _folders(cfg, only_config):
        marker, problems = verify_folder(folder, full=True)
        if marker is None:
            state = "incomplete" if folder.exists() else "absent"
            problems_text = (["no completion marker: no run uses it"] if folder.exists()
                             else ["not built yet"])
        else:
            unlisted = [p for p in problems if p.kind == "unlisted"]
            state = "unverifiable" if unlisted else "damaged" if problems else "ok"
            problems_text = [str(p) for p in problems]
        files = (marker or {}).get("files") or {}
        rows.append({"stage": stage, "key": folder.name, "path": str(folder), "state": state,
                     "files": len(files), "bytes": sum(f["size"] for f in files.values()),
                     "problems": problems_text})
    return rows
