"""The paper's claims, each checked against the measured trials by a rule fixed in advance.

Every verdict is ``holds``, ``does not hold`` or ``inconclusive`` and is computed here from
the results database, never written by hand. The rules follow the paper's wording and are
written down before any result is seen; they are not tuned to make a claim hold, and a
robust "does not hold" is a finding.

What the rules read: each condition of a study (a grid point, e.g. sigmoid' at slope 10)
has one trial per seed, all at the learning rate the study chose for that condition on
validation accuracy (:class:`spikegrad.studies.spec.Selection`). A trial's accuracy is the
test accuracy of its best-validation epoch; a trial that diverged counts at chance (it did
not learn); failed trials are left out. Conditions are compared on the seeds they share,
by paired differences (:mod:`spikegrad.reproduce.stats`), at α = 0.05, with these margins
(absolute test accuracy):

- ``SAME`` = 0.02: "barely matters", "no substantial difference", "no significant loss";
- ``LEARNED`` = 0.05: a network "learns" when it beats the readout-only control (the true
  gradient, which trains no hidden weight) by more than this;
- ``SPIKE_REDUCTION`` = 10: "one to two orders of magnitude" fewer spikes;
- ``SLOPE_SPAN`` = 10: "a wide range" of slopes is at least a decade.

Every claim also reports how many of its trials look undertrained (their epoch budget ran
out with the best epoch in its last 10 %): above ``UNDERTRAINED_SHARE`` its verdict is
``inconclusive (undertrained)``; and whether the verdict is the same on two disjoint halves
of the seeds (``stable``) or not (``unstable``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikegrad.config import get_path
from spikegrad.reproduce.stats import Paired, Summary

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
UNDERTRAINED = "inconclusive (undertrained)"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, UNDERTRAINED)

SAME = 0.02
LEARNED = 0.05
SPIKE_REDUCTION = 10.0
SLOPE_SPAN = 10.0
UNDERTRAINED_SHARE = 0.10
LATE_EPOCHS = 0.10  # "the best epoch lies in the last 10 % of the budget"

Trials = list[dict[str, Any]]
Data = dict[str, Trials]  # study role ("shape-slope", "readout/digits", ...) -> trials


@dataclass
class Claim:
    study: str
    statement: str
    rule: str
    verdict: str
    evidence: str
    trials: list[str] = field(default_factory=list)  # config hashes the verdict rests on
    undertrained: str = ""
    stability: str = ""


# ---------------------------------------------------------------------------------------
# Reading trials


# classes of the data sets whose config does not name them
KNOWN_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10, "shd": 20, "ssc": 35,
                 "spoken-digits": 10, "spoken-digits-audio": 10, "audio": 10}


def config_value(trial: dict[str, Any], path: str) -> Any:
    return get_path(trial["config"], path)


def chance(trial: dict[str, Any]) -> float:
    """Chance accuracy of the trial's task (1 / number of classes)."""
    data = trial["config"]["data"]
    classes = data.get("n_classes") or KNOWN_CLASSES.get(data["name"], 10)
    return 1.0 / classes


def accuracy(trial: dict[str, Any], metric: str = "test_accuracy") -> float | None:
    """The trial's accuracy; chance for a diverged trial; None if it failed or is unfinished."""
    if trial["status"] == "diverged":
        return chance(trial)
    if trial["status"] not in ("completed", "stopped") or trial.get(metric) is None:
        return None
    return float(trial[metric])


def hidden_spikes(trial: dict[str, Any]) -> float | None:
    """Spikes per hidden neuron per test sample (mean over layers)."""
    spikes = trial.get("hidden_spikes_per_neuron")
    if trial["status"] not in ("completed", "stopped") or not spikes:
        return None
    return float(np.mean(spikes))


def undertrained(trial: dict[str, Any]) -> bool:
    """The epoch budget ran out while the trial was still improving (best epoch late)."""
    budget = trial.get("epoch_budget") or trial["config"]["training"]["epochs"]
    if trial["status"] != "completed" or trial.get("stop_reason") != "epochs":
        return False
    return (trial.get("best_epoch") or 0) > (1.0 - LATE_EPOCHS) * budget


