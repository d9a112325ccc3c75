"""The paper's studies (protocol section 6) as study specs, at two sizes.

``quick`` runs every study end to end in about 20 minutes on 2 CPU cores: smaller
Randman (fewer samples per class), fewer slopes, two seeds, few epochs. ``paper`` uses
the paper's grids and is meant for a cluster (``--address``). Every spec is a plain
dict in the format of :mod:`spikegrad.studies.spec`; the report states each profile.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from spikegrad.config import apply_overrides, read_config_source

STUDY_NAMES = ("shape-slope", "scale", "readout", "regularisation")


@dataclass(frozen=True)
class Profile:
    name: str
    seeds: list[int]
    randman: dict[str, Any]          # overrides of the built-in randman config
    slopes: list[float]              # study 1
    scale_slopes: list[float]        # study 2
    scale_conditions: list[dict[str, bool]]
    regularisation_strengths: list[float]
    data_overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    readout_data: list[str] | None = None  # None: every data set available here


# Architectures of the scale study: (recurrent, detach_reset, recurrent_gradient)
FF_DETACHED = {"recurrent": False, "detach_reset": True, "recurrent_gradient": True}
FF_RESET = {"recurrent": False, "detach_reset": False, "recurrent_gradient": True}
RC_DETACHED = {"recurrent": True, "detach_reset": True, "recurrent_gradient": False}
RC_THROUGH = {"recurrent": True, "detach_reset": True, "recurrent_gradient": True}
RC_RESET = {"recurrent": True, "detach_reset": False, "recurrent_gradient": True}
RC_RESET_DETACHED_RECURRENCE = {"recurrent": True, "detach_reset": False,
                                "recurrent_gradient": False}

PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        seeds=[0, 1],
        randman={"data.samples_per_class": 250, "training.epochs": 20,
                 "training.batch_size": 100},
        slopes=[0.1, 1.0, 10.0, 100.0, 1000.0],
        scale_slopes=[1.0, 10.0, 100.0],
        scale_conditions=[FF_DETACHED, FF_RESET, RC_DETACHED, RC_THROUGH],
        regularisation_strengths=[0.0, 0.01, 0.1, 1.0, 10.0, 100.0],
        data_overrides={"training.epochs": 15},
        description=(
            "Randman with 250 samples per class (2000 in all), 20 epochs, batch 100; "
            "other data sets 15 epochs; 5 slopes, 3 slopes in the scale study, 2 seeds."
        ),
    ),
    "paper": Profile(
        name="paper",
        seeds=[0, 1, 2, 3, 4],
        randman={"training.epochs": 100},
        slopes=[0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
        scale_slopes=[1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0],
        scale_conditions=[FF_DETACHED, FF_RESET, RC_DETACHED, RC_THROUGH, RC_RESET,
                          RC_RESET_DETACHED_RECURRENCE],
        regularisation_strengths=[0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0,
                                  30.0, 100.0],
        description=(
            "The built-in configs (Randman: 1000 samples per class, 100 epochs); 13 "
            "slopes over 0.1..1000, 7 in the scale study, 12 regularisation strengths, 5 seeds."
        ),
    ),
    "smoke": Profile(
        name="smoke",
        seeds=[0],
        randman={"data.samples_per_class": 30, "time.n_steps": 40, "training.epochs": 2,
                 "training.batch_size": 50, "model.hidden.0.size": 32},
        slopes=[1.0, 100.0],
        scale_slopes=[1.0, 100.0],
        scale_conditions=[FF_DETACHED, FF_RESET],
        regularisation_strengths=[0.0, 10.0],
        data_overrides={"training.epochs": 1},
        description="A seconds-long run of the whole pipeline on tiny data; not for conclusions.",
        readout_data=["randman"],
    ),
}


def _base(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return apply_overrides(read_config_source(name), overrides)


def _condition_zip(conditions: list[dict[str, bool]]) -> dict[str, list[bool]]:
    return {f"model.hidden.0.{key}": [c[key] for c in conditions]
            for key in ("recurrent", "detach_reset", "recurrent_gradient")}


def shape_slope_specs(profile: Profile) -> list[dict[str, Any]]:
    base = _base("randman", profile.randman)
    return [
        {
            "name": f"{profile.name}-shape-slope",
            "description": "Accuracy vs surrogate slope for SuperSpike, sigmoid' and Esser.",
            "base": base,
            "axes": {"surrogate.name": ["superspike", "sigmoid", "esser"],
                     "surrogate.slope": list(profile.slopes)},
            "seeds": list(profile.seeds),
        },
        {
            "name": f"{profile.name}-controls",
            "description": "Controls: the true gradient (zero a.e.) and a constant surrogate.",
            "base": base,
            "axes": {"surrogate.name": ["true", "constant"]},
            "seeds": list(profile.seeds),
        },
    ]


def scale_specs(profile: Profile) -> list[dict[str, Any]]:
    return [{
        "name": f"{profile.name}-scale",
        "description": ("Normalised vs asymptotic SuperSpike across slopes, for feed-forward "
                        "and recurrent networks with and without gradients through the reset "
                        "and the recurrence."),
        "base": _base("randman", profile.randman),
        "axes": {"surrogate.name": ["superspike", "superspike_asymptotic"],
                 "surrogate.slope": list(profile.scale_slopes)},
        "zip": [_condition_zip(profile.scale_conditions)],
        "seeds": list(profile.seeds),
    }]


def readout_specs(profile: Profile, data_sets: list[str]) -> list[dict[str, Any]]:
    specs = []
    for data_set in data_sets:
        overrides = profile.randman if data_set == "randman" else profile.data_overrides
        specs.append({
            "name": f"{profile.name}-readout-{data_set}",
            "description": f"Readout max vs sum over time, feed-forward vs recurrent, {data_set}.",
            "base": _base(data_set, overrides),
            "axes": {"model.readout.reduction": ["max", "sum"],
                     "model.hidden.0.recurrent": [False, True]},
            "seeds": list(profile.seeds),
        })
    return specs


def regularisation_specs(profile: Profile) -> list[dict[str, Any]]:
    base = _base("randman", {
        **profile.randman,
        # the protocol's lower bound against silent neurons, on for every strength
        "model.hidden.0.activity.lower_strength": 100.0,
        "model.hidden.0.activity.lower_rate": 1e-3,
        "model.hidden.0.activity.upper_rate": 0.0,
        "model.hidden.0.activity.upper_exponent": 2.0,
    })
    return [{
        "name": f"{profile.name}-regularisation",
        "description": "Accuracy vs hidden spikes over a range of upper-bound strengths.",
        "base": base,
        "axes": {"model.hidden.0.activity.upper_strength": list(profile.regularisation_strengths)},
        "seeds": list(profile.seeds),
    }]


def study_specs(profile_name: str, studies: list[str] | None = None,
                readout_data_sets: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The specs of the chosen studies (all by default), keyed by study name."""
    try:
        profile = PROFILES[profile_name]
    except KeyError:
        raise ValueError(f"--profile: unknown profile {profile_name!r} "
                         f"(known: {', '.join(PROFILES)})") from None
    chosen = studies or list(STUDY_NAMES)
    unknown = [s for s in chosen if s not in STUDY_NAMES]
    if unknown:
        raise ValueError(f"unknown study {unknown[0]!r} (known: {', '.join(STUDY_NAMES)})")
    builders = {
        "shape-slope": lambda: shape_slope_specs(profile),
        "scale": lambda: scale_specs(profile),
        "readout": lambda: readout_specs(profile, readout_data_sets or ["randman"]),
        "regularisation": lambda: regularisation_specs(profile),
    }
    return {name: copy.deepcopy(builders[name]()) for name in chosen}
