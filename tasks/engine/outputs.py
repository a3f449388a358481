"""A stage's output folder, from temporary folder to published, verified output.

Outputs are written in a temporary sibling folder that is renamed into place after its completion
marker is written: a folder without the marker does not exist for anyone. The marker lists each
file's size and digest and the content digest of each upstream folder the stage read, so a
damaged output, or one built on an upstream that was rebuilt differently since, is not a cache
hit (`verified`). Before a stage body runs, its upstream folders are checked against their
markers: a damaged input is an error naming the file, never a pyarrow traceback.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmcore.config import PipelineConfig
from mmcore.io.parquet import mark_complete, read_marker, verify_folder
from tasks import faults
from tasks.engine.keys import StageRef, stage_dir
from tasks.parallel import partitions


class DamagedOutput(RuntimeError):
    """A stage output that no longer matches its completion marker."""


def verified(cfg: PipelineConfig, stage: str, key: str,
             ) -> tuple[dict[str, Any] | None, list[str]]:
    """(marker, problems) of the stage's output folder for `key`: (None, []) when there is no
    complete folder; problems name each missing, truncated, altered or added file."""
    marker, problems = verify_folder(stage_dir(cfg, stage, key))
    return marker, [str(p) for p in problems]


def check_inputs(stage: str, upstream: dict[str, StageRef]) -> dict[str, str]:
    """Each upstream folder checked against its marker right before the body reads it; returns
    their content digests (recorded in this stage's marker)."""
    contents = {}
    for name, ref in upstream.items():
        marker, problems = verify_folder(ref.path)
        if marker is None or problems:
            what = "; ".join(problems) or "its completion marker is gone"
            raise DamagedOutput(f"{stage}: its input {name} at {ref.path} is damaged: {what}. "
                                f"The next run rebuilds {name}.")
        contents[name] = marker["content"]
    return contents


@contextmanager
def output_folder(cfg: PipelineConfig, stage: str, key: str):
    """A temporary folder beside the final one, `.<key>.<pid>-<random>.tmp`; removed if the
    stage fails, and by `tasks/engine/recovery.py` if its process died."""
    final = stage_dir(cfg, stage, key)
    tmp = final.with_name(f".{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        yield final, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(final: Path, tmp: Path, ref: StageRef, upstream_content: dict[str, str]) -> None:
    """Marker last, then rename: the output exists all at once or not at all."""
    mark_complete(tmp, {**ref.model_dump(), "upstream_content": upstream_content})
    faults.point(ref.stage, "publish")
    if final.exists():  # a damaged or outdated output, replaced under the stage's lock
        shutil.rmtree(final)
    tmp.rename(final)
    shutil.rmtree(partitions.work_dir(final), ignore_errors=True)  # its parts are in `final`


def completed(cfg: PipelineConfig, stage: str, key: str) -> StageRef | None:
    """The StageRef recorded in a complete output folder whose files match its marker, or
    None."""
    marker, problems = verified(cfg, stage, key)
    return StageRef.model_validate(marker) if marker and not problems else None


def content(cfg: PipelineConfig, stage: str, key: str) -> str | None:
    """The content digest of a stage's complete output folder, if there is one."""
    marker = read_marker(stage_dir(cfg, stage, key))
    return marker.get("content") if marker else None
