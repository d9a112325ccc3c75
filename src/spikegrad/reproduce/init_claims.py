"""Claims of Rossbroich, Gygax & Zenke (2022) on initialisation, checked against the ``init``
study by rules fixed before any result was seen (the extension part of the report).

The study trains, per data set, networks of 1, 3 and 5 hidden layers under three
initialisations: the paper's uniform U(±1/√fan_in) (the default), Gaussian N(0, 1/fan_in)
and fluctuation-driven at a grid of target membrane spreads σ_U (μ_U = 0). Every condition
is at the learning rate chosen for it on validation accuracy; a condition's trials differ
only in their seed. The rules read trials the way :mod:`spikegrad.reproduce.claims` does
(test accuracy of the best-validation epoch, paired differences over shared seeds, α = 0.05)
with these margins, fixed in advance:

- ``SAME`` = 0.02: "robust" (not worse than the best σ_U by more than this);
- ``DEPTH_MARGIN`` = 0.03: "within 0.03 of the 1-layer network" (the issue's number);
- ``LEARNED`` = 0.05: "near chance" is not above chance by this; "better" is by more;
- ``SIGMA_SPAN`` = 4: "a range of σ_U" is at least a factor 4 (two octaves, e.g. 0.5..2).

The best σ_U of a (data set, depth) is the one with the highest mean validation accuracy.
A fluctuation-initialised trial that failed because a layer's targets could not be met
(:class:`spikegrad.fluctuation.FluctuationInitError`: a layer below fell silent on the
batch) counts at chance, as a diverged trial does: that network cannot be trained.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from spikegrad.reproduce.claims import (
    LEARNED,
    SAME,
    Claim,
    Condition,
    Data,
    Trials,
    chance,
    compare,
    missing,
    span,
    verdict_of,
)
from spikegrad.reproduce.claims import accuracy as trial_accuracy
from spikegrad.reproduce.stats import Paired

DEPTH_MARGIN = 0.03
SIGMA_SPAN = 4.0
MIN_SIGMAS = 3  # a σ_U range is judged only where the grid has at least this many values

STUDY = "init"
INIT_FAILED = "FluctuationInitError"

# a condition of the init study: (depth, scheme, σ_U or None)
Key = tuple[int, str, float | None]


def accuracy(trial: dict[str, Any], metric: str = "test_accuracy") -> float | None:
    """:func:`spikegrad.reproduce.claims.accuracy`, and chance for a network whose
    fluctuation-driven initialisation could not meet its targets."""
    if trial["status"] == "failed" and (trial.get("error") or "").startswith(INIT_FAILED):
        return chance(trial)
    return trial_accuracy(trial, metric)


class InitCondition(Condition):
    """A condition of the init study: failed initialisations count at chance."""

    def score(self, trial: dict[str, Any], metric: str = "test_accuracy") -> float | None:
        return accuracy(trial, metric)


def key_of(trial: dict[str, Any]) -> Key:
    """(hidden layers, feed-forward init scheme, σ_U for the fluctuation scheme)."""
    model = trial["config"]["model"]
    scheme = model["init"]["feedforward"]["scheme"]
    sigma = model["init"]["fluctuation"]["sigma_u"] if scheme == "fluctuation" else None
    return len(model["hidden"]), scheme, sigma


def by_data_set(data: Data) -> dict[str, dict[Key, InitCondition]]:
    """The init study's trials (roles ``init/<data set>/<depth>``) as conditions per data set."""
    grouped: dict[str, dict[Key, Trials]] = defaultdict(lambda: defaultdict(list))
    for role, trials in data.items():
        parts = role.split("/")
        if parts[0] != STUDY or len(parts) < 2:
            continue
        for trial in trials:
            grouped[parts[1]][key_of(trial)].append(trial)
    return {name: {k: InitCondition(k, v) for k, v in conditions.items()}
            for name, conditions in sorted(grouped.items())}


