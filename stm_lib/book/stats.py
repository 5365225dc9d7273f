"""The book's statistics, pure functions of numbers (no I/O, no torch): spread over training seeds,
the verdict on each ordering the paper claims, chance, and the convergence rule.

Accuracies are in percentage points, like the paper's.

Verdict rule (issue 10): with a = the row the paper says is better, b = the other,
    diff = mean(a) - mean(b),  se_diff = sqrt(s_a^2 / n_a + s_b^2 / n_b)   (s: sample std over seeds)
- `uninformative`: both means >= CEILING (95%), or both within noise of chance, where a mean is
  within noise of chance when |mean - chance| <= 2 * max(binomial SE of chance on n_val clips,
  the seed SE of that mean). Ceiling and chance say something about the proxy, not about the
  models, so they are checked first and hold with one seed too.
- `not resolved`: fewer than 2 seeds on either side (no verdict from a single seed), or
  |diff| <= 2 * se_diff.
- `holds`: diff > 2 * se_diff;  `reversed`: diff < -2 * se_diff.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

VERDICTS = ("holds", "reversed", "not resolved", "uninformative")
CEILING = 95.0          # percent: both sides at or above it -> no room for an ordering
CONVERGENCE_POINTS = 2.0
CONVERGENCE_RULE = (f"converged: the run's validation top-1 stays within a {CONVERGENCE_POINTS:g}-point band "
                    "over the last quarter of its epochs (from the epoch before that quarter to the last)")


def mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def variance(xs: list[float]) -> float | None:
    """Sample variance (n - 1); None for fewer than two values."""
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def std(xs: list[float]) -> float | None:
    """Sample standard deviation over seeds; None for fewer than two values."""
    v = variance(xs)
    return None if v is None else math.sqrt(v)


def seed_se(xs: list[float]) -> float:
    """Standard error of the mean over seeds (0 for one seed: no spread is known)."""
    v = variance(xs)
    return 0.0 if v is None else math.sqrt(v / len(xs))


def binomial_se(p_percent: float, n: int) -> float:
    """Binomial standard error (points) of an accuracy p measured on n validation clips."""
    n = _check_n(n)
    p = min(max(p_percent / 100, 0.0), 1.0)
    return 100 * math.sqrt(p * (1 - p) / n)


def chance(num_classes: int) -> float:
    """Top-1 of a uniform guess, in percent."""
    if not num_classes or num_classes < 1:
        raise ValueError(f"chance needs a positive class count, got {num_classes!r}")
    return 100.0 / num_classes


def near_chance(xs: list[float], n_val: int, chance_percent: float) -> bool:
    """Is the mean of `xs` within noise of chance (rule in the module docstring)?"""
    noise = 2 * max(binomial_se(chance_percent, n_val), seed_se(xs))
    return abs(mean(xs) - chance_percent) <= noise


@dataclass(frozen=True)
class Comparison:
    """The numbers behind one verdict; `why` is a short fixed code for the page's footnote:
    ceiling | chance | one seed | within 2 SE | beyond 2 SE."""
    diff: float
    se_diff: float | None
    n_seeds: tuple[int, int]
    verdict: str
    why: str


def compare(a: list[float], b: list[float], n_val: int, chance_percent: float | None) -> Comparison:
    """Does `a` (per-seed values of the row claimed better) beat `b`? See the module docstring.

    `n_val` (validation clips) is required: a missing sample size is an error, never infinity.
    `chance_percent` None: no chance check (e.g. a metric that is not an accuracy)."""
    if not a or not b:
        raise ValueError("compare needs at least one value per side")
    n_val = _check_n(n_val)
    ma, mb = mean(a), mean(b)
    diff = ma - mb
    va, vb = variance(a), variance(b)
    se = math.sqrt(va / len(a) + vb / len(b)) if va is not None and vb is not None else None
    n = (len(a), len(b))
    if ma >= CEILING and mb >= CEILING:
        return Comparison(diff, se, n, "uninformative", "ceiling")
    if chance_percent is not None and near_chance(a, n_val, chance_percent) and near_chance(b, n_val, chance_percent):
        return Comparison(diff, se, n, "uninformative", "chance")
    if se is None:
        return Comparison(diff, se, n, "not resolved", "one seed")
    if diff > 2 * se:
        return Comparison(diff, se, n, "holds", "beyond 2 SE")
    if diff < -2 * se:
        return Comparison(diff, se, n, "reversed", "beyond 2 SE")
    return Comparison(diff, se, n, "not resolved", "within 2 SE")


def converged(val_top1: list[float], points: float = CONVERGENCE_POINTS) -> bool:
    """The convergence rule (CONVERGENCE_RULE) on one run's per-epoch validation top-1 (%)."""
    if len(val_top1) < 2:
        return False
    k = max(1, math.ceil(len(val_top1) / 4))   # epochs in the last quarter
    window = val_top1[-(k + 1):]               # with the value the quarter starts from
    return max(window) - min(window) < points


def _check_n(n) -> int:
    if n is None or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a validation sample size (positive int) is required, got {n!r}")
    return n
