"""The book's statistics, pure functions of numbers (no I/O, no torch): spread over training seeds,
the stated test on each ordering a table claims, its power, chance, failed runs and convergence.

Accuracies are in percentage points, like the paper's. Every rule below was fixed before the
runs it judges (issue 27) and is printed on each page (`TEST`, `FAILURE_RULE`, `UNINFORMATIVE`).

A claim "a beats b" (a = the row the paper says is better), per-seed values of both sides:
- `uninformative` (about the proxy, never about a row's spread): both means >= CEILING (95%), or
  each mean within 2 binomial SEs of chance on the validation set (the SE of one run's accuracy
  at chance on n_val clips; the seeds' spread never widens it).
- otherwise Welch's two-sided t-test (`scipy.stats.ttest_ind(equal_var=False)`, its own
  Welch-Satterthwaite df); the p-values of a results.json's informative claims are Holm-adjusted
  together (`holm`). `holds` exactly when the adjusted p < ALPHA and the difference is positive,
  `reversed` when it is < ALPHA and negative, `not resolved` otherwise (fewer than 2 seeds a
  side, or no spread at all, is never resolved).
- each claim also carries the difference's 95% CI (Welch) and the minimum detectable difference
  (`mdd`): the smallest true difference the test finds with POWER (80%) at alpha 0.05 unadjusted,
  for its n and observed SDs (noncentral t).

A run *fails* (`failed`, rule `FAILURE_RULE`) when optimisation did not take: below half of its
row's median, or within noise of chance while its row's median is clearly above chance. Failed
runs stay in every mean and test; a row shows how many failed with a Clopper-Pearson interval.
"""
from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

VERDICTS = ("holds", "reversed", "not resolved", "uninformative")
CEILING = 95.0          # percent: both sides at or above it -> no room for an ordering
ALPHA = 0.05
POWER = 0.80
CONVERGENCE_POINTS = 2.0
CONVERGENCE_RULE = (f"converged: the run's validation top-1 stays within a {CONVERGENCE_POINTS:g}-point band "
                    "over the last quarter of its epochs (from the epoch before that quarter to the last)")
TEST = ("Welch's two-sided t-test on the per-seed top-1 (scipy.stats.ttest_ind, equal_var=False, Welch-Satterthwaite "
        f"df), alpha {ALPHA:g}, Holm-adjusted across the informative claims of one results.json; holds exactly when "
        f"the adjusted p < {ALPHA:g} and the difference is positive (reversed: negative). MDD: the smallest true "
        f"difference found with {POWER:.0%} power at alpha {ALPHA:g} for the claim's n and SDs.")
UNINFORMATIVE = (f"uninformative: both means >= {CEILING:g}% (ceiling), or each mean within 2 binomial SEs of "
                 "chance on the validation clips (chance); a row's seed spread never widens that band")
FAILURE_RULE = ("failed: a run whose final top-1 is below half of its row's median, or within 2 binomial SEs of "
                "chance while its row's median is more than 4 binomial SEs above chance (fixed before the runs)")


def finite(x) -> bool:
    """A real number as stored data may hold it: int or float, not bool, not nan or inf."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


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
    """Is the mean of `xs` within 2 binomial SEs (one run on n_val clips, at chance) of chance?"""
    return abs(mean(xs) - chance_percent) <= 2 * binomial_se(chance_percent, n_val)


# ---- failed runs ----------------------------------------------------------------------------

def failed(xs: list[float], n_val: int | None, chance_percent: float | None) -> list[bool]:
    """FAILURE_RULE for each run of one row (its per-seed final top-1)."""
    if not xs:
        return []
    med = statistics.median(xs)
    flags = [x < 0.5 * med for x in xs]
    if n_val and chance_percent is not None:
        se = binomial_se(chance_percent, n_val)
        if med > chance_percent + 4 * se:
            flags = [f or x <= chance_percent + 2 * se for f, x in zip(flags, xs)]
    return flags


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion k / n (scipy.stats.binomtest)."""
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


# ---- the test -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """The numbers behind one verdict. `why` is a short fixed code for the page:
    ceiling | chance | one seed | no spread | welch. `p_adj` and the final verdict of a `welch`
    comparison come from `adjust` over a results.json's claims (until then "not resolved")."""
    diff: float
    se_diff: float | None
    n_seeds: tuple[int, int]
    verdict: str
    why: str
    df: float | None = None
    p: float | None = None
    p_adj: float | None = None
    ci: tuple[float, float] | None = None
    mdd: float | None = None