def best_fluctuation(grid: dict[Key, InitCondition], depth: int) -> InitCondition | None:
    """The fluctuation condition of ``depth`` with the best mean validation accuracy."""
    found = [c for (d, scheme, _), c in grid.items() if d == depth and scheme == "fluctuation"]
    return max(found, key=InitCondition.valid_mean) if found else None


def _depths(grid: dict[Key, InitCondition]) -> list[int]:
    return sorted({depth for depth, _, _ in grid})


def _layers(depth: int) -> str:
    return f"{depth} layer{'s' if depth > 1 else ''}"


def _label(condition: Condition) -> str:
    depth, scheme, sigma = condition.values
    where = f", σ_U {sigma:g}" if sigma is not None else ""
    return f"{_layers(depth)} {scheme}{where}"


def sigma_claim(data: Data) -> Claim:
    statement = ("With fluctuation-driven initialisation, accuracy is robust over a range of "
                 "σ_U at every depth.")
    shown, possible, parts, hashes = [], [], [], []
    for name, grid in by_data_set(data).items():
        for depth in _depths(grid):
            sigmas = sorted(s for d, scheme, s in grid if d == depth and scheme == "fluctuation")
            top = best_fluctuation(grid, depth)
            if top is None or len(sigmas) < MIN_SIGMAS:
                continue
            near = {s: compare(grid[(depth, "fluctuation", s)], top) for s in sigmas}
            best = top.values[2]
            shown.append(span(sigmas, best, {s for s in sigmas if near[s].not_worse(SAME)}))
            possible.append(span(sigmas, best, {s for s in sigmas if not near[s].less(SAME)}))
            parts.append(f"{name}, {_layers(depth)}: best σ_U {best:g} ({top.summary()}), not "
                         f"worse by {SAME} over ×{shown[-1]:g}, not clearly worse over "
                         f"×{possible[-1]:g}")
            hashes += [h for s in sigmas for h in grid[(depth, "fluctuation", s)].hashes()]
    if not parts:
        return missing(STUDY, statement)
    return Claim(
        STUDY, statement,
        f"per data set and depth (where the grid has at least {MIN_SIGMAS} σ_U values), the "
        f"unbroken run of grid σ_U around the best one (chosen on validation) whose accuracy is "
        f"not worse than the best's by more than {SAME} (non-inferiority, paired, α = 0.05); "
        f"holds if it spans at least a factor {SIGMA_SPAN:g} everywhere; does not hold if "
        f"somewhere even the σ_U not clearly worse by {SAME} span less.",
        verdict_of(all(v >= SIGMA_SPAN for v in shown), any(v < SIGMA_SPAN for v in possible)),
        "; ".join(parts), hashes)


Pairs = list[tuple[str, InitCondition, InitCondition]]  # (data set, a, b): judged on a - b


def paired_claim(statement: str, rule: str, pairs: Pairs, holds: Callable[[Paired], bool],
                 fails: Callable[[Paired], bool]) -> Claim:
    """A claim on paired differences a - b: holds if ``holds`` for every pair, does not hold
    if ``fails`` for some (:func:`verdict_of`)."""
    if not pairs:
        return missing(STUDY, statement)
    diffs = [(name, a, b, compare(a, b)) for name, a, b in pairs]
    return Claim(
        STUDY, statement, rule,
        verdict_of(all(holds(d) for *_, d in diffs), any(fails(d) for *_, d in diffs)),
        "; ".join(f"{name}: {_label(a)} {a.summary()} minus {_label(b)} {b.summary()}: {d}"
                  for name, a, b, d in diffs),
        [h for _, a, b, _ in diffs for h in a.hashes() + b.hashes()])


