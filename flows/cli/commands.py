"""`mmpipe`: run the pipeline, see each stage's cache state, deploy it, download datasets.

    mmpipe run [--config FILE] [--set key=value ...] [--stages a,b] [--refresh STAGE]
    mmpipe status [--config FILE] [--set key=value ...]
    mmpipe verify [--config FILE] [--set key=value ...]
    mmpipe compare [--config FILE] [--set key=value ...] [--seeds 0 1 2] [--fusions all|a,b]
                   [--register] [--dask-address tcp://host:8786 | --workers N | --sequential]
    mmpipe sweep [--config FILE] [--set key=value ...] --grid key=a,b [--grid ...]
                 [--seeds 0 1 2] [--register]
                 [--dask-address tcp://host:8786 | --workers N | --sequential]
    mmpipe promote VERSION [--config FILE] [--set key=value ...]
    mmpipe rollback --reason TEXT [--config FILE] [--set key=value ...]
    mmpipe serve
    mmpipe deploy [--api-url URL] [--crash-after SECONDS] [--webhook-url URL]
    mmpipe server start|stop|status
    mmpipe data download mnist|imdb [--dest DIR] [--url-base URL]
    mmpipe data batches --out DIR --batches N [--shift-from K --shift noise|occlusion|vocab|balance
                        --shift-size X] [--seed S] [--copies C]

Errors before work: the config, stage names and data paths are checked before Prefect starts or
anything heavy is imported. A problem with them is one line on stderr and exit code 2; any other
error is one line and exit code 1; `--debug` adds the traceback. Heavy imports (prefect, mlflow,
torch) happen only inside the command that needs them, after the environment points Prefect's
home and MLflow's store into the run directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from flows import errors
from flows.cli import environment, preflight
from flows.errors import UsageError


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key, e.g. training.epochs=5")


def _cluster_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--dask-address", metavar="tcp://HOST:8786",
                       help="run the cells on this Dask cluster (its workers must import "
                            "mmpipe and share the run folder); default: a LocalCluster here")
    where.add_argument("--workers", type=int, metavar="N",
                       help="worker processes of the LocalCluster (default: one per core)")
    where.add_argument("--sequential", action="store_true",
                       help="run the cells one after another in this process, without Dask")


def _cluster(args: argparse.Namespace, cfg) -> tuple[str | None, int | None, bool]:
    """(address, workers, sequential) for a sweep's cells: the command line's choice, else the
    config's `dask.address` and `dask.workers`."""
    chosen_here = args.dask_address or args.workers or args.sequential
    address = args.dask_address or (None if chosen_here else cfg.dask.address)
    return address, args.workers or cfg.dask.workers, args.sequential


def _register_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--register", action="store_true",
                        help="also register every cell's model in the Model Registry (never "
                             "moving @candidate or @champion); by default cells only log their "
                             "models with their runs")


