"""The paper's studies (protocol section 6) as study specs, at three sizes.

Every condition (a grid point: a surrogate at a slope, a readout on a data set, a
regulariser strength) is trained on every seed of the profile at the learning rate chosen
for it on validation accuracy from the paper's grid (1e-3 .. 0.1), by successive halving
(:class:`spikegrad.studies.spec.Selection`): all rates on the first seeds for a few epochs,
then every seed at the best one. Trials train until their validation accuracy stops
improving (the configs' patience rule), within an epoch budget.

Profiles:

- ``default``: the main job, every study on two CPU cores in about half an hour; the paper's
  Randman size (1000 samples per class), 5 seeds, slopes on a half-decade grid; what does not
  fit the half hour is left to ``paper`` and named in the profile's description.
- ``paper``: the paper's grids (13 slopes, 7 scale slopes, 12 regulariser strengths), 10
  seeds and longer rungs; for a cluster (``--address``).
- ``smoke``: seconds, on tiny data; for tests, not for conclusions.

Beyond the paper, the ``init`` study (:func:`init_specs`, run only when named): networks of
1, 3 and 5 hidden layers under the uniform, Gaussian and fluctuation-driven initialisations
(Rossbroich, Gygax & Zenke 2022) over a grid of σ_U; each profile sizes it in its
:class:`InitGrid`.

Every spec is a plain dict in the format of :mod:`spikegrad.studies.spec`; the report
states the profile.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any

from spikegrad.config import apply_overrides, read_config_source
from spikegrad.errors import ArgumentError

STUDY_NAMES = ("shape-slope", "scale", "readout", "regularisation")
"""The paper's studies: what ``spikegrad reproduce`` runs by default."""
EXTENSION_NAMES = ("init",)
"""Studies beyond the paper (the report's extension part); run when named."""
INIT_SCHEMES = ("uniform", "gaussian", "fluctuation")

PAPER_LEARNING_RATES = [1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1]
"""The learning-rate grid read from the paper's Fig. 3b (10^-3 <= η <= 0.1)."""

# Architectures of the scale study: (recurrent, detach_reset, recurrent_gradient)
FF_DETACHED = {"recurrent": False, "detach_reset": True, "recurrent_gradient": True}
FF_RESET = {"recurrent": False, "detach_reset": False, "recurrent_gradient": True}
RC_DETACHED = {"recurrent": True, "detach_reset": True, "recurrent_gradient": False}
RC_THROUGH = {"recurrent": True, "detach_reset": True, "recurrent_gradient": True}
RC_RESET = {"recurrent": True, "detach_reset": False, "recurrent_gradient": True}
RC_RESET_DETACHED_RECURRENCE = {"recurrent": True, "detach_reset": False,
                                "recurrent_gradient": False}


def half_decades(low: float, high: float) -> list[float]:
    """The grid 10^(k/2) from ``low`` to ``high`` (3 significant digits: 0.316, 1, 3.16, ...)."""
    first, last = round(2 * math.log10(low)), round(2 * math.log10(high))
    return [float(f"{10 ** (k / 2):.3g}") for k in range(first, last + 1)]


@dataclass(frozen=True)
class InitData:
    """One data set of the ``init`` study: overrides of its config, the σ_U grid of the
    fluctuation scheme and the depths (hidden layers, each a copy of the config's)."""

    overrides: dict[str, Any]
    sigma_u: list[float]
    depths: list[int]


@dataclass(frozen=True)
class InitGrid:
    """The ``init`` study under a profile (Rossbroich, Gygax & Zenke 2022): per data set,
    every depth under each of :data:`INIT_SCHEMES` (the fluctuation scheme at every σ_U of
    the grid, μ_U = 0), each condition at its best of ``learning_rates`` by successive
    halving, on ``seeds``."""

    description: str
    data: dict[str, InitData]
    seeds: list[int]
    learning_rates: list[float]
    rung_epochs: int
    rung_seeds: int


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    seeds: list[int]
    learning_rates: list[float]
    rung_epochs: int                 # successive halving over the learning rates
    rung_seeds: int
    slopes: list[float]              # study 1
    scale_slopes: list[float]        # study 2
    scale_conditions: list[dict[str, bool]]
    regularisation_strengths: list[float]
    randman: dict[str, Any] = field(default_factory=dict)  # overrides of the randman config
    data_overrides: dict[str, Any] = field(default_factory=dict)  # of the other data sets
    readout_data: list[str] | None = None  # None: every data set available here ...
    readout_skip: dict[str, str] = field(default_factory=dict)  # ... but these (why)
    init: InitGrid | None = None  # the init study (beyond the paper)


