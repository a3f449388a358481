"""Hyperparameter search as data: a search space over dotted config keys, what a trial's sampled
values are as overrides, and the best trial's config as a file. Optuna itself (the sampler, the
pruner, the study) is driven by `flows/tune.py`; a trial here is anything with Optuna's
`suggest_float` / `suggest_int` / `suggest_categorical`.

A parameter is `key=kind:spec` on the command line (`--param training.lr=log:1e-4:1e-1`) or
`key: kind:spec` in a config file's `tune.params` section:

- `float:LOW:HIGH`, `log:LOW:HIGH` (log-uniform), `int:LOW:HIGH` (inclusive);
- `cat:A,B,...`: one of the values (each read as YAML: `cat:16,32` are integers).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmcore.config import ConfigError, load_config
from mmcore.experiments.grid import RESERVED, file_section

Kind = Literal["float", "log", "int", "cat"]


class Param(BaseModel):
    """One searched setting: a range (`low`, `high`) or `choices`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _complete(self) -> Param:
        if self.kind == "cat":
            if not self.choices or len(set(map(repr, self.choices))) != len(self.choices):
                raise ValueError("cat needs distinct values: cat:A,B,...")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.kind} needs LOW < HIGH: {self.kind}:LOW:HIGH")
        elif self.kind == "log" and self.low <= 0:
            raise ValueError("log needs LOW > 0")
        elif self.kind == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError("int needs whole LOW and HIGH")
        return self

    @classmethod
    def parse(cls, text: str) -> Param:
        """`log:1e-4:1e-1`, `int:16:128`, `cat:late,concat` -> a Param."""
        kind, _, spec = str(text).partition(":")
        kind = kind.strip()
        if kind == "cat":
            return cls(kind="cat", choices=tuple(_scalar(v) for v in spec.split(",")))
        low, sep, high = spec.partition(":")
        try:
            return cls(kind=kind, low=float(low), high=float(high)) if sep else cls(kind=kind)
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                raise
            raise ValueError(f"LOW and HIGH must be numbers, got {spec!r}") from None

    def extremes(self) -> list[Any]:
        """The values at the ends of the range (or every choice): each must make a valid
        config."""
        if self.kind == "cat":
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]


def _scalar(text: str) -> Any:
    """A choice as YAML reads it, and `1e-4` as a number (YAML 1.1 wants `1.0e-4`)."""
    value = yaml.safe_load(text.strip() or "''")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Space = dict[str, Param]
# What a trial's value is, all on the val split: its accuracy (at the kept epoch; after late
# fusion's weights or the fallback are fitted), or its robustness curves' mean or lowest point
# (`mmcore.stages.robustness_curves.val_robustness`: multimodal trials only).
Metric = Literal["val_acc", "val_acc_after_calibration", "val_robust_mean", "val_robust_worst"]


class TuneSection(BaseModel):
    """A config file's `tune:` section; the command line's options override it."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, str] = {}
    trials: int = Field(20, ge=1)
    metric: Metric = "val_acc"
    # pruning: trials that must finish first, and epochs every trial runs before it may stop
    prune_after_trials: int = Field(2, ge=0)
    prune_warmup_epochs: int = Field(1, ge=0)


def parse_space(items: Iterable[str], where: str = "--param") -> Space:
    """`["training.lr=log:1e-4:1e-1"]` -> {"training.lr": Param(...)}; one-line errors."""
    space: Space = {}
    for item in items:
        key, sep, spec = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{where} {item!r}: expected key=kind:spec, e.g. "
                              "training.lr=log:1e-4:1e-1")
        if key in space:
            raise ConfigError(f"{where} {key}: given twice")
        if key in RESERVED:
            raise ConfigError(f"{where} {key}: cannot be searched")
        try:
            space[key] = Param.parse(spec)
        except ValidationError as exc:
            raise ConfigError(f"{where} {key}: {exc.errors()[0]['msg']}") from None
        except ValueError as exc:
            raise ConfigError(f"{where} {key}: {exc}") from None
    return space


def read_tune_section(path: str | Path | None) -> TuneSection:
    """The `tune:` section of a config file, or the defaults without one."""
    raw = file_section(path, "tune")
    try:
        return TuneSection.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(['tune', *(str(p) for p in e['loc'])])}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"{path}: invalid tune section: {problems}") from None


def plan_search(config: str | None, overrides: list[str], params: list[str],
                ) -> tuple[Space, TuneSection]:
    """The search space (the file's `tune.params`, then `--param`s, which replace a key) and
    the section, checked before any work: every range's ends and every choice must make a
    valid config."""
    section = read_tune_section(config)
    space = parse_space([f"{k}={v}" for k, v in section.params.items()], "tune.params:")
    space |= parse_space(params)
    if not space:
        raise ConfigError("nothing to search: give --param KEY=KIND:SPEC or a tune.params "
                          "section in the config file")
    for key, param in space.items():
        for value in param.extremes():
            load_config(config, [*overrides, override(key, value)])
    return space, section


def override(key: str, value: Any) -> str:
    """One sampled value as a `key=value` override (JSON is YAML: read back with its type;
    the config turns `1e-07` into a float where it wants one)."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """A value per key from an Optuna trial (the sampler chooses)."""
    values = {}
    for key, p in space.items():
        if p.kind == "cat":
            values[key] = trial.suggest_categorical(key, list(p.choices))
        elif p.kind == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high))
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, log=p.kind == "log")
    return values


def best_config(config: str | None, overrides: list[str], values: dict[str, Any]) -> str:
    """The whole config of a trial as YAML, loadable by `mmpipe run --config`."""
    cfg = load_config(config, [*overrides, *(override(k, v) for k, v in values.items())])
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