@dataclass
class Condition:
    """The trials of one grid point, one per seed."""

    values: tuple
    trials: Trials

    def score(self, trial: dict[str, Any], metric: str = "test_accuracy") -> float | None:
        """A trial's accuracy as the claims count it (:func:`accuracy`)."""
        return accuracy(trial, metric)

    def by_seed(self, value: Callable[[dict[str, Any]], float | None] | None = None
                ) -> dict[int, float]:
        """``value(trial)`` (default: :meth:`score`) per seed, finite values only."""
        value = value or self.score
        out = {}
        for trial in self.trials:
            v = value(trial)
            if v is not None and math.isfinite(v):
                out[int(trial["config"]["seed"])] = v
        return out

    def summary(self, value: Callable[[dict[str, Any]], float | None] | None = None
                ) -> Summary:
        return Summary.of(list(self.by_seed(value).values()))

    def valid_mean(self) -> float:
        values = list(self.by_seed(lambda t: self.score(t, "valid_accuracy")).values())
        return float(np.mean(values)) if values else -math.inf

    def hashes(self) -> list[str]:
        return [t["config_hash"] for t in self.trials]


def conditions(trials: Trials, keys: list[str]) -> dict[tuple, Condition]:
    """Trials grouped by the config values at ``keys`` (the other axes are seed and the
    chosen learning rate)."""
    groups: dict[tuple, Trials] = defaultdict(list)
    for trial in trials:
        groups[tuple(config_value(trial, k) for k in keys)].append(trial)
    return {k: Condition(k, v) for k, v in groups.items()}


def compare(a: Condition, b: Condition) -> Paired:
    return Paired.of(a.by_seed(), b.by_seed())


def missing(study: str, statement: str) -> Claim:
    """The claim without trials to judge it by (left out of the report)."""
    return Claim(study, statement, "needs finished trials of this study", INCONCLUSIVE,
                 "no finished trials")


def verdict_of(holds: bool, fails: bool) -> str:
    """holds, does not hold, or inconclusive when neither was shown."""
    return HOLDS if holds else FAILS if fails else INCONCLUSIVE


# ---------------------------------------------------------------------------------------
# Study 1: surrogate shape and slope, and the controls

SHAPE, SLOPE = "surrogate.name", "surrogate.slope"


def _best_slopes(grid: dict[tuple, Condition]) -> dict[str, Condition]:
    """Per shape, the condition (slope) with the best mean validation accuracy."""
    best: dict[str, Condition] = {}
    for (shape, _), condition in grid.items():
        if shape not in best or condition.valid_mean() > best[shape].valid_mean():
            best[shape] = condition
    return best


def shape_claim(data: Data) -> Claim:
    statement = "The surrogate's shape barely matters for the best accuracy."
    grid = conditions(data.get("shape-slope", []), [SHAPE, SLOPE])
    if not grid:
        return missing("shape-slope", statement)
    best = _best_slopes(grid)
    shapes = sorted(best)
    pairs = [(a, b, compare(best[a], best[b])) for i, a in enumerate(shapes)
             for b in shapes[i + 1:]]
    verdict = verdict_of(all(p.equivalent(SAME) for *_, p in pairs),
                       any(p.greater(SAME) or p.less(SAME) for *_, p in pairs))
    evidence = "; ".join(f"{s} at slope {best[s].values[1]:g}: {best[s].summary()}"
                         for s in shapes)
    evidence += "; paired differences " + "; ".join(f"{a} - {b} {p}" for a, b, p in pairs)
    return Claim(
        "shape-slope", statement,
        f"each shape at its best slope (chosen on validation accuracy); holds if every pair of "
        f"shapes is equivalent within ±{SAME} (TOST, paired over seeds); does not hold if some "
        f"pair differs by more than {SAME} (one-sided test); α = 0.05.",
        verdict, evidence, [h for c in best.values() for h in c.hashes()])


