"""Stage results as JSON, never pickles: what Prefect persists in the run folder, and reads back.

A stage task returns a `StageRef` (where its output is, not the output), which Prefect persists
as its cache record `<run_dir>/prefect-results/<stage>-<key>`. Prefect's default serializer is
cloudpickle, and the run folder is shared (a team's folder, a cluster's mount): whoever can
write there could plant a pickle that runs code in every process that reads the cache. So:

- the stage task persists with `SERIALIZER`: JSON (Prefect's encoder writes the StageRef as
  `{"__class__": ..., "data": {...}}`), read back as plain JSON (no `object_decoder`, which would
  import the class that the file names); `stage_ref` validates what comes back into a StageRef;
- Prefect deserializes a record with the serializer that the record itself names, pickle
  included. So before Prefect looks up a stage's record, `replace_foreign_record` (called under
  the stage key's lock) replaces a record that SERIALIZER did not write (an older mmpipe's
  pickle, or a planted one), unread: by a JSON record of the StageRef in the stage's verified
  output folder (no recomputation), or by nothing (the stage runs). Prefect offers no hook to
  refuse a serializer when it reads (a custom storage block must be saved on the server first),
  so a writer racing that moment on purpose could still have a pickle read;
  `docs/decisions.md` says what else guards the run folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.serializers import JSONSerializer

from mmcore.config import PipelineConfig
from tasks.engine.keys import StageRef

SERIALIZER = JSONSerializer(object_decoder=None)
FOLDER = "prefect-results"


def folder(cfg: PipelineConfig) -> Path:
    """Where the stage tasks of cfg's run folder persist their results."""
    return (Path(cfg.run_dir) / FOLDER).resolve()


def record_path(cfg: PipelineConfig, stage: str, key: str) -> Path:
    """The stage key's record: Prefect stores it under the cache key (`keys.StagePolicy`)."""
    return folder(cfg) / f"{stage}-{key}"


def foreign(content: bytes) -> str | None:
    """Why a record was not written by SERIALIZER ("a pickle", ...), or None if it was."""
    try:
        serializer = json.loads(content)["metadata"]["serializer"]
    except (ValueError, KeyError, TypeError):
        return "not a JSON result record"
    if serializer != SERIALIZER.model_dump(mode="json"):
        kind = serializer.get("type") if isinstance(serializer, dict) else serializer
        return f"written with another serializer ({kind})"
    return None


def replace_foreign_record(cfg: PipelineConfig, stage: str, key: str,
                           output: Callable[[], StageRef | None]) -> str | None:
    """If SERIALIZER did not write the stage key's record (a pickle from an older mmpipe, or
    planted), replace it without reading it: by a JSON record of `output()` (the StageRef of
    the stage's verified output folder), or, when that is None, by nothing. Says what it did,
    or None."""
    path = record_path(cfg, stage, key)
    try:
        why = foreign(path.read_bytes())
    except FileNotFoundError:
        return None
    if why is None:
        return None
    path.unlink(missing_ok=True)
    ref = output()
    if ref is None:
        return f"removed its Prefect result record ({why}), never read"
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(folder(cfg))),
                        serializer=SERIALIZER, cache_result_in_memory=False)
    store.write(ref, key=path.name)
    return f"replaced its Prefect result record ({why}), never read, by JSON from its output"


def stage_ref(value: Any) -> StageRef:
    """A stage task's result as a StageRef: the object itself when the task ran in this
    process, its JSON (`{"__class__": ..., "data": {...}}`, or the bare fields) when it came
    from the cache."""
    if isinstance(value, StageRef):
        return value
    if isinstance(value, dict) and "__class__" in value:
        value = value.get("data")
    return StageRef.model_validate(value)