def _stage_list(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before or after the command (`mmpipe --debug run`, `mmpipe run --debug`)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="print the traceback of an error")
    parser = argparse.ArgumentParser(prog="mmpipe", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (cached stages are reused)",
                         parents=[debug])
    _config_args(run)
    run.add_argument("--stages", help="comma-separated stages to run, e.g. training,testing")
    run.add_argument("--refresh", action="append", default=[], metavar="STAGE",
                     help="force STAGE (and the selected stages after it) to run again; "
                          "preprocessing: also accept batches that changed (docs/batches.md)")
    status = sub.add_parser("status", help="each stage's cache state for a config; runs nothing",
                            parents=[debug])
    _config_args(status)
    verify = sub.add_parser("verify", parents=[debug],
                            help="hash every stage output file and compare it with its marker; "
                                 "exit 1 if one is damaged (with --config or --set other than "
                                 "run_dir: only that config's stages)")
    _config_args(verify)
    compare = sub.add_parser("compare", parents=[debug],
                             help="unimodal, multimodal and cross-modal side by side, over "
                                  "seeds, as one MLflow experiment")
    _config_args(compare)
    compare.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                         help="seeds to run every cell with (default: 0 1 2)")
    compare.add_argument("--fusions", default="all", metavar="all|a,b",
                         help="multimodal fusion operators to compare (default: all)")
    _register_arg(compare)
    _cluster_args(compare)
    sweep = sub.add_parser("sweep", parents=[debug],
                           help="every combination of --grid values on every seed, each a "
                                "pipeline run over the shared cache, on a Dask cluster")
    _config_args(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=A,B",
                       help="a config key and its values, e.g. training.fusion=late,gmu "
                            "(repeat for more keys; adds to the config file's sweep.grid)")
    sweep.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                       help="seeds to run every grid point with (default: the config file's "
                            "sweep.seeds, else the config's seed)")
    _register_arg(sweep)
    _cluster_args(sweep)
    tune = sub.add_parser("tune", parents=[debug],
                          help="search config settings with Optuna (TPE, pruned on the "
                               "validation curve), each trial a cell over the shared cache")
    _config_args(tune)
    tune.add_argument("--param", action="append", default=[], metavar="KEY=KIND:SPEC",
                      help="a setting to search: float:LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH or "
                           "cat:A,B, e.g. training.lr=log:1e-4:1e-1 (repeat; adds to the "
                           "config file's tune.params)")
    tune.add_argument("--trials", type=int, metavar="N",
                      help="trials to add (default: the config file's tune.trials, else 20)")
    tune.add_argument("--study-name", metavar="NAME",
                      help="the study to create or resume (default: <config name>-tune)")
    tune.add_argument("--storage", metavar="URL",
                      help="Optuna storage (default: sqlite in <run_dir>/tune/optuna.db)")
    tune.add_argument("--objective", metavar="METRIC",
                      help="what a trial maximises, on the val split: val_acc, "
                           "val_acc_after_calibration, or for robustness val_robust_mean / "
                           "val_robust_worst (mean / lowest point of the robustness curves); "
                           "default: the config file's tune.metric, else val_acc")
    _cluster_args(tune)
    promote = sub.add_parser("promote", parents=[debug],
                             help="point the registered model's @champion at VERSION")
    promote.add_argument("version")
    _config_args(promote)
    rollback = sub.add_parser("rollback", parents=[debug],
                              help="point @champion back at @previous_champion")
    rollback.add_argument("--reason", required=True,
                          help="why: recorded on both versions")
    _config_args(rollback)
    sub.add_parser("serve", parents=[debug],
                   help="run prefect.yaml's deployments (and schedules) on this machine, "
                        "as local-<name>")
    deploy = sub.add_parser("deploy", parents=[debug],
                            help="put prefect.yaml's deployments on a Prefect server's work pool")
    deploy.add_argument("--api-url", help="the server's API URL (default: PREFECT_API_URL)")
    deploy.add_argument("--crash-after", type=float, default=None, metavar="SECONDS",
                        help="mark a run Crashed when its heartbeats stop for this long "
                             "(default 540: three missed heartbeats)")
    deploy.add_argument("--webhook-url", default=None, metavar="URL",
                        help="send the alert events to this URL (default: MMPIPE_ALERT_WEBHOOK; "
                             "neither: no alert automations)")
    server = sub.add_parser("server", help="the local Prefect server that runs reuse",
                            parents=[debug])
    server.add_argument("action", choices=["start", "stop", "status"])
    _config_args(server)
    data = sub.add_parser("data", help="dataset commands", parents=[debug])
    data_sub = data.add_subparsers(dest="data_command", required=True)
    download = data_sub.add_parser("download", help="download a dataset, checksum-verified",
                                   parents=[debug])
    download.add_argument("name", choices=["mnist", "imdb"])
    download.add_argument("--dest", default="data", help="folder to download into")
    download.add_argument("--url-base", help="mirror to download from instead of the default")
    batches = data_sub.add_parser("batches", parents=[debug],
                                  help="write the built-in digits as N batch folders, with an "
                                       "optional shift from batch K on (docs/batches.md)")
    batches.add_argument("--out", required=True, help="a new folder for the batch folders")
    batches.add_argument("--batches", type=int, required=True, metavar="N")
    batches.add_argument("--shift-from", type=int, metavar="K",
                         help="the first shifted batch, counted from 1")
    batches.add_argument("--shift", choices=["noise", "occlusion", "vocab", "balance"])
    batches.add_argument("--shift-size", type=float, default=0.5, metavar="X",
                         help="noise std, occluded share, share of foreign texts, or share of "
                              "classes 5-9 dropped (default 0.5)")
    batches.add_argument("--seed", type=int, default=0)
    batches.add_argument("--copies", type=int, default=1, metavar="C",
                         help="a larger stream: each digit C times, with its own noise and "
                              "text (default 1: the 1,797 digits)")
    return parser