def depth_claim(data: Data) -> Claim:
    pairs: Pairs = []
    for name, grid in by_data_set(data).items():
        shallow = best_fluctuation(grid, 1)
        deeper = [best_fluctuation(grid, d) for d in _depths(grid) if d > 1]
        pairs += [(name, deep, shallow) for deep in deeper if deep and shallow]
    return paired_claim(
        f"With fluctuation-driven initialisation, depth costs little: networks of every depth "
        f"come within {DEPTH_MARGIN} of the 1-layer network's accuracy.",
        f"per data set, each depth's fluctuation network at its best σ_U (chosen on validation) "
        f"minus the 1-layer one at its best σ_U, paired over seeds; holds if every difference "
        f"is not below -{DEPTH_MARGIN} (non-inferiority, α = 0.05); does not hold if some "
        f"difference is shown below -{DEPTH_MARGIN} (one-sided test).",
        pairs, lambda d: d.not_worse(DEPTH_MARGIN), lambda d: d.less(DEPTH_MARGIN))


def deep_randman_claim(data: Data) -> Claim:
    grid = by_data_set(data).get("randman", {})
    deep, shallow = best_fluctuation(grid, 5), grid.get((1, "uniform", None))
    return paired_claim(
        f"On Randman, a 5-hidden-layer network with fluctuation-driven initialisation reaches "
        f"within {DEPTH_MARGIN} of the accuracy of the paper's 1-layer network.",
        f"the 5-layer fluctuation network at its best σ_U (chosen on validation) minus the "
        f"paper's network (1 hidden layer, uniform init), each at its chosen learning rate, "
        f"paired over seeds; holds if not below -{DEPTH_MARGIN} (non-inferiority, α = 0.05); "
        f"does not hold if shown below -{DEPTH_MARGIN} (one-sided test).",
        [("randman", deep, shallow)] if deep and shallow else [],
        lambda d: d.not_worse(DEPTH_MARGIN), lambda d: d.less(DEPTH_MARGIN))


def uniform_fails_claim(data: Data) -> Claim:
    statement = ("With the default (uniform) initialisation, deep networks fail: the "
                 "5-hidden-layer network stays near chance.")
    near, above, parts, hashes = [], [], [], []
    for name, grid in by_data_set(data).items():
        deep = grid.get((5, "uniform", None))
        if deep is None or not deep.trials:
            continue
        level = chance(deep.trials[0])
        scores = deep.by_seed()
        over = Paired.of(scores, {s: level for s in scores})
        near.append(over.below(LEARNED))
        above.append(over.greater(LEARNED))
        parts.append(f"{name}: {deep.summary()}, chance {level:.3f}, minus chance {over}")
        hashes += deep.hashes()
    if not parts:
        return missing(STUDY, statement)
    return Claim(
        STUDY, statement,
        f"per data set, the 5-layer network with uniform init at its chosen learning rate; "
        f"holds if on every data set its accuracy is not above chance by {LEARNED} (upper 95 % "
        f"bound); does not hold if on some data set it is above chance by more than {LEARNED}.",
        verdict_of(all(near), any(above)), "; ".join(parts), hashes)


def deep_better_claim(data: Data) -> Claim:
    pairs: Pairs = []
    for name, grid in by_data_set(data).items():
        fluctuation = best_fluctuation(grid, 5)
        others = [grid.get((5, scheme, None)) for scheme in ("uniform", "gaussian")]
        pairs += [(name, fluctuation, other) for other in others if fluctuation and other]
    return paired_claim(
        "Fluctuation-driven initialisation trains deep (5-hidden-layer) networks better than "
        "the standard initialisations (uniform and Gaussian).",
        f"per data set, the 5-layer fluctuation network at its best σ_U (chosen on validation) "
        f"minus the 5-layer uniform and Gaussian ones, paired over seeds; holds if every "
        f"difference exceeds {LEARNED} (one-sided test, α = 0.05); does not hold if some "
        f"difference is shown below {LEARNED}.",
        pairs, lambda d: d.greater(LEARNED), lambda d: d.below(LEARNED))


CLAIMS: list[Callable[[Data], Claim]] = [
    sigma_claim, depth_claim, deep_randman_claim, uniform_fails_claim, deep_better_claim,
]
"""The init study's claims, in the order of the report."""