def welch(a: list[float], b: list[float]) -> tuple[float, float, float, float, tuple[float, float]]:
    """Welch's test of mean(a) - mean(b): (diff, se, df, two-sided p, 95% CI). Needs >= 2 values a
    side and some spread; p from scipy.stats.ttest_ind(equal_var=False)."""
    from scipy import stats as st

    va, vb = variance(a), variance(b)
    se = math.sqrt(va / len(a) + vb / len(b))
    df = welch_df(va, len(a), vb, len(b))
    diff = mean(a) - mean(b)
    with warnings.catch_warnings():   # nearly identical seeds: scipy warns of precision loss; se above is exact
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(st.ttest_ind(a, b, equal_var=False).pvalue)
    h = float(st.t.ppf(0.975, df)) * se
    return diff, se, df, p, (diff - h, diff + h)


def welch_df(va: float, na: int, vb: float, nb: int) -> float:
    """Welch-Satterthwaite degrees of freedom."""
    qa, qb = va / na, vb / nb
    return (qa + qb) ** 2 / (qa ** 2 / (na - 1) + qb ** 2 / (nb - 1))


def mdd(sd_a: float, n_a: int, sd_b: float, n_b: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Minimum detectable difference: the true difference that Welch's two-sided test at `alpha`
    finds with probability `power`, for these n and SDs (noncentral t, Welch df)."""
    from scipy import stats as st
    from scipy.optimize import brentq

    if n_a < 2 or n_b < 2 or (sd_a == 0 and sd_b == 0):
        return None
    se = math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b)
    df = welch_df(sd_a ** 2, n_a, sd_b ** 2, n_b)
    crit = float(st.t.ppf(1 - alpha / 2, df))

    def short(delta):   # power(delta) - target
        nc = delta / se
        lower = float(st.nct.cdf(-crit, df, nc))   # the far tail: scipy may return nan where it is ~0
        return float(st.nct.sf(crit, df, nc)) + (0.0 if math.isnan(lower) else lower) - power

    return float(brentq(short, 0.0, (crit + 8) * se))   # power is > 0.99 there


def compare(a: list[float], b: list[float], n_val: int, chance_percent: float | None) -> Comparison:
    """Does `a` (per-seed values of the row claimed better) beat `b`? The unadjusted test; a
    `welch` comparison gets its verdict from `adjust` (see the module docstring).

    `n_val` (validation clips) is required: a missing sample size is an error, never infinity.
    `chance_percent` None: no chance check (e.g. a metric that is not an accuracy)."""
    if not a or not b:
        raise ValueError("compare needs at least one value per side")
    n_val = _check_n(n_val)
    ma, mb = mean(a), mean(b)
    diff = ma - mb
    n = (len(a), len(b))
    va, vb = variance(a), variance(b)
    se = math.sqrt(va / len(a) + vb / len(b)) if va is not None and vb is not None else None
    if ma >= CEILING and mb >= CEILING:
        return Comparison(diff, se, n, "uninformative", "ceiling")
    if chance_percent is not None and near_chance(a, n_val, chance_percent) and near_chance(b, n_val, chance_percent):
        return Comparison(diff, se, n, "uninformative", "chance")
    if se is None:
        return Comparison(diff, se, n, "not resolved", "one seed")
    if se == 0:
        return Comparison(diff, se, n, "not resolved", "no spread")
    diff, se, df, p, ci = welch(a, b)
    return Comparison(diff, se, n, "not resolved", "welch", df=df, p=p, ci=ci,
                      mdd=mdd(math.sqrt(va), len(a), math.sqrt(vb), len(b)))


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the i-th smallest of m is
    multiplied by (m - i), made monotone, capped at 1."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def adjust(comps: list[Comparison]) -> list[Comparison]:
    """The family of one results.json: Holm over its `welch` comparisons, then the verdicts."""
    idx = [i for i, c in enumerate(comps) if c is not None and c.why == "welch"]
    adj = holm([comps[i].p for i in idx])
    out = list(comps)
    for i, q in zip(idx, adj):
        c = comps[i]
        verdict = "not resolved" if q >= ALPHA else ("holds" if c.diff > 0 else "reversed")
        out[i] = Comparison(c.diff, c.se_diff, c.n_seeds, verdict, c.why, c.df, c.p, q, c.ci, c.mdd)
    return out


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