def slope_claim(data: Data) -> Claim:
    statement = "Accuracy is robust to the surrogate's slope over a wide range."
    grid = conditions(data.get("shape-slope", []), [SHAPE, SLOPE])
    if not grid:
        return missing("shape-slope", statement)
    best = _best_slopes(grid)
    shown, possible, parts = {}, {}, []
    for shape, top in sorted(best.items()):
        slopes = sorted(slope for s, slope in grid if s == shape)
        near = {slope: compare(grid[(shape, slope)], top) for slope in slopes}
        shown[shape] = span(slopes, top.values[1],
                             {s for s in slopes if near[s].not_worse(SAME)})
        possible[shape] = span(slopes, top.values[1],
                                {s for s in slopes if not near[s].less(SAME)})
        parts.append(f"{shape}: best slope {top.values[1]:g}, not worse by {SAME} over "
                     f"×{shown[shape]:g}, not clearly worse over ×{possible[shape]:g}")
    verdict = verdict_of(all(v >= SLOPE_SPAN for v in shown.values()),
                       any(v < SLOPE_SPAN for v in possible.values()))
    return Claim(
        "shape-slope", statement,
        f"per shape, the unbroken run of grid slopes around the best one (chosen on validation) "
        f"whose accuracy is not worse than the best's by more than {SAME} (non-inferiority, "
        f"paired, α = 0.05); holds if it spans at least a factor {SLOPE_SPAN:g} for every shape; "
        f"does not hold if, for some shape, even the slopes not clearly worse by {SAME} span "
        f"less.",
        verdict, "; ".join(parts), [h for c in grid.values() for h in c.hashes()])


def span(grid: list[float], best: float, ok: set[float]) -> float:
    """max/min of the unbroken run of ``grid`` values (sorted) around ``best`` that are in
    ``ok`` (``best`` itself always counts)."""
    i = grid.index(best)
    lo = hi = i
    while lo > 0 and grid[lo - 1] in ok:
        lo -= 1
    while hi < len(grid) - 1 and grid[hi + 1] in ok:
        hi += 1
    return grid[hi] / grid[lo] if grid[lo] > 0 else math.inf


def _controls(data: Data) -> tuple[dict[tuple, Condition], Condition | None, float]:
    controls = conditions(data.get("controls", []), [SHAPE])
    grid = conditions(data.get("shape-slope", []), [SHAPE, SLOPE])
    best = _best_slopes(grid)
    top = max(best.values(), key=Condition.valid_mean) if best else None
    level = chance(data["controls"][0]) if data.get("controls") else math.nan
    return controls, top, level


def true_gradient_claim(data: Data) -> Claim:
    statement = ("The true gradient (zero almost everywhere) trains no hidden weight: the "
                 "network stays near chance, far below surrogate gradients.")
    controls, top, level = _controls(data)
    true = controls.get(("true",))
    if true is None or top is None:
        return missing("shape-slope", statement)
    above_chance = Paired.of(true.by_seed(), {s: level for s in true.by_seed()})
    gap = compare(top, true)
    verdict = verdict_of(above_chance.below(LEARNED) and gap.greater(LEARNED),
                       above_chance.greater(LEARNED) or gap.below(LEARNED))
    return Claim(
        "shape-slope", statement,
        f"holds if the true gradient's accuracy is not above chance by {LEARNED} (upper 95 % "
        f"bound) and the best surrogate (chosen on validation) beats it by more than {LEARNED}; "
        f"does not hold if it is above chance by more than {LEARNED}, or the best surrogate "
        f"beats it by less.",
        verdict,
        f"true gradient {true.summary()}, chance {level:.3f}; best surrogate "
        f"({top.values[0]}, slope {top.values[1]:g}) {top.summary()}; gap {gap}",
        true.hashes() + top.hashes())


def constant_claim(data: Data) -> Claim:
    statement = "A constant surrogate (slope 0) learns, but worse than a well-chosen slope."
    controls, top, _ = _controls(data)
    constant, true = controls.get(("constant",)), controls.get(("true",))
    if constant is None or true is None or top is None:
        return missing("shape-slope", statement)
    learns = compare(constant, true)
    below = compare(constant, top)
    verdict = verdict_of(learns.greater(LEARNED) and below.less(0.0),
                       learns.below(LEARNED) or below.not_worse(SAME))
    return Claim(
        "shape-slope", statement,
        f"holds if the constant surrogate beats the readout-only control (true gradient) by more "
        f"than {LEARNED} and is below the best surrogate (one-sided paired tests, α = 0.05); "
        f"does not hold if it is shown to beat the control by less than {LEARNED}, or to be "
        f"within {SAME} of the best or above it (non-inferiority).",
        verdict,
        f"constant {constant.summary()}; minus true gradient {learns}; minus best surrogate "
        f"{below}",
        constant.hashes() + true.hashes() + top.hashes())