def _checked_config(args: argparse.Namespace):
    """The config, checked before anything starts: values (pydantic), stage names, data paths."""
    from mmcore.config import load_config

    cfg = load_config(args.config, args.overrides)
    preflight.check_run(cfg, _stage_list(getattr(args, "stages", None)),
                        getattr(args, "refresh", None))
    return cfg


def _resolved_config(args: argparse.Namespace, server: bool = False, check: bool = True):
    """The config (checked unless `check` is False) with an absolute run_dir, the overrides that
    say so, and the environment set up (plus the local Prefect server when `server`)."""
    from mmcore.config import load_config

    cfg = _checked_config(args) if check else load_config(args.config, args.overrides)
    run_dir = environment.prepare(cfg.run_dir)
    if server:
        from flows.server import local_server

        info = local_server.use(run_dir)
        if info:
            print(f"Prefect server: {info['ui_url']} (stops after "
                  f"{info.get('idle_minutes', 0):g} min unused; `mmpipe server stop` stops it "
                  "now)")
    return cfg.model_copy(update={"run_dir": str(run_dir)}), [*args.overrides,
                                                              f"run_dir={run_dir}"]


def cmd_run(args: argparse.Namespace) -> int:
    cfg, overrides = _resolved_config(args, server=True)
    from flows.pipeline import pipeline

    if not args.debug:
        errors.console_without_input_tracebacks()
    with environment.without_flow_heartbeats():
        summary = pipeline(config=args.config, overrides=overrides,
                           stages=_stage_list(args.stages), refresh=args.refresh or None)
    print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    print("\nstages:")
    for stage, info in summary["stages"].items():
        print(f"  {stage:<20} {info['state']:<7} {info['path']}")
    quality = summary["quality"]
    reasons = ", ".join(f"{k.split('.', 1)[1]}: {int(v)}" for k, v in quality.items()
                        if k.startswith(("rejected.", "modified.")))
    print(f"data: {int(quality['rows_in'])} rows in, {int(quality['rows_kept'])} kept, "
          f"{int(quality['rows_rejected'])} rejected" + (f" ({reasons})" if reasons else ""))
    if batches := summary.get("batches"):
        print(f"batches: {len(batches['all'])}, new in this run: "
              f"{', '.join(batches['new']) or 'none'}")
    print(metrics_table(summary))
    if model := summary.get("model"):
        print(f"model: {model['name']} version {model['version']}"
              f"{'' if model['new_version'] else ' (unchanged: no new version)'}"
              f"{', @candidate' if model['candidate'] else ''}; @champion: "
              f"{model['decision']}")
        night = model.get("night")
        if night and night["drift"] is not None:
            flagged = [t["name"] for t in night["drift"]["tests"] if t["detected"]]
            print(f"drift: {'detected in ' + ', '.join(flagged) if flagged else 'none'} "
                  f"({night['new_rows']} new rows against @champion's reference)")
        if night and night["events"]:
            print(f"alerts: {', '.join(night['events'])}")
    print(f"\nresults: {summary['run_dir']}/stages/"
          f"  (MLflow parent run {summary['parent_run_id']})")
    print_ui_link(summary["tracking_uri"], summary["run_url"])


