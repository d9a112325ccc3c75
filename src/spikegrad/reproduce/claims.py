"""The paper's claims, each checked against the measured trials by a stated rule.

Every verdict is ``holds``, ``does not hold`` or ``inconclusive`` and is computed
here from the results database, never written by hand. Accuracies are test
accuracies of the best-validation epoch; "mean ± sd" is over seeds. A trial that
diverged (NaN) counts at chance accuracy: it did not learn.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"

# tolerances of the rules (absolute test accuracy)
SAME_ACCURACY = 0.05       # "barely matters", "no substantial difference"
ACCURACY_KEPT = 0.03       # regularisation "without loss of accuracy"
LEARNED_MARGIN = 0.15      # a network "learned" if it beats chance by this much
SPIKE_REDUCTION = 10.0     # "one to two orders of magnitude"


@dataclass
class Claim:
    study: str
    statement: str
    rule: str
    verdict: str
    evidence: str


@dataclass
class Stat:
    mean: float
    sd: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.sd:.3f}"


def config_value(trial: dict[str, Any], path: str) -> Any:
    node: Any = trial["config"]
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


# classes of the data sets whose config does not name them
KNOWN_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10, "shd": 20, "ssc": 35}


def chance(trial: dict[str, Any]) -> float:
    """Chance accuracy of the trial's task (1 / number of classes)."""
    data = trial["config"]["data"]
    classes = data.get("n_classes") or KNOWN_CLASSES.get(data["name"], 10)
    return 1.0 / classes


def accuracy(trial: dict[str, Any], metric: str = "test_accuracy") -> float | None:
    """The trial's accuracy; chance for a diverged trial; None if it failed or is unfinished."""
    if trial["status"] == "diverged":
        return chance(trial)
    if trial["status"] != "completed" or trial.get(metric) is None:
        return None
    return float(trial[metric])


def group(trials: list[dict[str, Any]], keys: list[str], value=accuracy) -> dict[tuple, Stat]:
    """Mean and sd over seeds of ``value(trial)``, grouped by the config fields ``keys``."""
    values: dict[tuple, list[float]] = defaultdict(list)
    for trial in trials:
        v = value(trial)
        if v is not None and math.isfinite(v):
            values[tuple(config_value(trial, k) for k in keys)].append(v)
    return {k: Stat(float(np.mean(v)), float(np.std(v)), len(v)) for k, v in values.items()}


def hidden_spikes(trial: dict[str, Any]) -> float | None:
    spikes = trial.get("hidden_spikes_per_neuron")
    if trial["status"] != "completed" or not spikes:
        return None
    return float(np.mean(spikes))


# ---------------------------------------------------------------------------------------


