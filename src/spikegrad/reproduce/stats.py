"""Statistics over seeds for the claims: intervals, paired comparisons, equivalence.

A condition is a set of trials that differ only in their seed. Two conditions are compared
by the differences d_s = a_s - b_s of their test accuracies on the seeds they share: the
seed fixes the data split, the initial weights and the batch order, so the pairing removes
what the seeds share. With n pairs, mean d̄ and sd s (ddof = 1), se = s/√n, and t the
quantile of Student's t with n - 1 degrees of freedom, every decision is made at α = 0.05:

- ``lower`` / ``upper``: the one-sided 95 % confidence bounds d̄ ∓ t(0.95) se;
- ``greater(δ)``: lower > δ, a shows more than δ above b (one-sided test);
- ``less(δ)``: upper < -δ, a lies more than δ below b;
- ``below(x)``: upper < x, the difference is shown smaller than x;
- ``equivalent(δ)``: lower > -δ and upper < δ, the two one-sided tests (TOST) of equivalence
  within the margin δ, which is the 90 % interval inside (-δ, δ);
- ``not_worse(δ)``: lower > -δ (non-inferiority).

Intervals printed in the report are two-sided 95 % (t(0.975)). With fewer than two pairs no
test can decide anything: every test is False.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile (scipy is imported on first use: it takes a while to load)."""
    from scipy import stats as scipy_stats

    return float(scipy_stats.t.ppf(p, df))


ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """Mean, sd (ddof = 1) and two-sided 95 % interval of values over seeds."""

    mean: float
    sd: float
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        x = np.asarray(values, dtype=float)
        n = len(x)
        if n == 0:
            return cls(math.nan, math.nan, 0, math.nan, math.nan)
        mean = float(x.mean())
        if n == 1:
            return cls(mean, math.nan, 1, math.nan, math.nan)
        sd = float(x.std(ddof=1))
        half = _t_quantile(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
        return cls(mean, sd, n, mean - half, mean + half)

    def __str__(self) -> str:
        if self.n == 0:
            return "no trials"
        if self.n == 1:
            return f"{self.mean:.3f} (n = 1)"
        return f"{self.mean:.3f} ± {self.sd:.3f} [{self.low:.3f}, {self.high:.3f}] (n = {self.n})"


@dataclass(frozen=True)
class Paired:
    """The comparison of two conditions on their shared seeds (a - b)."""

    mean: float
    sd: float
    n: int
    lower: float  # one-sided 95 % bounds
    upper: float

    @classmethod
    def of(cls, a: dict[int, float], b: dict[int, float]) -> Paired:
        seeds = sorted(set(a) & set(b))
        d = np.asarray([a[s] - b[s] for s in seeds], dtype=float)
        n = len(d)
        if n < 2:
            mean = float(d.mean()) if n else math.nan
            return cls(mean, math.nan, n, -math.inf, math.inf)
        mean, sd = float(d.mean()), float(d.std(ddof=1))
        half = _t_quantile(1 - ALPHA, n - 1) * sd / math.sqrt(n)
        return cls(mean, sd, n, mean - half, mean + half)

    def greater(self, margin: float = 0.0) -> bool:
        return self.lower > margin

    def less(self, margin: float = 0.0) -> bool:
        return self.upper < -margin

    def below(self, threshold: float) -> bool:
        return self.upper < threshold

    def equivalent(self, margin: float) -> bool:
        return self.lower > -margin and self.upper < margin

    def not_worse(self, margin: float) -> bool:
        return self.lower > -margin

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.3f} (n = {self.n})"
        return f"{self.mean:+.3f} (90 % [{self.lower:+.3f}, {self.upper:+.3f}], n = {self.n})"