# ---------------------------------------------------------------------------------------
# Study 2: surrogate scale

def condition_name(trial_or_layer: dict[str, Any]) -> str:
    layer = (trial_or_layer["config"]["model"]["hidden"][0] if "config" in trial_or_layer
             else trial_or_layer)
    kind = "RC" if layer["recurrent"] else "FF"
    reset = "detached reset" if layer["detach_reset"] else "reset in BPTT"
    if not layer["recurrent"]:
        return f"{kind}, {reset}"
    recurrence = "grad through V" if layer["recurrent_gradient"] else "V detached"
    return f"{kind}, {reset}, {recurrence}"


def gradient_path(condition: str) -> bool:
    """Do gradients flow through the reset or the recurrence in this condition?"""
    return "reset in BPTT" in condition or "grad through V" in condition


def scale_claim(data: Data) -> Claim:
    statement = ("A large surrogate scale (asymptotic SuperSpike, peak = slope) hurts when "
                 "gradients flow through the reset or the recurrence, and not when both are "
                 "detached.")
    trials = data.get("scale", [])
    if not trials:
        return missing("scale", statement)
    largest = max(config_value(t, SLOPE) for t in trials)
    at_largest = [t for t in trials if config_value(t, SLOPE) == largest]
    groups: dict[str, dict[str, Trials]] = defaultdict(lambda: defaultdict(list))
    for t in at_largest:
        groups[condition_name(t)][config_value(t, SHAPE)].append(t)
    drops: dict[str, Paired] = {}
    hashes: list[str] = []
    for arch, by_shape in sorted(groups.items()):
        normal, asymptotic = by_shape.get("superspike"), by_shape.get("superspike_asymptotic")
        if normal and asymptotic:
            drops[arch] = compare(Condition((), normal), Condition((), asymptotic))
            hashes += [t["config_hash"] for t in normal + asymptotic]
    through = {a: d for a, d in drops.items() if gradient_path(a)}
    detached = {a: d for a, d in drops.items() if not gradient_path(a)}
    if not through or not detached:
        return missing("scale", statement)
    verdict = verdict_of(
        all(d.greater(SAME) for d in through.values())
        and all(d.equivalent(SAME) for d in detached.values()),
        any(d.equivalent(SAME) for d in through.values())
        or any(d.greater(SAME) for d in detached.values()))
    return Claim(
        "scale", statement,
        f"at the largest slope ({largest:g}), drop = accuracy of normalised minus asymptotic "
        f"SuperSpike, paired over seeds; holds if the drop exceeds {SAME} (one-sided) in every "
        f"condition with a gradient path and is equivalent to 0 within ±{SAME} (TOST) in every "
        f"detached one; does not hold if a gradient-path condition shows no drop (equivalent) "
        f"or a detached one drops by more than {SAME}. Under Adam the detached conditions are "
        f"equivalent by construction (each gradient path holds one surrogate factor and Adam is "
        f"invariant to a constant gradient scale): they check the set-up, the gradient-path "
        f"conditions carry the claim.",
        verdict, "; ".join(f"{a}: drop {d}" for a, d in drops.items()), hashes)


