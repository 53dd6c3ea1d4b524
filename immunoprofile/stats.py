"""Exact paired statistics for small cohorts (n = 7 patients is the design case).

Everything here works on one vector of paired differences ``d = followup - baseline``
(or on p-values, for the false discovery rate) and is exact, never a normal
approximation, up to `EXACT_MAX_N` pairs (far beyond any trial cohort); beyond that the
signed-rank test and the interval use the normal approximation of the same statistic
with the exact permutation variance (ties and zeros included), and the ``test`` field
names it:

* `hodges_lehmann`: the Hodges–Lehmann estimate of the median change (the median of the
  Walsh averages ``(d_i + d_j) / 2, i <= j``) and its distribution-free confidence
  interval, whose end points are order statistics of the Walsh averages chosen from the
  exact null distribution of the signed-rank statistic (Hollander, Wolfe & Chicken,
  *Nonparametric Statistical Methods*, 3rd ed., section 3.3).
* `signed_rank_test`: the exact Wilcoxon signed-rank test (``scipy.stats.wilcoxon`` with
  ``method="exact"``) when the differences have neither zeros nor tied magnitudes; with
  ties or zeros that null distribution no longer holds, so the exact sign-flip
  permutation test of the same statistic (mid-ranks of the non-zero ``|d|``, every one
  of the ``2**n`` sign patterns equally likely) is used instead.
* `paired_t_log`: the paired t test on log2 ratios, a parametric secondary.
* `benjamini_hochberg`: BH adjusted p-values (q-values) that pass missing values through.

With n = 7 and no ties the smallest attainable two-sided p is ``2 / 2**7 = 0.0156``, so a
Bonferroni or Holm correction over four endpoints (threshold 0.0125) can never reach
significance: effect sizes and their confidence intervals carry the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np


def _scipy_stats() -> ModuleType:
    """``scipy.stats``, imported on first use: it takes a good part of a second to import,
    and processes that only gate or cluster never need it."""
    from scipy import stats

    return stats


WILCOXON_EXACT = "wilcoxon exact"
SIGN_FLIP = "sign-flip permutation (exact, mid-ranks)"
NO_TEST = "none"
#: the largest number of pairs given exact tests and intervals (the exact null
#: distribution costs O(n**3) work; beyond this the normal approximation is accurate)
EXACT_MAX_N = 400
NORMAL_APPROX = f"signed-rank normal approximation (n > {EXACT_MAX_N}, tie-corrected)"


def _sign_pattern_probs(ranks: np.ndarray) -> np.ndarray:
    """P(T+ = t), t = 0 .. sum(ranks), for positive integer ``ranks`` over the ``2**n``
    equally likely sign patterns: the generating function ``prod (1 + x**r) / 2``, halved
    at each factor so that no count overflows (``2.0**1024`` does)."""
    total = int(ranks.sum())
    probs = np.zeros(total + 1, dtype=float)
    probs[0] = 1.0
    for r in ranks:
        r = int(r)
        probs[r:] = (probs[r:] + probs[:-r].copy()) * 0.5
        probs[:r] *= 0.5
    return probs


def _clean(d: np.ndarray | list[float]) -> np.ndarray:
    """Finite values of a 1-D vector of differences, as float64."""
    x = np.asarray(d, dtype=float).ravel()
    return x[np.isfinite(x)]


def walsh_averages(d: np.ndarray | list[float]) -> np.ndarray:
    """All ``n (n + 1) / 2`` Walsh averages ``(d_i + d_j) / 2`` for ``i <= j``, sorted."""
    x = _clean(d)
    i, j = np.triu_indices(x.size)
    return np.sort((x[i] + x[j]) / 2.0)


def signed_rank_null_counts(n: int) -> np.ndarray:
    """Number of the ``2**n`` sign patterns giving each value ``T+ = 0 .. n(n+1)/2``.

    The exact null distribution of the Wilcoxon signed-rank statistic without ties,
    computed by multiplying the generating functions ``(1 + x**r)`` for ``r = 1..n``.
    """
    m = n * (n + 1) // 2
    counts = np.zeros(m + 1, dtype=float)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts


@dataclass(frozen=True)
class HodgesLehmann:
    """Hodges–Lehmann estimate of the median paired change with its exact interval.

    Attributes
    ----------
    estimate : median of the Walsh averages (NaN without data).
    low, high : confidence interval end points (NaN when no interval of the requested
        level exists for this n, e.g. n <= 5 at 95 %).
    level : the exact coverage the interval achieves under the continuous null
        (``1 - 2 P(T+ <= k - 1)``), at least the requested level; NaN without interval.
    k : the interval is ``[W_(k), W_(M + 1 - k)]`` of the M sorted Walsh averages.
    n : number of finite differences used.
    """

    estimate: float
    low: float
    high: float
    level: float
    k: int
    n: int


def hodges_lehmann(d: np.ndarray | list[float], conf: float = 0.95) -> HodgesLehmann:
    """Hodges–Lehmann estimate and exact distribution-free confidence interval.

    The interval is the set of shifts ``theta`` that the two-sided exact signed-rank test
    of ``d - theta`` does not reject at level ``1 - conf``; its end points are the
    ``k``-th smallest and ``k``-th largest Walsh averages, with ``k - 1`` the largest
    value whose lower-tail null probability ``P(T+ <= k - 1)`` is at most
    ``(1 - conf) / 2``. Ties among the differences make the coverage nominal rather
    than exact; the end points are computed the same way.

    Parameters
    ----------
    d : paired differences (non-finite values are ignored).
    conf : requested two-sided confidence level, e.g. 0.95.

    Examples
    --------
    >>> r = hodges_lehmann([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    >>> r.estimate, r.low, r.high
    (4.0, 2.0, 6.0)
    """
    if not 0.0 < conf < 1.0:
        raise ValueError(f"conf must be between 0 and 1, got {conf}")
    x = _clean(d)
    n = x.size
    if n == 0:
        return HodgesLehmann(np.nan, np.nan, np.nan, np.nan, 0, 0)
    w = walsh_averages(x)
    est = float(np.median(w))
    m = w.size
    alpha2 = (1.0 - conf) / 2.0
    if n > EXACT_MAX_N:  # normal approximation of P(T+ <= t), continuity-corrected
        mean, sd = n * (n + 1) / 4.0, np.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
        t = int(np.floor(mean + sd * _scipy_stats().norm.ppf(alpha2) - 0.5))
        if t < 0:
            return HodgesLehmann(est, np.nan, np.nan, np.nan, 0, n)
        k = t + 1
        level = 1.0 - 2.0 * float(_scipy_stats().norm.cdf((t + 0.5 - mean) / sd))
        return HodgesLehmann(est, float(w[k - 1]), float(w[m - k]), level, k, n)
    cdf = np.cumsum(_sign_pattern_probs(np.arange(1, n + 1)))  # P(T+ <= t)
    ok = np.flatnonzero(cdf <= alpha2 + 1e-12)
    if ok.size == 0:  # even [min W, max W] covers less than conf
        return HodgesLehmann(est, np.nan, np.nan, np.nan, 0, n)
    k = int(ok[-1]) + 1  # P(T+ <= k-1) <= alpha/2
    level = 1.0 - 2.0 * float(cdf[k - 1])
    return HodgesLehmann(est, float(w[k - 1]), float(w[m - k]), level, k, n)


@dataclass(frozen=True)
class SignedRankResult:
    """Outcome of `signed_rank_test`.

    Attributes
    ----------
    statistic : ``min(T+, T-)``, sums of the (mid-)ranks of positive / negative changes.
    pvalue : exact two-sided p-value (NaN without data; 1.0 when every difference is 0).
    test : which test produced ``pvalue`` (`WILCOXON_EXACT`, `SIGN_FLIP` or `NO_TEST`).
    n : number of finite differences; n_zero of them are exactly zero.
    """

    statistic: float
    pvalue: float
    test: str
    n: int
    n_zero: int


def sign_flip_pvalue(d: np.ndarray | list[float]) -> tuple[float, float]:
    """Exact two-sided sign-flip permutation p-value of the signed-rank statistic.

    Zero differences are set aside (flipping their sign changes nothing); the non-zero
    ``|d|`` are ranked with mid-ranks for ties, and the statistic ``S = sum sign_i r_i``
    is referred to its distribution over all ``2**n`` equally likely sign patterns. The
    count of patterns at each value of ``T+`` (the sum of ranks given a plus sign) comes
    from the product of generating functions ``(1 + x**(2 r_i))`` (doubling makes mid-ranks
    integers), which enumerates the same 2**n patterns without listing them.

    Returns
    -------
    (statistic, pvalue) with statistic ``min(T+, T-)``; p is 1.0 when every difference is 0.
    """
    x = _clean(d)
    x = x[x != 0.0]
    n = x.size
    if n == 0:
        return 0.0, 1.0
    r2 = np.rint(2.0 * _scipy_stats().rankdata(np.abs(x))).astype(np.int64)  # doubled mid-ranks
    total = int(r2.sum())
    probs = _sign_pattern_probs(r2)  # r >= 2: ranks start at 1
    t_plus = int(r2[x > 0].sum())
    s_obs = abs(2 * t_plus - total)  # |S| on the doubled scale
    values = np.arange(total + 1)
    extreme = np.abs(2 * values - total) >= s_obs
    p = float(min(1.0, probs[extreme].sum()))
    stat = min(t_plus, total - t_plus) / 2.0
    return float(stat), p


def _normal_signed_rank(x: np.ndarray) -> tuple[float, float]:
    """Two-sided p of the signed-rank statistic by its normal approximation, with the
    permutation mean ``sum(r) / 2`` and variance ``sum(r**2) / 4`` of the mid-ranks of the
    non-zero ``|d|`` (exact under ties), continuity-corrected. Returns (min(T+, T-), p)."""
    x = x[x != 0.0]
    if x.size == 0:
        return 0.0, 1.0
    r = _scipy_stats().rankdata(np.abs(x))
    total = float(r.sum())
    t_plus = float(r[x > 0].sum())
    sd = float(np.sqrt(np.sum(r**2) / 4.0))
    dev = max(abs(t_plus - total / 2.0) - 0.5, 0.0)
    p = float(min(1.0, 2.0 * _scipy_stats().norm.sf(dev / sd))) if sd > 0 else 1.0
    return min(t_plus, total - t_plus), p


def signed_rank_test(d: np.ndarray | list[float]) -> SignedRankResult:
    """Exact two-sided test that the paired differences are centred on zero.

    Uses ``scipy.stats.wilcoxon(method="exact")`` when there are no zero differences and
    no tied ``|d|`` (its null distribution is then exact); otherwise the exact sign-flip
    permutation test (`sign_flip_pvalue`). The ``test`` field says which.
    """
    x = _clean(d)
    n = x.size
    n_zero = int(np.count_nonzero(x == 0.0))
    if n == 0:
        return SignedRankResult(np.nan, np.nan, NO_TEST, 0, 0)
    if n - n_zero > EXACT_MAX_N:
        stat, p = _normal_signed_rank(x)
        return SignedRankResult(stat, p, NORMAL_APPROX, n, n_zero)
    ties = np.unique(np.abs(x)).size < n
    if n_zero == 0 and not ties:
        res = _scipy_stats().wilcoxon(x, method="exact", alternative="two-sided")
        return SignedRankResult(float(res.statistic), float(res.pvalue), WILCOXON_EXACT, n, 0)
    stat, p = sign_flip_pvalue(x)
    return SignedRankResult(stat, p, SIGN_FLIP, n, n_zero)


@dataclass(frozen=True)
class LogRatioT:
    """Paired t test on log2 ratios (follow-up / baseline), a parametric secondary.

    Attributes
    ----------
    n : pairs with both values positive (others have no log ratio).
    mean_log2 : mean log2 ratio; ``2**mean_log2`` is the geometric mean fold change.
    low, high : 95 % t interval of the mean log2 ratio.
    pvalue : two-sided one-sample t test of mean log2 ratio = 0 (NaN for n < 2).
    """

    n: int
    mean_log2: float
    low: float
    high: float
    pvalue: float


def paired_t_log(log2_ratios: np.ndarray | list[float], conf: float = 0.95) -> LogRatioT:
    """One-sample t test of log2 ratios (non-finite ratios, from zero values, are skipped)."""
    x = _clean(log2_ratios)
    n = x.size
    if n == 0:
        return LogRatioT(0, np.nan, np.nan, np.nan, np.nan)
    mean = float(x.mean())
    if n < 2:
        return LogRatioT(n, mean, np.nan, np.nan, np.nan)
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        return LogRatioT(n, mean, mean, mean, p)
    se = sd / np.sqrt(n)
    tcrit = float(_scipy_stats().t.ppf(0.5 + conf / 2.0, n - 1))
    p = float(2.0 * _scipy_stats().t.sf(abs(mean / se), n - 1))
    return LogRatioT(n, mean, mean - tcrit * se, mean + tcrit * se, p)


def benjamini_hochberg(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values); NaN in, NaN out.

    ``q_(i) = min_{j >= i} min(1, m p_(j) / j)`` over the m non-missing p-values sorted
    increasingly (Benjamini & Hochberg 1995, step-up procedure), computed by
    `scipy.stats.false_discovery_control` on the non-missing values.
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return q
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok].tolist()}")
    q[ok] = _scipy_stats().false_discovery_control(p[ok], method="bh")
    return q