def print_ui_link(uri: str, url: str) -> None:
    """Where to look in MLflow: the run's URL, with the command that starts the UI on a local
    store."""
    if uri.startswith("sqlite:"):
        print(f"MLflow UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n"
              f"           then open {url}")
    else:
        print(f"MLflow run: {url}")


def metrics_table(summary: dict) -> str:
    """The test metrics as a short aligned table, 4 digits, under the model they measure (the
    robustness figures are in MLflow)."""
    rows = [(k.removeprefix("test."), f"{v:.4f}") for k, v in sorted(summary["metrics"].items())
            if k.startswith("test.") and isinstance(v, int | float)]
    if not rows:
        return "test metrics: none (testing did not run)"
    model = next(iter(summary.get("comparison") or []), None)
    head = (f"test metrics: {model['model']} (labels used: {model.get('labels_used', '?')})"
            if model else "test metrics:")
    width = max(len(name) for name, _ in rows)
    return "\n".join([head, *(f"  {name:<{width}}  {value}" for name, value in rows)])


def cmd_status(args: argparse.Namespace) -> int:
    cfg, _ = _resolved_config(args)
    from tasks.stages.table import status_all

    for row in status_all(cfg):
        print(f"{row['stage']:<20} {row['state']:<5} {row['key']}  {row['reason']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    cfg, _ = _resolved_config(args)
    from tasks.stages.verify import verify

    only_config = bool(args.config) or any(not o.startswith("run_dir=") for o in args.overrides)
    rows = verify(cfg, only_config)
    for row in rows:
        print(f"{row['state']:<12} {row['stage']}/{row['key']}  " + (
            f"{row['files']} files, {row['bytes']:,} bytes" if row["state"] == "ok"
            else "; ".join(row["problems"])))
    damaged = sum(row["state"] == "damaged" for row in rows)
    print(f"{len(rows)} stage folders, {damaged} damaged"
          + (" (the next run that needs them rebuilds them)" if damaged else ""))
    return 1 if damaged else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mmcore.config import FUSION_NAMES

    if args.fusions != "all":
        unknown = [f for f in args.fusions.split(",") if f.strip() not in FUSION_NAMES]
        if unknown:  # before any work
            raise errors.UsageError(f"--fusions: unknown operator(s) {unknown}; choose from "
                                    f"{', '.join(FUSION_NAMES)} or 'all'")
    if args.workers is not None and args.workers < 1:
        raise errors.UsageError("--workers: needs at least 1")
    cfg, overrides = _resolved_config(args, server=True)
    address, workers, sequential = _cluster(args, cfg)
    from flows.compare import compare
    from flows.sweep import on_runner, where

    if not args.debug:
        errors.console_without_input_tracebacks()
    with environment.without_flow_heartbeats():
        report = on_runner(compare, address, workers, sequential)(
            config=args.config, overrides=overrides, seeds=args.seeds, fusions=args.fusions,
            executor_name=where(address, workers, sequential),
            register_models=args.register)
    print("\n" + report["table"])
    print(f"\nreport.json, tables and plots: MLflow run {report['compare_run_id']} "
          f"(experiment '{report['config']}')")
    print_ui_link(runs_uri(cfg), report["run_url"])
    return 0


def runs_uri(cfg) -> str:
    from tasks.tracking.runs import tracking_uri

    return tracking_uri(cfg.run_dir)


def cmd_sweep(args: argparse.Namespace) -> int:
    from mmcore.experiments.grid import parse_grid, plan_sweep

    if args.workers is not None and args.workers < 1:
        raise errors.UsageError("--workers: needs at least 1")
    # Before any work (no Prefect server yet): the grid, and every cell's config.
    grid, seeds, cells = plan_sweep(args.config, args.overrides, parse_grid(args.grid),
                                    args.seeds)
    if not grid:
        raise errors.UsageError("nothing to sweep: give --grid KEY=A,B or a sweep.grid section "
                                "in the config file")
    cfg, overrides = _resolved_config(args, server=True)
    address, workers, sequential = _cluster(args, cfg)
    from flows.sweep import run_sweep, where

    print(f"sweep: {len(cells)} cells ({len(cells) // len(seeds)} grid points x {len(seeds)} "
          f"seeds) on {where(address, workers, sequential)}")
    if not args.debug:
        errors.console_without_input_tracebacks()
    with environment.without_flow_heartbeats():
        result = run_sweep(config=args.config, overrides=overrides, grid=grid, seeds=seeds,
                           address=address, workers=workers, sequential=sequential,
                           register=args.register)
    print("\n" + result["table"])
    for cell in result["cells"]:
        if "error" in cell:
            print(f"failed: {cell['cell']}: {cell['error']}")
    print(f"\nresults table: MLflow run {result['sweep_run_id']} (experiment "
          f"'{result['config']}'), {Path(cfg.run_dir) / 'sweeps' / result['sweep_run_id']}")
    print_ui_link(runs_uri(cfg), result["run_url"])
    return 1 if result["failed"] else 0


def cmd_tune(args: argparse.Namespace) -> int:
    from typing import get_args

    from mmcore.experiments.tuning import Metric, plan_search

    if args.trials is not None and args.trials < 1:
        raise errors.UsageError("--trials: needs at least 1")
    if args.objective is not None and args.objective not in get_args(Metric):
        raise errors.UsageError(f"--objective: one of {', '.join(get_args(Metric))}, "
                                f"not {args.objective!r}")
    if args.workers is not None and args.workers < 1:
        raise errors.UsageError("--workers: needs at least 1")
    plan_search(args.config, args.overrides, args.param)  # before any work
    cfg, overrides = _resolved_config(args, server=True)
    address, workers, sequential = _cluster(args, cfg)
    from flows.tune import run_tune

    if not args.debug:
        errors.console_without_input_tracebacks()
    with environment.without_flow_heartbeats():
        result = run_tune(args.config, overrides, args.param, args.trials, args.study_name,
                          args.storage, address, workers, sequential, args.objective)
    for trial in result["trials"]:
        value = f"{trial['value']:.4f}" if "value" in trial else "-"
        print(f"trial {trial['number']}: {trial['state']:<8} {value:<6}  epochs "
              f"{trial['epochs']}  " + " ".join(trial["overrides"]))
    best = result["best"]
    print(f"\nbest: trial {best['number']}, {best['value']:.4f}: "
          + ", ".join(f"{k}={v}" for k, v in best["params"].items()))
    print("parameter importances (fANOVA): " + (", ".join(
        f"{k} {v:.2f}" for k, v in result["importances"].items()) or "too few trials"))
    print(f"best config: {result['best_config']} (mmpipe run --config it)")
    print(f"study {result['study']!r} in {result['storage']}: run again with --study-name "
          f"{result['study']} to add trials")
    print_ui_link(runs_uri(cfg), result["run_url"])
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    cfg, _ = _resolved_config(args, check=False)  # the registry only: no data needed
    from tasks.tracking import model_registry, runs

    try:
        mv = model_registry.promote(runs.tracking_uri(cfg.run_dir),
                                    cfg.training.model_name, args.version)
    except ValueError as exc:  # no such version: the command line's problem
        raise errors.UsageError(str(exc)) from None
    accuracy = mv.tags.get("test.accuracy")
    fusion = mv.tags.get("fusion", "none")
    print(f"{mv.name}@champion -> version {mv.version} ({mv.tags.get('mode', '?')}"
          f"{'' if fusion == 'none' else f' {fusion}'}, test accuracy "
          f"{f'{float(accuracy):.4f}' if accuracy else 'unknown'})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    cfg, _ = _resolved_config(args, check=False)  # the registry only: no data needed
    from tasks.tracking import model_registry, runs

    try:
        moved_from, moved_to = model_registry.rollback(runs.tracking_uri(cfg.run_dir),
                                                       cfg.training.model_name, args.reason)
    except ValueError as exc:  # nothing to roll back to
        raise errors.UsageError(str(exc)) from None
    print(f"{cfg.training.model_name}@champion -> version {moved_to} (rolled back from "
          f"version {moved_from}: {args.reason})")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    cfg, _ = _resolved_config(args, check=False)  # no data needed to start or stop a server
    from flows.server import local_server

    run_dir = Path(cfg.run_dir)
    if args.action == "start":
        info = local_server.start(run_dir)
        print(f"{info['ui_url']} (stops after {info['idle_minutes']:g} min unused; "
              f"{local_server.IDLE_ENV}=0 keeps it running)")
    elif args.action == "stop":
        print("stopped" if local_server.stop(run_dir) else "no server was running")
    else:
        info = local_server.running(run_dir)
        print(info["ui_url"] if info else "not running")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.deployments import prefect_yaml, run_locally

    if not (prefect_yaml.PROJECT / prefect_yaml.FILE).is_file():
        raise UsageError(f"{prefect_yaml.PROJECT} has no prefect.yaml: run `mmpipe serve` from "
                         "an mmpipe checkout (pip install -e .)")
    os.chdir(prefect_yaml.PROJECT)  # prefect.yaml's entrypoints and config paths are relative to it
    from mmcore.config import load_config

    run_dir = environment.prepare(load_config().run_dir)
    from flows.server import local_server

    local_server.use(run_dir)
    run_locally.serve()
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from flows.deployments import deploy

    environment.quiet()
    crash_after = deploy.DEFAULT_CRASH_AFTER_S if args.crash_after is None else args.crash_after
    print(deploy.describe(deploy.deploy(args.api_url, crash_after, args.webhook_url)))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    return cmd_batches(args) if args.data_command == "batches" else cmd_download(args)


def cmd_batches(args: argparse.Namespace) -> int:
    """`mmpipe data batches`: the built-in digits as batch folders."""
    if (args.shift is None) != (args.shift_from is None):
        raise errors.UsageError("--shift and --shift-from go together")
    if args.batches < 1 or args.copies < 1 or (args.shift_from is not None
                            and not 1 <= args.shift_from <= args.batches):
        raise errors.UsageError("--batches and --copies must be >= 1, --shift-from within "
                                "1..N")
    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise errors.UsageError(f"--out {args.out} is not empty: write batches into a new "
                                "folder")
    from mmcore.data.digit_batches import write_digit_batches

    for folder in write_digit_batches(args.out, args.batches, args.seed, args.shift_from,
                                      args.shift, args.shift_size, args.copies):
        print(folder)
    print(f"run: mmpipe run --set data.source=manifest --set data.path={args.out} "
          "--set data.batched=true")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from mmcore.data.download import DATASETS, download_dataset

    urls = None
    if args.url_base:
        base = args.url_base.rstrip("/")
        urls = {name: f"{base}/{name}" for name in DATASETS[args.name]}
    for path in download_dataset(args.name, Path(args.dest), urls=urls):
        print(path)
    return 0


COMMANDS = {"run": cmd_run, "status": cmd_status, "verify": cmd_verify, "compare": cmd_compare,
            "sweep": cmd_sweep, "tune": cmd_tune, "promote": cmd_promote,
            "rollback": cmd_rollback, "serve": cmd_serve, "deploy": cmd_deploy,
            "server": cmd_server, "data": cmd_data}


def report(exc: BaseException, debug: bool) -> int:
    """One line on stderr (the traceback too with --debug); the exit code: 2 for a problem with
    the command line, config, data or environment, 1 for anything unexpected."""
    if debug:
        traceback.print_exception(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, errors.input_error_types()):
        print(f"mmpipe: error: {first}", file=sys.stderr)
        return 2
    hint = "" if debug else " (run with --debug for the traceback)"
    print(f"mmpipe: unexpected error: {type(exc).__name__}: {first}{hint}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("mmpipe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return report(exc, args.debug)


if __name__ == "__main__":
    sys.exit(main())