PROFILES: dict[str, Profile] = {
    "default": Profile(
        name="default",
        description=(
            "The paper's Randman (1000 samples per class, 800/100/100) and networks; 5 seeds; "
            "each condition at its best of the paper's 6 learning rates (1e-3..0.1) by "
            "successive halving (all rates on the first seed for 5 epochs, as the paper's "
            "one run per grid cell, then every seed at the best); trials train until the "
            "validation accuracy has not improved by 0.005 for 10 epochs (at most 100); "
            "slopes 1..100 on a half-decade grid (5); the scale study at slope 100 for "
            "feed-forward networks with the reset detached or in BPTT (the paper's Fig. 5a-c); "
            "5 regulariser strengths; readout with feed-forward and recurrent networks on "
            "Randman, the 8x8 digits and the spoken digits as current. What the paper profile "
            "adds (slopes 0.1..1000, recurrent networks in the scale study, the spoken digits "
            "as spikes, more seeds and strengths) costs more than this profile's half hour on "
            "two cores: each recurrent Randman condition costs about 5 min of one core, each "
            "slope about 6."
        ),
        seeds=[0, 1, 2, 3, 4],
        learning_rates=PAPER_LEARNING_RATES,
        rung_epochs=5,
        rung_seeds=1,
        slopes=half_decades(1.0, 100.0),
        scale_slopes=[100.0],
        scale_conditions=[FF_DETACHED, FF_RESET],
        regularisation_strengths=[0.0, 0.1, 1.0, 10.0, 100.0],
        readout_skip={"spoken-digits": "in the paper profile only: its recurrent network on "
                                       "700 input channels costs about 1.2 s per epoch, a "
                                       "third of this profile's half hour"},
        init=InitGrid(
            description=(
                "Randman with 300 samples per class (240/30/30) and the spoken digits as "
                "current, each with its own network (Randman: feed-forward, 100 neurons per "
                "layer; digits: recurrent, 128) at 1, 3 and 5 hidden layers; uniform (the "
                "paper's), Gaussian N(0, 1/fan_in) and fluctuation-driven init (μ_U = 0; σ_U "
                "0.25, 1, 4 on Randman, 1 on the digits); 3 seeds; each condition at its best "
                "of 4 of the paper's learning rates (1e-3, 5e-3, 2e-2, 5e-2) by successive "
                "halving (5 epochs on the first seed); trials train until the validation "
                "accuracy has not improved by 0.005 for 10 epochs (at most 100); about 20 min "
                "on two cores. What the paper profile adds costs well over half an hour on "
                "two cores: one epoch of a 5-layer network costs 1.2 s of one core on this "
                "Randman (about 3.3 times that at the paper's 1000 samples per class) and 1.7 s "
                "on the digits, and deep networks train for about 55 (Randman) and 26 (digits) "
                "epochs."
            ),
            data={"randman": InitData({"data.samples_per_class": 300}, [0.25, 1.0, 4.0],
                                      [1, 3, 5]),
                  "spoken-digits-current": InitData({}, [1.0], [1, 3, 5])},
            seeds=[0, 1, 2],
            learning_rates=[1e-3, 5e-3, 2e-2, 5e-2],
            rung_epochs=5,
            rung_seeds=1,
        ),
    ),
    "paper": Profile(
        name="paper",
        description=(
            "The paper's grids: 13 slopes over 0.1..1000, 7 in the scale study for 6 "
            "architectures, 12 regulariser strengths; 10 seeds; successive halving with "
            "rungs of 20 epochs on 3 seeds; for a cluster."
        ),
        seeds=list(range(10)),
        learning_rates=PAPER_LEARNING_RATES,
        rung_epochs=20,
        rung_seeds=3,
        slopes=[0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
        scale_slopes=[1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0],
        scale_conditions=[FF_DETACHED, FF_RESET, RC_DETACHED, RC_THROUGH, RC_RESET,
                          RC_RESET_DETACHED_RECURRENCE],
        regularisation_strengths=[0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0,
                                  30.0, 100.0],
        init=InitGrid(
            description=(
                "The paper's Randman (1000 samples per class) and both spoken-digit "
                "paradigms, 1, 3 and 5 hidden layers, σ_U 0.25..4 in octaves for every data "
                "set, 10 seeds, the paper's 6 learning rates with rungs of 20 epochs on 3 "
                "seeds; for a cluster."
            ),
            data={name: InitData({}, [0.25, 0.5, 1.0, 2.0, 4.0], [1, 3, 5])
                  for name in ("randman", "spoken-digits-current", "spoken-digits")},
            seeds=list(range(10)),
            learning_rates=PAPER_LEARNING_RATES,
            rung_epochs=20,
            rung_seeds=3,
        ),
    ),
    "smoke": Profile(
        name="smoke",
        description="A seconds-long run of the whole pipeline on tiny data; not for conclusions.",
        seeds=[0, 1],
        learning_rates=[0.01, 0.05],
        rung_epochs=1,
        rung_seeds=1,
        slopes=[1.0, 100.0],
        scale_slopes=[100.0],
        scale_conditions=[FF_DETACHED, FF_RESET],
        regularisation_strengths=[0.0, 10.0],
        randman={"data.samples_per_class": 30, "time.n_steps": 40, "training.epochs": 2,
                 "training.batch_size": 50, "model.hidden.0.size": 32},
        data_overrides={"training.epochs": 1},
        readout_data=["randman"],
        init=InitGrid(
            description="A seconds-long run of the init study on tiny Randman networks.",
            data={"randman": InitData({"data.samples_per_class": 30, "time.n_steps": 40,
                                       "training.epochs": 2, "training.batch_size": 50,
                                       "model.hidden.0.size": 16}, [0.5, 1.0, 2.0], [1, 5])},
            seeds=[0, 1],
            learning_rates=[0.01, 0.05],
            rung_epochs=1,
            rung_seeds=1,
        ),
    ),
}


def _base(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return apply_overrides(read_config_source(name), overrides)


def _condition_zip(conditions: list[dict[str, bool]]) -> dict[str, list[bool]]:
    return {f"model.hidden.0.{key}": [c[key] for c in conditions]
            for key in ("recurrent", "detach_reset", "recurrent_gradient")}


def _spec(profile: Profile, role: str, description: str, base: dict[str, Any],
          **grid: Any) -> dict[str, Any]:
    """A spec of ``role`` with the profile's seeds and learning-rate selection."""
    return {
        "name": f"{profile.name}-{role.replace('/', '-')}",
        "description": description,
        "base": base,
        **grid,
        "seeds": list(profile.seeds),
        "select": {"axis": "training.learning_rate", "values": list(profile.learning_rates),
                   "rung_epochs": profile.rung_epochs, "rung_seeds": profile.rung_seeds},
    }


def shape_slope_specs(profile: Profile) -> dict[str, dict[str, Any]]:
    base = _base("randman", profile.randman)
    return {
        "shape-slope": _spec(profile, "shape-slope",
                             "Accuracy vs surrogate slope for SuperSpike, sigmoid' and Esser.",
                             base, axes={"surrogate.name": ["superspike", "sigmoid", "esser"],
                                         "surrogate.slope": list(profile.slopes)}),
        "controls": _spec(profile, "controls",
                          "Controls: the true gradient (zero a.e.) and a constant surrogate.",
                          base, axes={"surrogate.name": ["true", "constant"]}),
    }


def scale_specs(profile: Profile) -> dict[str, dict[str, Any]]:
    return {"scale": _spec(
        profile, "scale",
        "Normalised vs asymptotic SuperSpike, for feed-forward and recurrent networks with and "
        "without gradients through the reset and the recurrence.",
        _base("randman", profile.randman),
        axes={"surrogate.name": ["superspike", "superspike_asymptotic"],
              "surrogate.slope": list(profile.scale_slopes)},
        zip=[_condition_zip(profile.scale_conditions)])}


def readout_specs(profile: Profile, data_sets: list[str]) -> dict[str, dict[str, Any]]:
    specs = {}
    for data_set in data_sets:
        overrides = profile.randman if data_set == "randman" else profile.data_overrides
        specs[f"readout/{data_set}"] = _spec(
            profile, f"readout/{data_set}",
            f"Readout max vs sum over time, feed-forward vs recurrent, {data_set}.",
            _base(data_set, overrides),
            axes={"model.readout.reduction": ["max", "sum"],
                  "model.hidden.0.recurrent": [False, True]})
    return specs


def regularisation_specs(profile: Profile) -> dict[str, dict[str, Any]]:
    base = _base("randman", {**profile.randman,
                             "model.hidden.0.activity.upper_rate": 0.0,
                             "model.hidden.0.activity.upper_exponent": 2.0})
    return {"regularisation": _spec(
        profile, "regularisation",
        "Accuracy vs hidden spikes over a range of upper-bound strengths (the lower bound on, "
        "as everywhere).",
        base, axes={"model.hidden.0.activity.upper_strength":
                    list(profile.regularisation_strengths)})}


def init_specs(profile: Profile, data_sets: list[str] | None = None
               ) -> dict[str, dict[str, Any]]:
    """The ``init`` study: one spec per data set and depth (role ``init/<data set>/<depth>``),
    its conditions the init schemes (the fluctuation scheme once per σ_U; σ_U is read by that
    scheme only). A recurrent network initialises V by the same scheme as W."""
    if profile.init is None:
        raise ArgumentError(f"profile {profile.name!r} has no init study")
    grid = profile.init
    specs = {}
    for name, plan in grid.data.items():
        if data_sets is not None and name not in data_sets:
            continue
        base = _base(name, plan.overrides)
        layer = base.get("model", {}).get("hidden", [{}])[0]
        paths = ["model.init.feedforward.scheme"]
        if layer.get("recurrent", False):
            paths.append("model.init.recurrent.scheme")
        others = [s for s in INIT_SCHEMES if s != "fluctuation"]
        schemes = others + ["fluctuation"] * len(plan.sigma_u)
        zipped = {path: schemes for path in paths}
        zipped["model.init.fluctuation.sigma_u"] = [1.0] * len(others) + list(plan.sigma_u)
        for depth in plan.depths:
            deep = apply_overrides(base, {"model.hidden": [copy.deepcopy(layer)
                                                           for _ in range(depth)]})
            specs[f"init/{name}/{depth}"] = {
                "name": f"{profile.name}-init-{name}-{depth}-layers",
                "description": f"Uniform, Gaussian and fluctuation-driven init (σ_U grid), "
                               f"{depth} hidden layer{'s' if depth > 1 else ''}, {name}.",
                "base": deep,
                "zip": [zipped],
                "seeds": list(grid.seeds),
                "select": {"axis": "training.learning_rate",
                           "values": list(grid.learning_rates),
                           "rung_epochs": grid.rung_epochs, "rung_seeds": grid.rung_seeds},
            }
    return specs


def study_specs(profile_name: str, studies: list[str] | None = None,
                readout_data_sets: list[str] | None = None, seeds: list[int] | None = None,
                init_data_sets: list[str] | None = None
                ) -> dict[str, dict[str, dict[str, Any]]]:
    """The specs of the chosen studies (the paper's by default; ``init`` when named):
    {study: {role: spec}}. ``seeds`` replace the profile's (the study names then say which,
    so that a second run on other seeds makes its own choices, even in the same database).
    ``init_data_sets`` limit the init study to those of its data sets."""
    try:
        profile = PROFILES[profile_name]
    except KeyError:
        raise ArgumentError(f"unknown profile {profile_name!r} (known: {', '.join(PROFILES)})"
                         ) from None
    chosen = studies or list(STUDY_NAMES)
    known = STUDY_NAMES + EXTENSION_NAMES
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ArgumentError(f"unknown study {unknown[0]!r} (known: {', '.join(known)})")
    if seeds is not None:
        profile = _with_seeds(profile, list(seeds), chosen)
    builders = {
        "shape-slope": lambda: shape_slope_specs(profile),
        "scale": lambda: scale_specs(profile),
        "readout": lambda: readout_specs(profile, readout_data_sets or ["randman"]),
        "regularisation": lambda: regularisation_specs(profile),
        "init": lambda: init_specs(profile, init_data_sets),
    }
    return {name: copy.deepcopy(builders[name]()) for name in chosen}


def _with_seeds(profile: Profile, seeds: list[int], studies: list[str]) -> Profile:
    """``profile`` on other seeds (every study's, the init study's too), named after them;
    the same profile when they are the chosen studies' own."""
    grids = [(profile.init.seeds, profile.init.rung_seeds)
             if name == "init" and profile.init is not None
             else (profile.seeds, profile.rung_seeds) for name in studies]
    if all(seeds == own for own, _ in grids):
        return profile
    rung_seeds = max(rung for _, rung in grids)
    if len(seeds) < rung_seeds or len(set(seeds)) != len(seeds):
        raise ArgumentError(f"seeds: need at least {rung_seeds} different seeds, got {seeds}")
    label = f"{profile.name}-seeds-{'-'.join(str(s) for s in seeds)}"
    init_grid = replace(profile.init, seeds=seeds) if profile.init is not None else None
    return replace(profile, name=label, seeds=seeds, init=init_grid)