def gradient_claim(norms: dict[str, dict[float, list[float]]]) -> Claim:
    """``norms[condition][scale]`` is the first layer's ‖dL/dU[n]‖ through time."""
    ratios = {}
    for condition, by_scale in norms.items():
        small, large = min(by_scale), max(by_scale)
        total_small, total_large = sum(by_scale[small]), sum(by_scale[large])
        if not math.isfinite(total_large):  # overflowed even in float64: exploded
            ratios[condition] = math.inf
        else:
            ratios[condition] = (total_large / max(total_small, 1e-300)) / (large / small)
    detached = [r for c, r in ratios.items() if not gradient_path(c)]
    through = [r for c, r in ratios.items() if gradient_path(c)]
    if not detached or not through:
        verdict = INCONCLUSIVE
    else:
        verdict = verdict_of(min(through) > 10 * max(detached), max(through) <= 2 * max(detached))
    return Claim(
        "scale",
        "With a large scale, gradients through the reset or the recurrence explode through "
        "time; with both detached they only grow in proportion to the scale.",
        "growth = (sum over time of ‖dL/dU[n]‖ at the large scale / at the small scale) / "
        "(large / small scale), hidden layer, same weights and batch; holds if the growth in "
        "every condition with a gradient path exceeds 10× the largest growth without one; does "
        "not hold if none exceeds 2×.",
        verdict,
        "; ".join(f"{c}: growth " + (f"×{r:.3g}" if math.isfinite(r) else "overflow (inf)")
                  for c, r in ratios.items()),
    )


# ---------------------------------------------------------------------------------------
# Study 3: readout

READOUT, RECURRENT = "model.readout.reduction", "model.hidden.0.recurrent"


def readout_claim(data: Data) -> Claim:
    statement = ("Max-over-time and sum-over-time readouts give no substantial difference in "
                 "accuracy.")
    comparisons, hashes = [], []
    for role in sorted(r for r in data if r.startswith("readout/")):
        grid = conditions(data[role], [READOUT, RECURRENT])
        for recurrent in (False, True):
            top, total = grid.get(("max", recurrent)), grid.get(("sum", recurrent))
            if top and total:
                comparisons.append((f"{role.removeprefix('readout/')} "
                                    f"{'RC' if recurrent else 'FF'}", compare(top, total),
                                    top, total))
                hashes += top.hashes() + total.hashes()
    if not comparisons:
        return missing("readout", statement)
    verdict = verdict_of(all(p.equivalent(SAME) for _, p, *_ in comparisons),
                       any(p.greater(SAME) or p.less(SAME) for _, p, *_ in comparisons))
    return Claim(
        "readout", statement,
        f"each readout at its own learning rate (chosen on validation); holds if, for every data "
        f"set and architecture, max - sum is equivalent to 0 within ±{SAME} (TOST, paired over "
        f"seeds); does not hold if some max - sum differs by more than {SAME} (one-sided test); "
        f"α = 0.05.",
        verdict,
        "; ".join(f"{name}: max {a.summary().mean:.3f}, sum {b.summary().mean:.3f}, max - sum {p}"
                  for name, p, a, b in comparisons),
        hashes)


# ---------------------------------------------------------------------------------------
# Study 4: activity regularisation

STRENGTH = "model.hidden.0.activity.upper_strength"


def _regularisation(data: Data):
    grid = conditions(data.get("regularisation", []), [STRENGTH])
    base = grid.get((0.0,))
    if base is None:
        return None
    rows = []
    for (strength,), condition in sorted(grid.items()):
        if strength == 0.0:
            continue
        spikes = condition.summary(hidden_spikes).mean
        rows.append((strength, spikes, compare(condition, base), condition))
    return base, rows


def sparsity_claim(data: Data) -> Claim:
    statement = ("Activity regularisation cuts hidden spikes by one to two orders of magnitude "
                 "with no significant loss of accuracy.")
    found = _regularisation(data)
    if found is None:
        return missing("regularisation", statement)
    base, rows = found
    base_spikes = base.summary(hidden_spikes).mean
    factors = {s: base_spikes / max(spikes, 1e-12) for s, spikes, *_ in rows}
    sparse = [(s, p) for s, _, p, _ in rows if factors[s] >= SPIKE_REDUCTION]
    verdict = verdict_of(any(p.not_worse(SAME) for _, p in sparse),
                       bool(sparse) and all(p.less(SAME) for _, p in sparse))
    return Claim(
        "regularisation", statement,
        f"holds if some strength leaves at least {SPIKE_REDUCTION:g}× fewer hidden spikes than "
        f"the unregularised network with accuracy not worse by more than {SAME} "
        f"(non-inferiority, paired, α = 0.05); does not hold if every strength that reaches "
        f"{SPIKE_REDUCTION:g}× is worse by more than {SAME}.",
        verdict,
        f"unregularised: {base.summary()}, {base_spikes:.3g} spikes/neuron; "
        + "; ".join(f"strength {s:g}: {spikes:.3g} spikes/neuron (×{factors[s]:.1f} fewer), "
                    f"accuracy minus unregularised {p}" for s, spikes, p, _ in rows),
        base.hashes() + [h for *_, c in rows for h in c.hashes()])


