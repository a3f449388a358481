"""Errors before work: a bad stage name, a missing or wrong data path, a bad config value is one
line on stderr and exit code 2, found before Prefect starts or anything heavy is imported;
anything unexpected is one line and exit code 1; --debug adds the traceback."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from flows import errors
from flows.cli import commands
from flows.server import local_server
from mmcore.data.source import DataError


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = commands.main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--stages", "nosuch"], "--stages: unknown stage 'nosuch'; stages are preprocessing,"),
    (["--stages", "training,tesing"], "--stages: unknown stage 'tesing'"),
    (["--refresh", "nosuch"], "--refresh: unknown stage 'nosuch'"),
    (["--stages", "fusion"], "--stages: unknown stage 'fusion' ('fusion' is now 'shared_space')"),
    (["--set", "data.source=mnist"], "data.path: data.source=mnist needs a path"),
    (["--set", "data.source=imdb", "--set", "data.path=no/such/folder"],
     "data.path: {cwd}/no/such/folder does not exist (expected the aclImdb folder"),
    (["--set", "data.source=manifest", "--set", "data.path=."],
     "data.path: {cwd} is not a file (expected the CSV or Parquet manifest file)"),
    (["--set", "data.source=paired"], "data.pair: data.source=paired needs a data.pair section"),
    (["--set", "data.source=paired", "--set",
      "data.pair={images: {source: mnist}, texts: {source: digits}}"],
     "data.pair.images.path: data.source=mnist needs a path"),
    (["--set", "training.epochs=many"], "invalid config: training.epochs: Input should be"),
    (["--set", "gate.benchmark=missing.parquet"],
     "gate.benchmark: {cwd}/missing.parquet is not a file"),
    (["--config", "no-such.yaml"], "no-such.yaml: cannot read config"),
])
def test_run_rejects_bad_input_before_any_work_in_one_line(tmp_path, monkeypatch, capsys,
                                                            args, message):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "run", "--set", f"run_dir={tmp_path / 'runs'}", *args)
    assert code == 2
    assert err.startswith(f"mmpipe: error: {message.format(cwd=tmp_path)}")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not local_server.info_path(tmp_path / "runs").exists()  # no server was started


def test_debug_adds_the_traceback(tmp_path, capsys):
    code, err = run_cli(capsys, "run", "--debug", "--set", f"run_dir={tmp_path}",
                        "--stages", "nosuch")
    assert code == 2
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1].startswith("mmpipe: error: --stages: unknown stage")


def test_an_unexpected_error_is_one_line_with_a_hint_and_exit_code_1(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setitem(commands.COMMANDS, "status", broken)
    code, err = run_cli(capsys, "status")
    assert code == 1
    assert err == ("mmpipe: unexpected error: RuntimeError: disk on fire "
                   "(run with --debug for the traceback)\n")
    code, err = run_cli(capsys, "--debug", "status")
    assert code == 1 and "Traceback" in err and "run with --debug" not in err


def test_bad_input_is_found_without_importing_prefect_or_torch(tmp_path):
    """In a fresh interpreter, as the installed command runs."""
    code = f"""
import sys, json
from flows.cli import commands
codes = [commands.main(["run", "--set", "run_dir={tmp_path}", *args]) for args in
         (["--stages", "x"], ["--refresh", "x"], ["--set", "data.source=mnist"])]
heavy = sorted(m for m in ("prefect", "torch", "mlflow", "sklearn") if m in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert json.loads(result.stdout.splitlines()[-1]) == {"codes": [2, 2, 2], "heavy": []}
    assert result.stderr.count("\n") == 3


def _record(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except type(error):
        return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1,
                                 "Task run failed with exception: %r", (error,), sys.exc_info())


def test_console_keeps_the_line_of_an_input_error_from_a_stage_and_drops_its_traceback():
    formatter = errors._WithoutInputTracebacks(logging.Formatter("%(message)s"))
    record = _record(DataError("missing train-images-idx3-ubyte", file="mnist/x"))
    assert formatter.format(record) == (
        "Task run failed with exception: DataError('file mnist/x: missing "
        "train-images-idx3-ubyte')")
    assert record.exc_info is not None  # the API handler still sends the traceback
    assert "Traceback" in logging.Formatter().format(record)
    unexpected = formatter.format(_record(RuntimeError("boom")))
    assert "Traceback (most recent call last)" in unexpected
