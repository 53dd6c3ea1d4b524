"""How well clustering agrees with template gating, and with the simulator's truth.

For each named population, the frequency from gating (x) and from clustering (y) are
paired across samples and summarised by:

- Pearson's r (linear association only);
- Lin's concordance correlation coefficient (Lin, 1989, Biometrics 45:255),
  ``rho_c = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with 1/n moments, which
  also penalises a shift or a slope other than 1;
- Bland-Altman bias and 95 % limits of agreement (Bland & Altman, 1986, Lancet
  i:307): ``d = y - x``, bias ``mean(d)``, limits ``bias -+ 1.96 sd(d)`` (sd with n-1).

How a population was named matters for reading its agreement. A population the SOM nodes
resolve is counted by whole clusters, and its agreement with gating is an independent
check. A sub-population the nodes do not resolve is named per event by each sample's own
fitted template gate (``resolution.csv``): its clustered frequency then comes from the
same gate as the gated one, so its agreement is largely by construction. The ``naming``
and ``naming_f1`` columns of `agreement_table` say which is which.

Against per-event truth labels: the adjusted Rand index (Hubert & Arabie, 1985) through
scikit-learn, and the per-sample frequency error in percentage points.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from immunoprofile._files import unescape_cell
from immunoprofile.exceptions import ClusteringError

__all__ = [
    "lins_ccc",
    "bland_altman",
    "pearson_r",
    "agreement_table",
    "agreement_pairs",
    "naming_levels",
    "by_construction",
    "EVENT_TEMPLATE",
    "EVENT_RULE",
    "adjusted_rand",
    "frequency_error",
]


#: ``naming`` of a population named per event by each sample's fitted template gate
EVENT_TEMPLATE = "event (template gate)"
#: ``naming`` of a population named per event by the phenotype rule's pooled cuts
EVENT_RULE = "event (rule)"
NAMING_COLUMNS = ("naming", "naming_f1")


def naming_levels(
    resolution: pd.DataFrame,
    populations: Sequence[str] = (),
    name_level: str = "node",
) -> pd.DataFrame:
    """How each named population of a clustering was named: ``population, naming,
    naming_f1``.

    Parameters
    ----------
    resolution : `ClusterResult.resolution` (or ``resolution.csv``): per population with a
        parent, ``gate`` (``per-sample``/``rule``), ``f1`` (membership by cluster vs by
        the events' own gate, within the parent) and ``level`` (``cluster``/``event``).
    populations : further named populations (top-level ones have no resolution row);
        they are named per cluster.
    name_level : what the clusters are (``node`` or ``metacluster``).

    Returns
    -------
    DataFrame: ``naming`` is ``name_level`` for populations named per cluster,
    `EVENT_TEMPLATE` for those named per event by the sample's fitted gate, `EVENT_RULE`
    for those named per event by the rule's cuts; ``naming_f1`` is the resolution F1 (NaN
    for top-level populations).
    """
    missing = {"population", "gate", "f1", "level"} - set(resolution.columns)
    if len(resolution.columns) and missing:
        raise ClusteringError(f"naming_levels: resolution table lacks columns {sorted(missing)}")
    rows = []
    for r in resolution.itertuples(index=False):
        if r.level == "event":
            how = EVENT_TEMPLATE if r.gate == "per-sample" else EVENT_RULE
        else:
            how = name_level
        rows.append({"population": r.population, "naming": how, "naming_f1": float(r.f1)})
    seen = {r["population"] for r in rows}
    rows.extend(
        {"population": p, "naming": name_level, "naming_f1": float("nan")}
        for p in populations
        if p not in seen
    )
    return pd.DataFrame(rows, columns=["population", *NAMING_COLUMNS])


def by_construction(table: pd.DataFrame) -> pd.Series:
    """Rows of an agreement table whose clustered frequency came from the same per-sample
    template gate as the gated one (``naming`` == `EVENT_TEMPLATE`): agreement there is
    not an independent check. False everywhere when the table has no ``naming``."""
    if "naming" not in table.columns:
        return pd.Series(False, index=table.index)
    return table["naming"].astype(str).eq(EVENT_TEMPLATE)


def _pair(x: Sequence[float], y: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ClusteringError(f"{what}: x and y differ in length ({x.size} vs {y.size})")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of paired values (NaN when fewer than 2 pairs or no spread)."""
    x, y = _pair(x, y, "pearson_r")
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def lins_ccc(x: Sequence[float], y: Sequence[float]) -> float:
    """Lin's concordance correlation coefficient of paired values (1/n moments).

    Examples
    --------
    >>> round(lins_ccc([1, 2, 3, 4, 5], [2, 3, 4, 5, 7]), 6)
    0.75
    """
    x, y = _pair(x, y, "lins_ccc")
    if x.size < 2:
        return float("nan")
    mx, my = x.mean(), y.mean()
    sxy = np.mean((x - mx) * (y - my))
    den = x.var() + y.var() + (mx - my) ** 2
    if den == 0:
        return float("nan")
    return float(2 * sxy / den)