def shape_slope_claims(trials: list[dict[str, Any]], controls: list[dict[str, Any]]
                       ) -> list[Claim]:
    claims = []
    stats = group(trials, ["surrogate.name", "surrogate.slope"])
    if not stats:
        return [_missing("shape-slope", "Surrogate shape barely matters")]
    level = chance(trials[0])
    best = {}
    for (shape, slope), stat in stats.items():
        if shape not in best or stat.mean > best[shape][1].mean:
            best[shape] = (slope, stat)
    spread = max(s.mean for _, s in best.values()) - min(s.mean for _, s in best.values())
    noise = max(s.sd for _, s in best.values())
    learned = all(s.mean > level + LEARNED_MARGIN for _, s in best.values())
    if not learned:
        verdict = INCONCLUSIVE
    elif spread <= SAME_ACCURACY:
        verdict = HOLDS
    elif spread > SAME_ACCURACY + 2 * noise:
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    claims.append(Claim(
        "shape-slope",
        "The surrogate's shape barely matters for the best accuracy.",
        f"holds if the best accuracies of the shapes (each at its best slope) lie within "
        f"{SAME_ACCURACY} of each other and all beat chance by {LEARNED_MARGIN}; does not hold if "
        f"they differ by more than {SAME_ACCURACY} + 2 sd.",
        verdict,
        "; ".join(f"{shape}: {stat} at slope {slope:g}" for shape, (slope, stat) in
                  sorted(best.items())) + f"; spread {spread:.3f}",
    ))
    # robustness to the slope: the slopes within SAME_ACCURACY of the best span a decade
    spans = {}
    for shape, (_, top) in best.items():
        good = [slope for (s, slope), stat in stats.items()
                if s == shape and stat.mean >= top.mean - SAME_ACCURACY]
        spans[shape] = max(good) / min(good) if good and min(good) > 0 else 1.0
    if not learned:
        verdict = INCONCLUSIVE
    else:
        verdict = HOLDS if all(v >= 10.0 for v in spans.values()) else FAILS
    claims.append(Claim(
        "shape-slope",
        "Accuracy is robust to the surrogate's slope over a wide range.",
        f"holds if, for every shape, the slopes whose mean accuracy is within {SAME_ACCURACY} "
        "of that shape's best span at least one decade (max/min slope >= 10).",
        verdict,
        "; ".join(f"{shape}: near-best slopes span ×{span:g}" for shape, span in
                  sorted(spans.items())),
    ))
    control_stats = group(controls, ["surrogate.name"])
    true = control_stats.get(("true",))
    top = max(s.mean for _, s in best.values())
    if true is None:
        claims.append(_missing("shape-slope", "The true gradient does not learn"))
    else:
        gap = top - true.mean
        if gap >= LEARNED_MARGIN:
            verdict = HOLDS
        elif gap <= SAME_ACCURACY:
            verdict = FAILS
        else:
            verdict = INCONCLUSIVE
        claims.append(Claim(
            "shape-slope",
            "The true gradient (zero almost everywhere) does not train the hidden layer: only "
            "the readout learns, and accuracy falls far short of surrogate gradients.",
            f"holds if the best surrogate's accuracy exceeds the true gradient's by at least "
            f"{LEARNED_MARGIN}; does not hold if by at most {SAME_ACCURACY}.",
            verdict,
            f"true gradient {true}; best surrogate {top:.3f}; gap {gap:.3f}; chance {level:.3f}",
        ))
    constant = control_stats.get(("constant",))
    if constant is not None:
        gap = top - constant.mean
        verdict = HOLDS if gap > SAME_ACCURACY else (FAILS if gap < 0 else INCONCLUSIVE)
        claims.append(Claim(
            "shape-slope",
            "A constant surrogate (slope 0) learns, but worse than a well-chosen slope.",
            f"holds if the constant surrogate's accuracy is more than {SAME_ACCURACY} below the "
            "best surrogate's; does not hold if it is above it.",
            verdict,
            f"constant {constant}; best surrogate {top:.3f}; gap {gap:.3f}",
        ))
    return claims


def condition_name(trial_or_condition: dict[str, Any]) -> str:
    if "config" in trial_or_condition:
        layer = trial_or_condition["config"]["model"]["hidden"][0]
    else:
        layer = trial_or_condition
    kind = "RC" if layer["recurrent"] else "FF"
    reset = "detached reset" if layer["detach_reset"] else "reset in BPTT"
    if not layer["recurrent"]:
        return f"{kind}, {reset}"
    recurrence = "grad through V" if layer["recurrent_gradient"] else "V detached"
    return f"{kind}, {reset}, {recurrence}"


def gradient_path(condition: str) -> bool:
    """Do gradients flow through the reset or the recurrence in this condition?"""
    return "reset in BPTT" in condition or "grad through V" in condition


