"""Sweeps as data: a grid of config values times seeds -> cells, and cell results -> a table of
mean ± std over seeds per grid point.

A grid is `{dotted config key: [values]}` (`--grid training.fusion=late,gmu` on the command line,
or a `sweep:` section in a config file); a cell is one point of the grid on one seed, run as a
pipeline with the point's values as `key=value` overrides. Orchestration and tracking live in
`flows/sweep.py` and `tasks/tracking/experiment_runs.py`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError, field_validator

from mmcore.config import ConfigError, load_config
from mmcore.experiments.stats import format_mean_std, mean_std

# Keys a grid may not vary: the seed has its own list, the run folder is the shared cache, the
# name is the MLflow experiment all cells share.
RESERVED = ("seed", "run_dir", "name")
# The metrics the terminal table shows; the MLflow table has every test metric.
SHOWN = ("test.accuracy", "test.macro_f1")

Grid = dict[str, list[str]]


@dataclass(frozen=True)
class SweepCell:
    """One grid point on one seed."""

    point: tuple[tuple[str, str], ...]  # (dotted key, value as written in an override)
    seed: int

    @property
    def point_name(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.point) or "base"

    @property
    def name(self) -> str:
        return f"{self.point_name} seed={self.seed}"

    def overrides(self) -> list[str]:
        return [f"seed={self.seed}", *(f"{key}={value}" for key, value in self.point)]


def _text(value: Any) -> str:
    """A grid value as an override's right-hand side (JSON is YAML, so lists and booleans keep
    their type)."""
    return value if isinstance(value, str) else json.dumps(value)


def parse_grid(items: Iterable[str]) -> Grid:
    """`["training.fusion=late,gmu", "shared_space.loss=l2"]` ->
    `{"training.fusion": ["late", "gmu"],
    "shared_space.loss": ["l2"]}`; a key given twice is an error, as are empty values."""
    grid: Grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        parts = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(parts):
            raise ConfigError(f"--grid {item!r}: expected key=value1,value2,...")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; list its values once, comma-separated")
        grid[key] = parts
    return check_grid(grid)


def check_grid(grid: Grid) -> Grid:
    """Reserved keys and duplicate values are errors (a cell would run twice)."""
    for key, values in grid.items():
        if key in RESERVED:
            raise ConfigError(f"sweep grid: {key!r} cannot be swept"
                              + ("; list seeds with --seeds or sweep.seeds" if key == "seed"
                                 else ""))
        if len(set(values)) != len(values) or not values:
            raise ConfigError(f"sweep grid: {key} needs distinct values; got {values}")
    return grid


class SweepSection(BaseModel):
    """A config file's `sweep:` section: `{grid: {key: [values]}, seeds: [..]}`, both optional.
    A single value stands for a list of one; seeds are integers (not `true`)."""

    model_config = ConfigDict(extra="forbid")

    grid: dict[str, list[Any]] | None = None
    seeds: list[StrictInt] | None = None

    @field_validator("grid", mode="before")
    @classmethod
    def _lists(cls, grid: Any) -> Any:
        if not isinstance(grid, dict):
            return grid
        return {str(k): v if isinstance(v, list) else [v] for k, v in grid.items()}


def file_section(path: str | Path | None, name: str) -> Any:
    """The raw `name:` section of a config file; None without a file or section (the config
    loader skips these sections: they say what to run, not how)."""
    if path is None:
        return None
    try:
        tree = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    return tree.get(name) if isinstance(tree, dict) else None


def read_sweep_section(path: str | Path | None) -> tuple[Grid, list[int] | None]:
    """The `sweep:` section of a config file (`SweepSection`) as a grid of override texts and
    the seeds. No file or no section: an empty grid and no seeds. A bad section is one line
    naming the key, as for the rest of the config."""
    raw = file_section(path, "sweep")
    if raw is None:
        return {}, None
    try:
        section = SweepSection.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(['sweep', *(str(p) for p in err['loc'])])}: {err['msg']}"
            for err in exc.errors())
        raise ConfigError(f"{path}: invalid sweep section: {problems}") from None
    grid = {key: [_text(v) for v in values] for key, values in (section.grid or {}).items()}
    return check_grid(grid), section.seeds


def plan(grid: Grid, seeds: Sequence[int]) -> list[SweepCell]:
    """The cartesian product of the grid, each point on every seed, seed by seed (a seed's
    cells share their upstream stages, so they start together)."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"sweep seeds must be distinct and not empty; got {list(seeds)}")
    keys = list(grid)
    points = [tuple(zip(keys, values, strict=True))
              for values in itertools.product(*(grid[k] for k in keys))]
    return [SweepCell(point, seed) for seed in seeds for point in points]


def _by_point(cells: list[dict[str, Any]]) -> list[tuple[dict[str, str], list[dict[str, Any]]]]:
    """Cells grouped by grid point, points in first-seen order."""
    groups: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault(tuple(cell["point"].items()), []).append(cell)
    return [(dict(point), members) for point, members in groups.items()]


def results_table(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per grid point: its values, the seeds that finished, and for every metric the
    cells reported, `<metric>.mean` and `<metric>.std` (sample std over seeds; 0 for one seed).
    `cells`: `{"point": {key: value}, "seed", "metrics": {name: value}}`; a failed cell has
    `"error"` instead and is counted under `failed`."""
    rows = []
    for point, members in _by_point(cells):
        done = [c for c in members if "error" not in c]
        row: dict[str, Any] = {**point, "seeds": ",".join(str(c["seed"]) for c in done),
                               "failed": len(members) - len(done)}
        for name in sorted({m for c in done for m in c["metrics"]}):
            values = [c["metrics"][name] for c in done if name in c["metrics"]]
            row[f"{name}.mean"], row[f"{name}.std"] = mean_std(values)
        rows.append(row)
    return pd.DataFrame(rows)


def render(cells: list[dict[str, Any]], keys: Sequence[str]) -> str:
    """The terminal table: a line per grid point, test accuracy and macro F1 as mean ± std."""
    lines = [[*keys, "seeds", *(m.removeprefix("test.") for m in SHOWN)]]
    for point, members in _by_point(cells):
        done = [c for c in members if "error" not in c]
        failed = len(members) - len(done)
        shown = [format_mean_std([c["metrics"][m] for c in done]) if done else "-"
                 for m in SHOWN]
        count = f"{len(done)}" + (f" ({failed} failed)" if failed else "")
        lines.append([*(point[k] for k in keys), count, *shown])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def plan_sweep(config: str | None, overrides: list[str], grid: Grid | None,
               seeds: list[int] | None) -> tuple[Grid, list[int], list[SweepCell]]:
    """The grid (the config file's `sweep.grid`, then the command line's keys on top), the seeds
    (command line, `sweep.seeds`, or the config's seed) and the cells; every cell's config is
    validated here, before anything runs (a bad value names its cell)."""
    file_grid, file_seeds = read_sweep_section(config)
    grid = {**file_grid, **(grid or {})}
    seeds = list(seeds or file_seeds or [load_config(config, overrides).seed])
    cells = plan(grid, seeds)
    for cell in cells:
        try:
            load_config(config, [*overrides, *cell.overrides()])
        except ValueError as exc:
            raise type(exc)(f"sweep cell {cell.name}: {exc}") from None
    return grid, seeds, cells
