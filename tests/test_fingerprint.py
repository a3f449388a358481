"""Cache keys follow the code: a stage's fingerprint covers its task module and the mmcore modules
it reaches, and ignores comments, docstrings and formatting."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mmcore.config import STAGES
from tasks.engine.fingerprint import ROOT, fingerprint, module_digests


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for package in ("mmcore", "tasks"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def fingerprints(root: Path) -> dict[str, str]:
    return {s: fingerprint(module_digests(f"tasks.stages.{s}", root=root)) for s in STAGES}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_each_stage_covers_its_task_module_and_the_library_code_it_reaches():
    modules = {s: module_digests(f"tasks.stages.{s}") for s in STAGES}
    assert "tasks.stages.shared_space" in modules["shared_space"]
    assert "tasks.stages.training" not in modules["shared_space"]
    assert "mmcore.stages.shared_space" in modules["shared_space"]
    # Lazy imports inside the task body count: the stage code is imported only on a miss.
    assert "mmcore.stages.preprocessing" in modules["preprocessing"]
    assert "mmcore.data.mnist" in modules["preprocessing"]  # via the source registry
    assert "mmcore.inference" in modules["training"]
    assert "mmcore.stages.shared_space" not in modules["feature_extraction"]
    # Fusion operators are training's code, not the encoders'.
    assert not [m for m in modules["feature_extraction"] if m.startswith("mmcore.fusion")]
    # Training ships the model's code (named in a string): its key covers that file too.
    assert "tasks.tracking.model_code" in modules["training"]
    shipped = {"training": ("tasks.tracking.model_code",)}
    assert all(m.startswith(("mmcore", f"tasks.stages.{s}", *shipped.get(s, ())))
               for s in STAGES for m in modules[s])


def test_editing_a_stage_function_changes_that_stage_and_those_reading_its_code(project):
    before = fingerprints(project)
    edit(project / "mmcore/stages/shared_space.py", "seed_everything(seed)",
         "seed_everything(seed + 1)")
    after = fingerprints(project)
    changed = {s for s in STAGES if before[s] != after[s]}
    assert "shared_space" in changed
    assert not changed & {"preprocessing", "feature_extraction"}


def test_editing_the_models_code_changes_training_only(project):
    """The logged model runs `tasks/tracking/model_code.py` wherever it is loaded: an edit to it
    makes training miss (and log and register a new model); no other stage reads it."""
    before = fingerprints(project)
    edit(project / "tasks/tracking/model_code.py", 'return ""', 'return " "')
    after = fingerprints(project)
    assert {s for s in STAGES if before[s] != after[s]} == {"training"}


def test_comments_docstrings_and_formatting_do_not_count(project):
    before = fingerprints(project)
    path = project / "mmcore/stages/shared_space.py"
    text = path.read_text()
    text = text.replace('"""Learn the shared space;', '"""Learn THE shared space (reworded);')
    text = re.sub(r"\n( +)seed_everything\(seed\)\n",
                  r"\n\1# a new comment\n\1seed_everything(  seed  )  # why\n\n", text)
    assert text.count("# a new comment") == 1 and "(reworded)" in text
    path.write_text(text)
    assert fingerprints(project) == before


def test_editing_a_shared_module_changes_every_stage_that_imports_it(project):
    before = fingerprints(project)
    edit(project / "mmcore/io/parquet.py", 'MARKER = "_COMPLETE.json"',
         'MARKER = "_DONE.json"')
    after = fingerprints(project)
    assert all(before[s] != after[s] for s in STAGES)


def test_a_module_named_in_a_string_counts_as_imported(project):
    """Lazy registries name their modules in strings ("module:Class") for importlib."""
    (project / "mmcore/plugin.py").write_text("X = 1\n")
    registry = project / "mmcore/stages/shared_space.py"
    registry.write_text(registry.read_text() + '\nPLUGINS = {"p": "mmcore.plugin:X"}\n')
    assert "mmcore.plugin" in module_digests("tasks.stages.shared_space", root=project)
    before = fingerprints(project)
    (project / "mmcore/plugin.py").write_text("X = 2\n")
    assert fingerprints(project)["shared_space"] != before["shared_space"]


def test_the_on_disk_cache_sees_an_edit_in_a_new_process(project, tmp_path):
    cache = tmp_path / "digests.json"
    first = module_digests("tasks.stages.shared_space", root=project, cache_file=cache)
    assert cache.exists()
    edit(project / "mmcore/stages/shared_space.py", "seed_everything(seed)",
         "seed_everything(seed + 1)")
    second = module_digests("tasks.stages.shared_space", root=project, cache_file=cache)
    assert first["mmcore.stages.shared_space"] != second["mmcore.stages.shared_space"]
    assert {k: v for k, v in first.items() if k != "mmcore.stages.shared_space"} == \
        {k: v for k, v in second.items() if k != "mmcore.stages.shared_space"}