def scale_claims(trials: list[dict[str, Any]]) -> list[Claim]:
    if not trials:
        return [_missing("scale", "A large surrogate scale hurts")]
    stats: dict[tuple, list[float]] = defaultdict(list)
    for trial in trials:
        value = accuracy(trial)
        if value is not None:
            key = (condition_name(trial), config_value(trial, "surrogate.name"),
                   config_value(trial, "surrogate.slope"))
            stats[key].append(value)
    largest = max(config_value(t, "surrogate.slope") for t in trials)
    drops = {}
    for condition in sorted({k[0] for k in stats}):
        normalised = stats.get((condition, "superspike", largest))
        asymptotic = stats.get((condition, "superspike_asymptotic", largest))
        if normalised and asymptotic:
            drops[condition] = float(np.mean(normalised) - np.mean(asymptotic))
    detached = [d for c, d in drops.items() if not gradient_path(c)]
    through = [d for c, d in drops.items() if gradient_path(c)]
    if not detached or not through:
        verdict = INCONCLUSIVE
    elif max(detached) <= SAME_ACCURACY and min(through) > SAME_ACCURACY:
        verdict = HOLDS
    elif max(detached) > SAME_ACCURACY or max(through) <= SAME_ACCURACY:
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    return [Claim(
        "scale",
        "A large surrogate scale (asymptotic SuperSpike, peak = slope) hurts when gradients "
        "flow through the reset or the recurrence, and not when both are detached.",
        f"at the largest slope ({largest:g}), 'drop' = accuracy of normalised SuperSpike minus "
        f"asymptotic SuperSpike; holds if the drop is at most {SAME_ACCURACY} in every condition "
        f"without such a gradient path and more than {SAME_ACCURACY} in every condition with one; "
        f"does not hold if a detached condition drops by more than {SAME_ACCURACY} or no condition "
        "with a gradient path does.",
        verdict,
        "; ".join(f"{c}: drop {d:+.3f}" for c, d in drops.items()),
    )]


def readout_claims(trials_by_data: dict[str, list[dict[str, Any]]]) -> list[Claim]:
    differences, noise = [], []
    parts = []
    for data_set, trials in sorted(trials_by_data.items()):
        stats = group(trials, ["model.readout.reduction", "model.hidden.0.recurrent"])
        for recurrent in (False, True):
            top, total = stats.get(("max", recurrent)), stats.get(("sum", recurrent))
            if top and total:
                differences.append(top.mean - total.mean)
                noise.append(max(top.sd, total.sd))
                arch = "RC" if recurrent else "FF"
                parts.append(f"{data_set} {arch}: max {top}, sum {total}")
    if not differences:
        return [_missing("readout", "Max and sum readouts perform alike")]
    worst = max(range(len(differences)), key=lambda i: abs(differences[i]))
    if all(abs(d) <= max(SAME_ACCURACY, 2 * s) for d, s in zip(differences, noise, strict=True)):
        verdict = HOLDS
    elif abs(differences[worst]) > SAME_ACCURACY + 2 * noise[worst]:
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    return [Claim(
        "readout",
        "Max-over-time and sum-over-time readouts give no substantial difference in accuracy.",
        "holds if, for every data set and architecture, "
        f"|max - sum| <= max({SAME_ACCURACY}, 2 sd); "
        f"does not hold if some |max - sum| > {SAME_ACCURACY} + 2 sd.",
        verdict,
        "; ".join(parts),
    )]


