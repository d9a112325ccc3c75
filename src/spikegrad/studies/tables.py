"""Summaries of a study's trials (as :meth:`~spikegrad.studies.db.ResultsDB.trials` returns
them): the best trial per value of some config fields."""

from __future__ import annotations

import math
import statistics
from typing import Any

from spikegrad.config import get_path
from spikegrad.errors import ConfigError
from spikegrad.studies.spec import METRICS


def best_by(trials: list[dict[str, Any]], fields: list[str], metric: str) -> list[dict[str, Any]]:
    """Per combination of ``fields`` values (axes or dotted config paths such as
    ``surrogate.name``): the best and mean ``metric`` and the best trial, best group first.
    Trials without a finite ``metric`` are left out. A field that is not a value of the
    trials' configs is a :class:`~spikegrad.errors.ConfigError` whose message starts with
    the field."""
    if metric not in METRICS:
        raise ConfigError(f"metric: unknown metric {metric!r} (known: {', '.join(METRICS)})")
    maximise = METRICS[metric] == "max"
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for trial in trials:
        if not finite_number(trial.get(metric)):
            continue
        key = tuple(field_value(trial, f) for f in fields)
        groups.setdefault(key, []).append(trial)
    rows = []
    for key, members in groups.items():
        values = [t[metric] for t in members]
        best = (max if maximise else min)(members, key=lambda t: t[metric])
        rows.append({
            "group": dict(zip(fields, key, strict=True)), "metric": metric, "best": best[metric],
            "mean": statistics.fmean(values), "n": len(values),
            "config_hash": best["config_hash"], "study": best["study"], "axes": best["axes"],
            "status": best["status"],
        })
    rows.sort(key=lambda r: -r["best"] if maximise else r["best"])
    return rows


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (a metric that a trial has)."""
    return isinstance(value, int | float) and math.isfinite(value)


def field_value(trial: dict[str, Any], path: str) -> Any:
    """The value of ``path`` for ``trial``: its axis of that name, else the value at that
    dotted path of its config."""
    if path in trial["axes"]:
        return trial["axes"][path]
    try:
        node = get_path(trial["config"], path)
    except (KeyError, IndexError, TypeError, ValueError):
        raise ConfigError(f"{path}: no such config field") from None
    if isinstance(node, dict | list):
        raise ConfigError(f"{path}: is a section, not a value")
    return node