def bland_altman(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Bland-Altman bias (mean of y - x), its sd (n-1) and the 95 % limits of agreement."""
    x, y = _pair(x, y, "bland_altman")
    d = y - x
    if d.size == 0:
        nan = float("nan")
        return {"bias": nan, "sd": nan, "loa_low": nan, "loa_high": nan}
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def agreement_pairs(
    gated: pd.DataFrame,
    clustered: pd.DataFrame,
    value: str = "percent_of_parent",
    populations: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Gated and clustered ``value`` side by side: ``sample, population, gated, clustered``,
    one row per (sample, population) present in both tables."""
    for name, tab in (("gated", gated), ("clustered", clustered)):
        missing = {"sample", "population", value} - set(tab.columns)
        if missing:
            raise ClusteringError(f"agreement: {name} table lacks columns {sorted(missing)}")
    g = gated[["sample", "population", value]].rename(columns={value: "gated"})
    c = clustered[["sample", "population", value]].rename(columns={value: "clustered"})
    g = g.groupby(["sample", "population"], as_index=False, sort=False)["gated"].first()
    c = c.groupby(["sample", "population"], as_index=False, sort=False)["clustered"].first()
    both = g.merge(c, on=["sample", "population"], how="inner")
    if populations is not None:
        both = both[both["population"].isin(list(populations))]
    return both.reset_index(drop=True)


def read_gating_table(path: str | os.PathLike, value: str = "percent_of_parent") -> pd.DataFrame:
    """A gated population table (``immunoprofile gate``'s populations.csv) to compare the
    clusters with, checked: readable, with ``sample``, ``population`` and a numeric
    ``value`` column. Raises `ClusteringError` naming the file, column and lines."""

    p = Path(path)
    try:
        df = pd.read_csv(p, dtype={"sample": str, "population": str})
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ParserError is a ValueError
        raise ClusteringError(f"gating table {p}: cannot be read as CSV ({exc})") from None
    missing = [c for c in ("sample", "population", value) if c not in df.columns]
    if missing:
        raise ClusteringError(
            f"gating table {p}: missing column(s) {missing}; it has {list(df.columns)} "
            "(expected the populations.csv of immunoprofile gate)"
        )
    num = pd.to_numeric(df[value], errors="coerce")
    bad = df[value].notna() & num.isna()
    if bad.any():
        lines = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())]
        shown = [str(x) for x in df.loc[bad, value].head(3)]
        raise ClusteringError(
            f"gating table {p}: column {value!r} must hold numbers; line(s) "
            f"{lines[:10]}{' ...' if len(lines) > 10 else ''} hold {shown}"
        )
    df[value] = num.astype(float)
    for c in ("sample", "population"):
        df[c] = df[c].map(unescape_cell)
    return df


def agreement_table(
    gated: pd.DataFrame,
    clustered: pd.DataFrame,
    value: str = "percent_of_parent",
    populations: Sequence[str] | None = None,
    naming: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Gated vs clustered frequency of every population found in both tables.

    Parameters
    ----------
    gated, clustered : tidy population tables (columns ``sample``, ``population`` and
        ``value``); rows are paired on (sample, population).
    value : the frequency column to compare.
    populations : restrict to these populations (default: all in both).
    naming : how the clusters named each population (`ClusterResult.naming_table` or
        `naming_levels`); fills ``naming`` and ``naming_f1`` (empty/NaN without it).

    Returns
    -------
    DataFrame, one row per population: ``population, n, mean_gated, mean_clustered,
    pearson_r, lins_ccc, bias, sd, loa_low, loa_high, naming, naming_f1`` (bias =
    clustered - gated, in the units of ``value``). Rows with ``naming`` ==
    `EVENT_TEMPLATE` agree with gating largely by construction (see `by_construction`).
    """
    both = agreement_pairs(gated, clustered, value, populations)
    rows = []
    for pop, sub in both.groupby("population", sort=False):
        x, y = sub["gated"].to_numpy(float), sub["clustered"].to_numpy(float)
        rows.append(
            {
                "population": pop,
                "n": int(np.isfinite(x).sum()),
                "mean_gated": float(np.nanmean(x)),
                "mean_clustered": float(np.nanmean(y)),
                "pearson_r": pearson_r(x, y),
                "lins_ccc": lins_ccc(x, y),
                **bland_altman(x, y),
            }
        )
    cols = ["population", "n", "mean_gated", "mean_clustered", "pearson_r", "lins_ccc"]
    out = pd.DataFrame(rows, columns=[*cols, "bias", "sd", "loa_low", "loa_high"])
    if naming is None:
        out["naming"] = pd.Series([""] * len(out), index=out.index, dtype=object)
        out["naming_f1"] = np.nan
        return out
    missing = {"population", *NAMING_COLUMNS} - set(naming.columns)
    if missing:
        raise ClusteringError(f"agreement: naming table lacks columns {sorted(missing)}")
    how = naming.drop_duplicates("population").set_index("population")
    out["naming"] = out["population"].map(how["naming"]).fillna("").astype(object)
    out["naming_f1"] = out["population"].map(how["naming_f1"]).astype(float)
    return out


def adjusted_rand(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Adjusted Rand index of two labelings of the same events (scikit-learn)."""
    from sklearn.metrics import adjusted_rand_score

    a, b = np.asarray(labels_true), np.asarray(labels_pred)
    if a.shape != b.shape:
        raise ClusteringError(f"adjusted_rand: {a.size} true labels vs {b.size} predicted")
    return float(adjusted_rand_score(a, b))


def frequency_error(
    estimated: pd.DataFrame, truth: pd.DataFrame, value: str = "percent_of_parent"
) -> pd.DataFrame:
    """Per sample and population: estimated, true and error (estimated - true), in ``value`` units."""
    e = estimated[["sample", "population", value]].rename(columns={value: "estimated"})
    t = truth[["sample", "population", value]].rename(columns={value: "truth"})
    out = e.merge(t, on=["sample", "population"], how="inner")
    out["error"] = out["estimated"] - out["truth"]
    return out