def regularisation_claims(trials: list[dict[str, Any]]) -> list[Claim]:
    key = "model.hidden.0.activity.upper_strength"
    accuracy_by = group(trials, [key])
    spikes_by = group(trials, [key], value=hidden_spikes)
    if (0.0,) not in accuracy_by or (0.0,) not in spikes_by:
        return [_missing("regularisation", "Regularisation cuts spikes")]
    base_accuracy, base_spikes = accuracy_by[(0.0,)].mean, spikes_by[(0.0,)].mean
    kept = [(k[0], spikes_by[k].mean) for k, stat in accuracy_by.items()
            if k in spikes_by and stat.mean >= base_accuracy - ACCURACY_KEPT]
    sparsest_strength, sparsest_spikes = min(kept, key=lambda item: item[1])
    factor = base_spikes / max(sparsest_spikes, 1e-9)
    if factor >= SPIKE_REDUCTION:
        verdict = HOLDS
    elif factor < 2.0:
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    claims = [Claim(
        "regularisation",
        "Activity regularisation cuts hidden spikes by one to two orders of magnitude with no "
        "significant loss of accuracy.",
        f"among strengths whose mean accuracy is within {ACCURACY_KEPT} of the unregularised "
        f"network's, the largest spike reduction; holds if >= {SPIKE_REDUCTION:g}x, does not "
        "hold if < 2x.",
        verdict,
        f"unregularised: accuracy {accuracy_by[(0.0,)]}, {base_spikes:.3g} spikes/neuron; "
        f"strength {sparsest_strength:g}: {sparsest_spikes:.3g} spikes/neuron "
        f"(×{factor:.1f} fewer) at accuracy {accuracy_by[(sparsest_strength,)]}",
    )]
    lost = [(k[0], stat.mean) for k, stat in accuracy_by.items()
            if stat.mean < base_accuracy - 2 * SAME_ACCURACY and k in spikes_by]
    if lost:
        fewer = all(spikes_by[(s,)].mean < sparsest_spikes for s, _ in lost)
        verdict = HOLDS if fewer else FAILS
        evidence = (f"accuracy holds down to {sparsest_spikes:.3g} spikes/neuron; "
                    + "; ".join(f"strength {s:g}: {spikes_by[(s,)].mean:.3g} spikes/neuron, "
                                f"accuracy {a:.3f}" for s, a in sorted(lost)))
    else:
        verdict = INCONCLUSIVE
        evidence = (f"no strength in the grid lowered accuracy by more than "
                    f"{2 * SAME_ACCURACY}; lowest spike count {sparsest_spikes:.3g}")
    claims.append(Claim(
        "regularisation",
        "Below a critical number of hidden spikes, accuracy falls.",
        f"holds if every strength that lowers accuracy by more than {2 * SAME_ACCURACY} leaves "
        "fewer spikes than the sparsest network that keeps accuracy (the critical count); "
        "inconclusive if no strength lowers accuracy that much.",
        verdict,
        evidence,
    ))
    return claims


def gradient_claims(norms: dict[str, dict[float, list[float]]]) -> list[Claim]:
    """``norms[condition][scale]`` is the first layer's ‖dL/dU[n]‖ through time."""
    ratios = {}
    for condition, by_scale in norms.items():
        small, large = min(by_scale), max(by_scale)
        # growth of the gradient with the surrogate scale, per unit of scale
        total_small, total_large = sum(by_scale[small]), sum(by_scale[large])
        if not math.isfinite(total_large):  # overflowed even in float64: exploded
            ratios[condition] = math.inf
        else:
            ratios[condition] = (total_large / max(total_small, 1e-300)) / (large / small)
    detached = [r for c, r in ratios.items() if not gradient_path(c)]
    through = [r for c, r in ratios.items() if gradient_path(c)]
    if not detached or not through:
        verdict = INCONCLUSIVE
    elif min(through) > 10 * max(detached):
        verdict = HOLDS
    elif max(through) <= 2 * max(detached):
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    return [Claim(
        "scale",
        "With a large scale, gradients through the reset or the recurrence explode through "
        "time; with both detached they only grow in proportion to the scale.",
        "growth = (sum over time of ‖dL/dU[n]‖ at the large scale / at the small scale) / "
        "(large / small scale), hidden layer, same weights and batch; holds if the growth "
        "in every condition with a gradient path exceeds 10× the largest growth without one.",
        verdict,
        "; ".join(f"{c}: growth " + (f"×{r:.3g}" if math.isfinite(r) else "overflow (inf)")
                  for c, r in ratios.items()),
    )]


def _missing(study: str, statement: str) -> Claim:
    return Claim(study, statement + ".", "needs finished trials of this study", INCONCLUSIVE,
                 "no finished trials")