def critical_count_claim(data: Data) -> Claim:
    statement = "Below a critical number of hidden spikes, accuracy falls."
    found = _regularisation(data)
    if found is None:
        return missing("regularisation", statement)
    base, rows = found
    by_spikes = sorted(rows, key=lambda r: -r[1])  # most spikes first
    worse = [r for r in by_spikes if r[2].less(SAME)]
    if not worse:
        verdict = INCONCLUSIVE
        critical = "no strength lowers accuracy by more than " + f"{SAME}"
    else:
        first = by_spikes.index(worse[0])
        plateau = all(not r[2].less(SAME) for r in by_spikes[:first])
        drop = all(r[2].less(SAME) or not r[2].not_worse(SAME) for r in by_spikes[first:])
        verdict = HOLDS if plateau and drop and first > 0 else FAILS
        critical = (f"accuracy holds down to {by_spikes[first - 1][1]:.3g} spikes/neuron "
                    f"and falls from {worse[0][1]:.3g}" if first > 0 else
                    f"accuracy falls already at {worse[0][1]:.3g} spikes/neuron")
    return Claim(
        "regularisation", statement,
        f"strengths ordered by hidden spikes: holds if those above some count are not worse than "
        f"the unregularised network by more than {SAME} (plateau) and every one below it is "
        f"(drop: worse by more than {SAME}, or not shown otherwise); does not hold if a worse "
        f"strength has more spikes than one that is not; inconclusive if none is worse.",
        verdict, critical, base.hashes() + [h for *_, c in rows for h in c.hashes()])


# ---------------------------------------------------------------------------------------

CLAIMS: list[Callable[[Data], Claim]] = [
    shape_claim, slope_claim, true_gradient_claim, constant_claim, scale_claim,
    readout_claim, sparsity_claim, critical_count_claim,
]


def evaluate(data: Data, norms: dict[str, dict[float, list[float]]] | None = None
             ) -> list[Claim]:
    """Every claim of the paper whose study has trials in ``data`` (:func:`judge`), and the
    gradient claim from ``norms``."""
    claims = judge(CLAIMS, data)
    if norms:
        gradient = gradient_claim(norms)
        gradient.stability = "deterministic (no seeds)"
        claims.insert(next((i for i, c in enumerate(claims) if c.study == "readout"),
                           len(claims)), gradient)
    return claims


def judge(rules: list[Callable[[Data], Claim]], data: Data) -> list[Claim]:
    """Each rule's claim on ``data`` (those without finished trials left out), with its
    undertrained count and its verdict on two disjoint halves of the seeds."""
    seeds = sorted({int(t["config"]["seed"]) for trials in data.values() for t in trials})
    halves = [set(seeds[: len(seeds) // 2]), set(seeds[len(seeds) // 2:])]
    by_hash = {t["config_hash"]: t for trials in data.values() for t in trials}
    claims = []
    for rule in rules:
        claim = rule(data)
        if claim.verdict == INCONCLUSIVE and claim.evidence == "no finished trials":
            continue
        rested = [by_hash[h] for h in claim.trials if h in by_hash]
        late = sum(undertrained(t) for t in rested)
        claim.undertrained = f"{late} of {len(rested)} trials"
        if rested and late / len(rested) > UNDERTRAINED_SHARE:
            claim.verdict = UNDERTRAINED
        verdicts = [rule({k: [t for t in v if int(t["config"]["seed"]) in half]
                          for k, v in data.items()}).verdict for half in halves]
        claim.stability = (f"stable ({verdicts[0]} on both halves of the seeds)"
                           if verdicts[0] == verdicts[1] else
                           f"unstable: {verdicts[0]} on seeds {sorted(halves[0])}, "
                           f"{verdicts[1]} on seeds {sorted(halves[1])}")
        claims.append(claim)
    return claims
