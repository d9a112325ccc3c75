"""Study specs: a base config, the axes to sweep, and the seeds, expanded into trials.

A spec is a YAML file (or a built-in name, or a dict)::

    name: randman-surrogates
    base: randman                 # built-in config name, YAML path, or an inline mapping
    set:                          # overrides applied to the base for every trial
      training.epochs: 20
    axes:                         # the Cartesian product of these, in this order
      surrogate.name: [superspike, sigmoid, esser]
      surrogate.slope: {log: [0.1, 1000], num: 8}
      training.learning_rate: {linear: [1.0e-3, 3.0e-3], num: 3}
    zip:                          # groups of axes that vary together (equal lengths);
      - model.hidden.0.size: [50, 100]     # each group is one more product dimension
        training.batch_size: [128, 256]
    seeds: [0, 1]                 # or: repeats: 2 (seeds base.seed, base.seed + 1)
    metric: test_accuracy         # what "best" means (maximised)

``load_study_spec(source).trials()`` returns one validated
:class:`TrialConfig` per grid point and seed; configs that hash alike collapse.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from spikegrad.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    builtin_names,
    flatten_paths,
    format_validation_error,
    get_path,
    parse_overrides,
    read_config_source,
    read_yaml_source,
)
from spikegrad.errors import GridTooLargeError
from spikegrad.schema import Float, PositiveInt, Seed, Strict

# final metrics of a trial that a spec may name as its objective (all maximised or minimised)
METRICS = {
    "test_accuracy": "max", "valid_accuracy": "max", "train_accuracy": "max",
    "test_loss": "min", "valid_loss": "min", "train_loss": "min",
}


MAX_TRIALS = 100_000
"""Grids larger than this are refused unless forced (expanding one takes minutes and GBs)."""


class TrialConfig(ExperimentConfig):
    """An :class:`ExperimentConfig` that knows its study and its axis values.

    The extra attributes are private: they are not part of ``to_dict()`` nor of
    ``config_hash()``, so a trial hashes exactly like the plain config.
    """

    _study: str = PrivateAttr(default="")
    _axes: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def study(self) -> str:
        return self._study

    @property
    def axes(self) -> dict[str, Any]:
        """Axis values of this trial (dotted config path -> value), seed included."""
        return dict(self._axes)

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._axes.items())


class AxisRange(Strict):
    """``{log: [low, high], num: n}`` or ``{linear: [low, high], num: n}`` (both ends included).

    Values are rounded to 12 significant digits so that they print and hash cleanly;
    ``integer: true`` rounds them to whole numbers (repeats then collapse).
    """

    log: tuple[Float, Float] | None = None
    linear: tuple[Float, Float] | None = None
    num: PositiveInt
    integer: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> AxisRange:
        if (self.log is None) == (self.linear is None):
            raise ValueError("give exactly one of log: [low, high] or linear: [low, high]")
        if self.log is not None and min(self.log) <= 0:
            raise ValueError(f"log range needs positive ends, got {list(self.log)}")
        return self

    def values(self) -> list[Any]:
        low, high = self.log if self.log is not None else self.linear
        n = self.num
        out = []
        for i in range(n):
            t = i / (n - 1) if n > 1 else 0.0
            if self.log is not None:
                value = math.exp(math.log(low) + t * (math.log(high) - math.log(low)))
            else:
                value = low + t * (high - low)
            if i == n - 1 and n > 1:
                value = high
            out.append(int(round(value)) if self.integer else float(f"{value:.12g}"))
        return out


AxisValues = list[Any] | AxisRange


class EarlyStopping(Strict):
    """Median stopping rule (off unless the spec has an ``early_stopping`` section).

    A trial is stopped after epoch ``e >= grace_epochs`` when its best validation
    accuracy so far is below the median, over at least ``min_trials`` finished trials
    of the study, of their best validation accuracy up to epoch ``e``. A stopped trial
    is recorded with status ``stopped`` and the metrics of its best epoch. Which trials
    stop depends on the order in which trials finish, so leave it off for exact
    reproduction studies.
    """

    rule: Literal["median"] = "median"
    grace_epochs: PositiveInt = 3
    min_trials: PositiveInt = 5


class Selection(Strict):
    """Choose one value of an axis for every point of the other axes, by validation accuracy,
    with successive halving (the way the paper took each condition at its best learning
    rate, at a fraction of a full grid's cost).

    Rung: every value is trained on the first ``rung_seeds`` seeds for ``rung_epochs``
    epochs (trials that end sooner count as they are); the value whose best validation
    accuracy up to then, averaged over those seeds, is highest is chosen. Values tied on it
    (as when every one is still at chance) are told apart by the mean of their lowest
    validation loss, then by their order. Then every seed of the spec is trained at the
    chosen value to its end. Test data are never looked at; the choices and their scores are
    stored in the database.
    """

    axis: str
    values: AxisValues
    rung_epochs: PositiveInt
    rung_seeds: PositiveInt = 2

    @model_validator(mode="after")
    def _some_values(self) -> Selection:
        if _axis_length(self.values) == 0:
            raise ValueError(f"no values to choose from for {self.axis!r}")
        return self


class StudySpec(Strict):
    """A validated study spec; :meth:`trials` expands it."""

    name: str = Field(min_length=1)
    description: str = ""
    base: str | dict[str, Any]
    set: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, AxisValues] = Field(default_factory=dict)
    zip: list[dict[str, AxisValues]] = Field(default_factory=list)
    seeds: list[Seed] | None = None
    repeats: PositiveInt | None = None
    metric: str = "test_accuracy"
    cpus_per_trial: PositiveInt = 1
    early_stopping: EarlyStopping | None = None
    select: Selection | None = None

    # where relative paths in ``base`` are looked up (the spec file's folder)
    _origin: str = PrivateAttr(default="study spec")
    _folder: Path | None = PrivateAttr(default=None)
    _trials: list[TrialConfig] | None = PrivateAttr(default=None)
    _force: bool = PrivateAttr(default=False)  # expand grids above MAX_TRIALS

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if name.strip() != name or "\n" in name:
            raise ValueError("must not start or end with spaces")
        return name

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
        return metric

    @field_validator("axes")
    @classmethod
    def _nonempty_axes(cls, axes: dict[str, Any]) -> dict[str, Any]:
        for key, values in axes.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"axis {key!r} has no values")
        return axes

    @field_validator("zip")
    @classmethod
    def _equal_lengths(cls, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, group in enumerate(groups):
            if not group:
                raise ValueError(f"group {i} is empty")
            lengths = {key: _axis_length(v) for key, v in group.items()}
            if len(set(lengths.values())) > 1:
                detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
                raise ValueError(f"group {i}: zipped axes need equal lengths ({detail})")
            if 0 in lengths.values():
                raise ValueError(f"group {i}: an axis has no values")
        return groups

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        if self.seeds is not None and self.repeats is not None:
            raise ValueError("seeds and repeats: give one of them, not both")
        if self.seeds is not None and not self.seeds:
            raise ValueError("seeds: the list is empty")
        keys = list(self.axes) + [k for group in self.zip for k in group]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"axes: {duplicates[0]!r} is swept more than once")
        if (self.seeds is not None or self.repeats is not None) and "seed" in keys:
            raise ValueError("seeds: 'seed' is also an axis; sweep it in one place only")
        if self.select is not None:
            if self.select.axis in keys or self.select.axis == "seed":
                raise ValueError(f"select: {self.select.axis!r} is also an axis; sweep it in "
                                 "one place only")
            n_seeds = (len(self.seeds) if self.seeds is not None else self.repeats
                       if self.repeats is not None else 1)  # none given: the base config's
            if n_seeds < self.select.rung_seeds:
                raise ValueError(f"select: rung_seeds is {self.select.rung_seeds}, but the "
                                 f"spec has {n_seeds} seed{'s' if n_seeds != 1 else ''}")
        return self

    # -- expansion -----------------------------------------------------------------------

    def base_dict(self) -> dict[str, Any]:
        """The base config as a plain dict, ``set`` overrides applied (not yet validated)."""
        if isinstance(self.base, dict):
            raw = copy.deepcopy(self.base)
        else:
            source: str | Path = self.base
            if self._folder is not None and (self._folder / self.base).is_file():
                source = self._folder / self.base
            raw = read_config_source(source)
        try:
            return apply_overrides(raw, flatten_paths(self.set))
        except ConfigError as error:
            raise ConfigError(f"{self._origin}: set: {error}") from None

    def grid_points(self) -> list[dict[str, Any]]:
        """Axis values of every grid point (product of axes and zip groups, then the
        selected axis, then seeds)."""
        dimensions = self._condition_dimensions()
        if self.select is not None:
            dimensions.append([{self.select.axis: v} for v in self.selection_values()])
        seeds = self.seed_values()
        if seeds is not None:
            dimensions.append([{"seed": s} for s in seeds])
        return _product(dimensions)

    def conditions(self) -> list[dict[str, Any]]:
        """The grid points without seeds and without the selected axis (values as the
        validated configs hold them): what a selection chooses a value for (one point,
        ``{}``, when nothing else is swept)."""
        seen: dict[str, dict[str, Any]] = {}
        for trial in self.trials():
            condition = self.condition_of(trial)
            seen.setdefault(condition_key(condition), condition)
        return list(seen.values())

    def selection_values(self) -> list[Any]:
        return _axis_values(self.select.values) if self.select is not None else []

    def _condition_dimensions(self) -> list[list[dict[str, Any]]]:
        dimensions: list[list[dict[str, Any]]] = [
            [{key: value} for value in _axis_values(values)] for key, values in self.axes.items()
        ]
        for group in self.zip:
            columns = {key: _axis_values(values) for key, values in group.items()}
            length = len(next(iter(columns.values())))
            dimensions.append([{k: v[i] for k, v in columns.items()} for i in range(length)])
        return dimensions

    def rung_trials(self) -> list[TrialConfig]:
        """With a selection: every value of the selected axis on the rung seeds."""
        rung_seeds = set((self.seed_values() or [])[: self.select.rung_seeds])
        return [t for t in self.trials() if t.axes.get("seed") in rung_seeds]

    def chosen_trials(self, choices: dict[str, Any]) -> list[TrialConfig]:
        """With a selection: every seed at the value chosen for each condition
        (``choices``: :func:`condition_key` -> value; conditions not yet chosen: none)."""
        axis = self.select.axis
        return [t for t in self.trials()
                if condition_key(self.condition_of(t)) in choices
                and t.axes[axis] == choices[condition_key(self.condition_of(t))]]

    def condition_of(self, trial: TrialConfig) -> dict[str, Any]:
        excluded = {"seed"} | ({self.select.axis} if self.select is not None else set())
        return {k: v for k, v in trial.axes.items() if k not in excluded}

    def seed_values(self) -> list[int] | None:
        if self.seeds is not None:
            return list(self.seeds)
        if self.repeats is not None:
            first = int(self.base_dict().get("seed", 0))
            return [first + i for i in range(self.repeats)]
        return None

    def grid_size(self) -> int:
        """How many grid points the spec has (configs that hash alike not yet collapsed),
        counted without expanding it: the product of the axis lengths, zip groups, selected
        values and seeds."""
        lengths = [_axis_length(values)
                   for values in [*self.axes.values(),
                                  *(next(iter(group.values())) for group in self.zip),
                                  *([self.select.values] if self.select is not None else [])]]
        seeds = self.seeds if self.seeds is not None else range(self.repeats or 1)
        return math.prod(lengths) * len(seeds)

    def check_size(self) -> None:
        """Refuse (a :class:`ConfigError`) a grid above :data:`MAX_TRIALS` unless forced."""
        size = self.grid_size()
        if size > MAX_TRIALS and not self._force:
            raise GridTooLargeError(f"{self._origin}: the grid has {size:,} trials, more "
                                    f"than {MAX_TRIALS:,}")

    def trials(self) -> list[TrialConfig]:
        """Every trial, validated, in grid order; configs with equal hashes appear once.
        A grid of more than :data:`MAX_TRIALS` points is refused before it is expanded
        (:meth:`check_size`)."""
        if self._trials is None:
            self.check_size()
            base = self.base_dict()
            trials, seen = [], set()
            for point in self.grid_points():
                trial = self._make_trial(base, point)
                digest = trial.config_hash()
                if digest not in seen:
                    seen.add(digest)
                    trials.append(trial)
            self._trials = trials
        return list(self._trials)

    def _make_trial(self, base: dict[str, Any], point: dict[str, Any]) -> TrialConfig:
        label = ", ".join(f"{k}={v}" for k, v in point.items())
        try:
            raw = apply_overrides(base, point)
            trial = TrialConfig.model_validate(raw)
        except ConfigError as error:
            raise ConfigError(f"{self._origin}: {error} (trial {label})") from None
        except ValidationError as error:
            where = f" (trial {label})" if point else ""
            raise ConfigError(format_validation_error(error, source=self._origin) + where
                              ) from None
        dumped = trial.to_dict()
        trial._study = self.name
        trial._axes = {key: get_path(dumped, key) for key in point}
        return trial

    def axis_names(self) -> list[str]:
        names = list(self.axes) + [k for group in self.zip for k in group]
        if self.select is not None:
            names.append(self.select.axis)
        if self.seeds is not None or self.repeats is not None:
            names.append("seed")
        return names

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def condition_key(condition: dict[str, Any]) -> str:
    """A condition's canonical key (JSON, keys sorted): how selections are stored."""
    return json.dumps(condition, sort_keys=True)


def _product(dimensions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    points = []
    for combination in itertools.product(*dimensions):
        point: dict[str, Any] = {}
        for part in combination:
            point.update(part)
        points.append(point)
    return points


def _axis_length(values: AxisValues) -> int:
    return values.num if isinstance(values, AxisRange) else len(values)


def _axis_values(values: AxisValues) -> list[Any]:
    return values.values() if isinstance(values, AxisRange) else list(values)


# ---------------------------------------------------------------------------------------
# Loading


def builtin_study_names() -> list[str]:
    return builtin_names("studies")


def load_study_spec(
    source: str | Path | dict[str, Any] | StudySpec,
    overrides: list[str] | dict[str, Any] | None = None,
    force: bool = False,
) -> StudySpec:
    """Load and validate a study spec; every trial config is validated too.

    ``source``: a YAML path, a built-in study name (``spikegrad study list``), a dict
    or a spec. ``overrides`` (``["training.epochs=5"]`` or ``{"training.epochs": 5}``)
    change the base config of every trial, after the spec's own ``set``. A grid of more
    than :data:`MAX_TRIALS` trials is refused, counted before it is expanded, unless
    ``force``. Raises :class:`~spikegrad.config.ConfigError` with one line naming the field.
    """
    folder: Path | None = None
    if isinstance(source, StudySpec):
        raw, origin, folder = source.to_dict(), source._origin, source._folder
    elif isinstance(source, dict):
        raw, origin = copy.deepcopy(source), "study spec"
    else:
        raw, origin, folder = read_yaml_source(source, "studies", "study", "study spec",
                                               empty=False)
    if overrides and isinstance(raw.get("set") or {}, dict):  # else validation reports "set"
        raw = dict(raw)
        raw["set"] = {**flatten_paths(raw.get("set") or {}), **dict(parse_overrides(overrides))}
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source=origin)) from None
    spec._origin, spec._folder, spec._force = origin, folder, force
    spec.trials()  # validate every trial now: errors surface before anything runs
    return spec


def dump_spec_yaml(spec: StudySpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
