"""openCyto CSV gating templates -> immunoprofile JSON templates.

An openCyto template (Finak et al., PLoS Comput Biol 10:e1003806, 2014) is a table with
one row per population: ``alias, pop, parent, dims, gating_method, gating_args,
collapseDataForGating, groupBy, preprocessing_method, preprocessing_args``. This module
reads it, expands the shorthand rows, and writes the same hierarchy with immunoprofile's
gates:

==================================  =====================================================
openCyto                            immunoprofile
==================================  =====================================================
``mindensity``, ``mindensity2``,    ``density_min`` (1-D) or ``thresholds`` (2-D
``gate_mindensity``                 quadrant); ``gate_range`` -> ``search``, ``adjust``
``tailgate``                        ``tail`` (``tol``, ``gate_range`` -> ``search``)
``quantileGate``                    ``quantile`` (``probs`` -> ``q``)
``boundary``                        ``rectangle`` (``min``/``max`` corners)
``singletGate``                     ``singlets``
``flowClust`` 1-D                   ``gmm`` (``K`` or ``neg + pos`` components)
``flowClust`` 2-D on scatter        ``blob`` (the lymphocyte component)
``flowClust`` 2-D, other markers    ``gmm`` 2-D (``target`` -> nearest component)
``flowClust`` ``transitional=TRUE`` ``hilo`` (high/low corner; see `_hilo_signs`)
``refGate``                         ``boolean`` of the referenced populations when they
                                    share the parent (exact), else a copy of their gates
                                    fitted on this parent (noted in the description)
``boolGate``                        ``boolean`` (``&``, ``|``, ``!``; one operator kind)
==================================  =====================================================

Shorthand: ``pop`` ``+/-`` makes two populations, ``+/-+/-`` (and ``-/++/-``) the four
quadrants; alias ``*`` names them after dims and signs (``CD4+``, ``CD4+CD8-``).
Parents and references may be paths (``cd4/cd57-``), matched from the end.

Arguments that have no counterpart (openCyto's ``min``/``max`` pre-filters, priors,
``collapseDataForGating``, preprocessing) are dropped and listed in the population's
``description``. A method with no counterpart raises `UnsupportedMethodError`, naming
every such row at once.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immunoprofile.exceptions import MarkerNotFoundError, TemplateError, UnsupportedMethodError
from immunoprofile.gating.engine import resolve_dims
from immunoprofile.gating.template import validate_template

_SUPPORTED = (
    "mindensity",
    "mindensity2",
    "tailgate",
    "quantileGate",
    "boundary",
    "singletGate",
    "flowClust",
    "refGate",
    "boolGate",
)

_METHOD_ALIASES = {
    "mindensity": "mindensity",
    "mindensity2": "mindensity",
    "gate_mindensity": "mindensity",
    "gate_mindensity2": "mindensity",
    "tailgate": "tailgate",
    "gate_tail": "tailgate",
    "quantilegate": "quantileGate",
    "gate_quantile": "quantileGate",
    "boundary": "boundary",
    "boundarygate": "boundary",
    "singletgate": "singletGate",
    "gate_singlet": "singletGate",
    "flowclust": "flowClust",
    "flowclust.1d": "flowClust",
    "flowclust.2d": "flowClust",
    "gate_flowclust_1d": "flowClust",
    "gate_flowclust_2d": "flowClust",
    "refgate": "refGate",
    "boolgate": "boolGate",
}

_SCATTER = re.compile(r"^(FSC|SSC|FS|SS)([-_ ]|$)", re.IGNORECASE)
# common names of a viability dye channel, so a template's "Live"/"viability" marker resolves
_VIABILITY_ALIASES = [
    "Viability",
    "Live",
    "LiveDead",
    "Live/Dead",
    "L/D",
    "AViD",
    "Aqua",
    "7-AAD",
    "DAPI",
]


# --------------------------------------------------------------------------------------
# argument parsing (R syntax subset: name = value, c(...), TRUE/FALSE, numbers, strings)
# --------------------------------------------------------------------------------------


def _split_top(text: str, sep: str = ",") -> list[str]:
    out, depth, cur, quote = [], 0, [], ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur))
    return [p.strip() for p in out if p.strip()]


def _value(text: str) -> Any:
    t = text.strip()
    if t.startswith("c(") and t.endswith(")"):
        return [_value(p) for p in _split_top(t[2:-1])]
    if t in ("TRUE", "T"):
        return True
    if t in ("FALSE", "F"):
        return False
    if t in ("NULL", "NA"):
        return None
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    try:
        v = float(t)
    except ValueError:
        return t
    return int(v) if v.is_integer() and "e" not in t.lower() and "." not in t else v


def parse_args(text: str, where: str = "") -> dict[str, Any]:
    """Parse openCyto ``gating_args`` (``"K = 2, target = c(1e5, 5e4)"``) into a dict."""
    out: dict[str, Any] = {}
    for part in _split_top(text or ""):
        name, eq, val = part.partition("=")
        if not eq:
            raise TemplateError(f"{where}: cannot read argument {part!r} (expected name = value)")
        out[name.strip()] = _value(val)
    return out


# --------------------------------------------------------------------------------------
# rows and expansion
# --------------------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    alias: str
    signs: tuple[str, ...]  # one sign per dim ('' for boolGate)
    parent: str
    dims: tuple[str, ...]
    method: str  # canonical name, or the original when unsupported
    raw_method: str
    args: str
    extra: dict[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()
    sibling_rows: list[_Row] = field(default_factory=list)


def _sign_options(pop: str, n: int, where: str) -> list[tuple[str, ...]]:
    """``+``/``-``/``+/-``/``-/+`` per dim, product over dims: ``+/-+/-`` -> 4 quadrants."""
    pop = pop.strip()
    toks: list[list[str]] = []
    i = 0
    while i < len(pop):
        ch = pop[i]
        if ch not in "+-":
            raise TemplateError(f"{where}: cannot read pop {pop!r}")
        if i + 2 < len(pop) and pop[i + 1] == "/" and pop[i + 2] in "+-":
            toks.append([ch, pop[i + 2]])
            i += 3
        else:
            toks.append([ch])
            i += 1
    if n == 0:
        return [("",)]
    if len(toks) != n and len(toks) != 1:
        raise TemplateError(f"{where}: pop {pop!r} does not give one sign per dimension of {n}")
    # one sign for several dims: the inside (+) or outside (-) of a region gate
    return [tuple(p) for p in itertools.product(*toks)]


def _clean_dim(d: str) -> str:
    d = d.strip()
    if d.startswith("<") and d.endswith(">"):
        d = d[1:-1].strip()
    return d


def read_opencyto(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of an openCyto CSV template as dicts (header names as keys)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise TemplateError(f"{path}: no such file") from None
    if not rows:
        raise TemplateError(f"{path}: no rows")
    need = {"alias", "pop", "parent", "dims", "gating_method"}
    missing = need - set(rows[0])
    if missing:
        raise TemplateError(
            f"{path}: not an openCyto template; missing column(s) {sorted(missing)}"
        )
    return rows


def _expand(rows: list[dict[str, str]], src: str) -> list[_Row]:
    out: list[_Row] = []
    for i, r in enumerate(rows, start=2):  # line 1 is the header
        if not any((v or "").strip() for v in r.values() if isinstance(v, str)):
            continue
        where = f"{src} line {i}"
        raw_method = (r.get("gating_method") or "").strip()
        method = _METHOD_ALIASES.get(raw_method.lower(), raw_method)
        dims = tuple(_clean_dim(d) for d in _split_top(r.get("dims") or "") if _clean_dim(d))
        alias = (r.get("alias") or "").strip()
        n = 0 if method == "boolGate" else len(dims)
        options = _sign_options(r.get("pop") or "+", n, where) if n else [()]
        extra = {
            k: (r.get(k) or "").strip()
            for k in (
                "collapseDataForGating",
                "groupBy",
                "preprocessing_method",
                "preprocessing_args",
            )
            if (r.get(k) or "").strip()
        }
        group: list[_Row] = []
        for signs in options:
            if alias == "*" or (len(options) > 1):
                name = "".join(f"{d}{s}" for d, s in zip(dims, signs))
                if alias not in ("*", ""):
                    name = f"{alias}{''.join(signs)}"
            else:
                name = alias
            if not name:
                raise TemplateError(f"{where}: population without an alias")
            row = _Row(
                i,
                name,
                tuple(signs),
                (r.get("parent") or "root").strip(),
                dims,
                method,
                raw_method,
                (r.get("gating_args") or "").strip(),
                extra,
            )
            group.append(row)
        for row in group:
            row.sibling_rows = group
        out.extend(group)
    return out


def _resolve(ref: str, rows: list[_Row], upto: int, where: str) -> _Row | None:
    """The population a parent/reference string names: ``root``, an alias or a path."""
    ref = ref.strip().strip("/")
    if ref in ("", "root"):
        return None
    parts = tuple(p for p in ref.split("/") if p and p != "root")
    cands = [r for r in rows[:upto] if r.path[-len(parts) :] == parts]
    if not cands:
        cands = [r for r in rows if r.path[-len(parts) :] == parts]  # defined further down
    if not cands:
        raise TemplateError(f"{where}: no population {ref!r} to refer to")
    if len(cands) > 1:
        raise TemplateError(
            f"{where}: {ref!r} is ambiguous ({['/'.join(c.path) for c in cands]}); give a path"
        )
    return cands[0]


# --------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------


def _hilo_signs(dims: tuple[str, ...], args: dict[str, Any]) -> tuple[str, str]:
    """Corner of a ``transitional`` flowClust gate.

    openCyto states it only through ``target``, in the instrument's linear units; a target
    coordinate of at least 1000 (above the unstained population on a typical 18-bit
    cytometer scale) is read as "high", below as "low". Without a target: high/high.
    """
    t = args.get("target")
    if isinstance(t, list) and len(t) == 2 and all(isinstance(v, int | float) for v in t):
        return tuple("+" if float(v) >= 1000 else "-" for v in t)  # type: ignore[return-value]
    return ("+", "+")


def _is_scatter(dims: tuple[str, ...]) -> bool:
    return all(_SCATTER.match(d) for d in dims)


def _interval(v: Any) -> list[float] | None:
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) for x in v):
        return [float(v[0]), float(v[1])]
    return None


def _one_dim_spec(
    method: str,
    args: dict[str, Any],
    sign: str,
    dim: str,
    notes: list[str],
    used: set[str],
    keep_ranges: bool = False,
) -> dict[str, Any]:
    """A 1-D adaptive gate spec (without dims) for one of the 1-D methods."""
    if "gate_range" in args and not (keep_ranges and _SCATTER.match(dim)):
        # ranges are written in the units of the instrument and R session the template
        # was made for (scatter in that cytometer's channel units, fluorescence on the
        # session's transform, often arcsinh 0-4.5): they do not carry over
        notes.append(f"gate_range {args['gate_range']} on {dim} dropped (instrument scale)")
        args = {k: v for k, v in args.items() if k != "gate_range"}
    spec: dict[str, Any]
    if method == "mindensity":
        spec = {"type": "density_min", "side": sign}
        if "gate_range" in args:
            spec["search"] = _interval(args["gate_range"])
            used.add("gate_range")
        if isinstance(args.get("adjust"), int | float):
            spec["adjust"] = float(args["adjust"])
            used.add("adjust")
    elif method == "tailgate":
        spec = {"type": "tail", "side": sign}
        if isinstance(args.get("tol"), int | float) and 0 < float(args["tol"]) < 1:
            spec["tol"] = float(args["tol"])
            used.add("tol")
        if "gate_range" in args:
            spec["search"] = _interval(args["gate_range"])
            used.add("gate_range")
        if isinstance(args.get("adjust"), int | float):
            spec["adjust"] = float(args["adjust"])
            used.add("adjust")
        if str(args.get("side", "right")) == "left":
            spec["tail"] = "left"
            used.add("side")
    elif method == "quantileGate":
        q = args.get("probs", args.get("quantile", 0.5))
        spec = {"type": "quantile", "q": float(q), "side": sign}
        used.update({"probs", "quantile"})
    elif method == "flowClust":
        k = args.get("K")
        pos = args.get("pos")
        neg = args.get("neg")
        if isinstance(neg, int) and isinstance(pos, int) and neg >= 1 and pos >= 1:
            k, n_upper = neg + pos, pos
            used.update({"neg", "pos"})
        else:
            k = int(k) if isinstance(k, int | float) else 2
            n_upper = 1
            used.add("K")
        spec = {"type": "gmm", "n_components": max(int(k), 2), "n_upper": n_upper, "side": sign}
    else:  # pragma: no cover - callers pass only the methods above
        raise TemplateError(f"{method} is not a one-dimensional method")
    return spec


@dataclass
class _Converter:
    src: str
    rows: list[_Row]
    names: dict[tuple[str, ...], str] = field(default_factory=dict)
    specs: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    keep_ranges: bool = False

    def name(self, r: _Row | None) -> str | None:
        return None if r is None else self.names[r.path]

    def gate(self, r: _Row, idx: int, notes: list[str]) -> dict[str, Any]:
        where = f"{self.src} line {r.line} ({r.alias})"
        args = parse_args(r.args, where) if r.method != "boolGate" and r.method != "refGate" else {}
        used: set[str] = set()
        m = r.method
        if m == "boolGate":
            return self.boolean(r, idx, where)
        if m == "refGate":
            return self.ref(r, idx, where, notes)
        if not r.dims:
            raise TemplateError(f"{where}: {r.raw_method} needs dims")
        out: dict[str, Any]
        if m == "boundary":
            n = len(r.dims)
            lo, hi = args.get("min"), args.get("max")
            used.update({"min", "max"})
            lo = lo if isinstance(lo, list) else [None] * n
            hi = hi if isinstance(hi, list) else [None] * n
            if len(lo) != n or len(hi) != n:
                raise TemplateError(f"{where}: boundary min/max need {n} values")
            if set(r.signs) != {"+"}:
                raise TemplateError(f"{where}: a boundary gate keeps its inside; pop must be '+'")
            out = {"type": "rectangle", "dims": list(r.dims), "min": lo, "max": hi}
        elif m == "singletGate":
            out = {"type": "singlets", "dims": list(r.dims)}
            if "prediction_level" in args or "wider_gate" in args:
                notes.append(
                    "singletGate prediction_level/wider_gate: immunoprofile uses its own residual band"
                )
                used.update({"prediction_level", "wider_gate", "subsample_pct"})
        elif m in ("mindensity", "tailgate", "quantileGate") or (
            m == "flowClust" and len(r.dims) == 1
        ):
            if len(r.dims) == 1:
                spec = _one_dim_spec(m, args, r.signs[0], r.dims[0], notes, used, self.keep_ranges)
                out = {**spec, "dims": list(r.dims)}
            else:
                if len(r.signs) != len(r.dims):
                    raise TemplateError(
                        f"{where}: pop needs one sign per dimension ({list(r.dims)})"
                    )
                spec = _one_dim_spec(m, args, "+", r.dims[0], notes, used, self.keep_ranges)
                spec.pop("side", None)
                out = {
                    "type": "thresholds",
                    "dims": list(r.dims),
                    "signs": list(r.signs),
                    "method": spec,
                }
        elif m == "flowClust":
            if len(r.dims) != 2:
                raise TemplateError(f"{where}: flowClust takes one or two dims")
            k = int(args["K"]) if isinstance(args.get("K"), int | float) else 2
            used.update({"K", "quantile", "target"})
            q = float(args.get("quantile", 0.95))
            if args.get("transitional"):
                used.update({"transitional"})
                signs = _hilo_signs(r.dims, args)
                lo = [0.5 if s == "+" else None for s in signs]
                hi = [None if s == "+" else 0.45 for s in signs]
                out = {
                    "type": "hilo",
                    "dims": list(r.dims),
                    "signs": list(signs),
                    "n_components": max(k, 2),
                    "fallback": {"type": "rectangle", "min": lo, "max": hi},
                }
                notes.append(
                    f"flowClust transitional gate read as a {''.join(signs)} high/low corner"
                    " (from target); transitional_angle/translation not used"
                )
                used.update({"transitional_angle", "translation"})
            elif _is_scatter(r.dims):
                out = {"type": "blob", "dims": list(r.dims)}
                # K counts openCyto's clusters on debris-free data and quantile is a level
                # of its t-mixture; the blob gate models debris, lymphocytes, monocytes and
                # granulocytes itself and sets its own contour (its defaults)
                notes.append(
                    f"flowClust K = {k}, quantile = {q} on scatter: the lymphocyte blob's own "
                    "mixture and contour used"
                )
                if "target" in args:
                    notes.append(
                        "flowClust target (instrument units) replaced by the lymphocyte rule"
                    )
            else:
                sel: Any = "heaviest"
                if "target" in args:
                    notes.append(
                        "flowClust target (instrument units) replaced by the heaviest component"
                    )
                out = {
                    "type": "gmm",
                    "dims": list(r.dims),
                    "n_components": k,
                    "select": sel,
                    "quantile": q,
                    "fallback": {"type": "rectangle", "min": [None, None], "max": [None, None]},
                }
            if set(r.signs) != {"+"}:
                raise TemplateError(
                    f"{where}: a 2-D flowClust gate keeps its inside; pop must be '+'"
                )
        else:  # pragma: no cover - unsupported methods are rejected before conversion
            raise UnsupportedMethodError(f"{where}: {r.raw_method}")
        ignored = sorted(set(args) - used)
        if ignored:
            notes.append(f"openCyto argument(s) not used: {', '.join(ignored)}")
        return out

    def boolean(self, r: _Row, idx: int, where: str) -> dict[str, Any]:
        expr = r.args.replace(" ", "")
        if not expr:
            raise TemplateError(f"{where}: boolGate without an expression")
        ops = set(re.findall(r"[&|]", expr))
        if len(ops) > 1:
            raise UnsupportedMethodError(
                f"{where}: boolGate {expr!r} mixes & and |; split it into two populations"
            )
        terms = re.split(r"[&|]", expr)
        refs, comp = [], []
        for t in terms:
            neg = t.startswith("!")
            target = _resolve(t.lstrip("!"), self.rows, idx, where)
            if target is None:
                raise TemplateError(f"{where}: boolGate cannot refer to root")
            refs.append(self.names[target.path])
            comp.append(neg)
        if len(refs) == 1:
            if not comp[0]:
                return {"type": "boolean", "dims": refs, "op": "and", "complement": [False]}
            return {"type": "boolean", "dims": refs, "op": "not"}
        op = "and" if ops == {"&"} else "or"
        return {"type": "boolean", "dims": refs, "op": op, "complement": comp}

    def ref(self, r: _Row, idx: int, where: str, notes: list[str]) -> dict[str, Any]:
        names = [n for n in r.args.replace(" ", "").split(":") if n]
        if not names:
            raise TemplateError(f"{where}: refGate without a reference")
        targets = [_resolve(n, self.rows, len(self.rows), where) for n in names]
        if any(t is None for t in targets):
            raise TemplateError(f"{where}: refGate cannot refer to root")
        parent = r.path[:-1]
        if len(targets) == 1 and len(targets[0].dims) > 1:  # type: ignore[union-attr]
            # a region gate (e.g. a transitional gate or a lymphocyte blob) reused here
            return self.copy_of(targets[0], r, where, notes)  # type: ignore[arg-type]
        if len(targets) != len(r.dims):
            raise TemplateError(
                f"{where}: refGate names {len(targets)} gates for {len(r.dims)} dims"
            )
        targets = _match_dims(targets, r.dims)  # type: ignore[arg-type]
        same_parent = all(t.path[:-1] == parent for t in targets)  # type: ignore[union-attr]
        one_d = all(len(t.dims) == 1 for t in targets)  # type: ignore[union-attr]
        if same_parent and one_d:
            refs, comp = [], []
            for t, s in zip(targets, r.signs):
                refs.append(self.names[t.path])  # type: ignore[union-attr]
                comp.append(t.signs[0] != s)  # type: ignore[union-attr]
            if len(refs) == 1:
                return {
                    "type": "boolean",
                    "dims": refs,
                    "op": "not" if comp[0] else "and",
                    **({} if comp[0] else {"complement": [False]}),
                }
            return {"type": "boolean", "dims": refs, "op": "and", "complement": comp}
        if len(targets) == 1:
            return self.copy_of(targets[0], r, where, notes)  # type: ignore[arg-type]
        # thresholds from gates fitted elsewhere: refit each on this parent
        parts = []
        for t in targets:
            spec = self.specs.get(t.path)  # type: ignore[union-attr]
            if spec is None or spec.get("type") not in ("density_min", "tail", "quantile", "gmm"):
                raise TemplateError(f"{where}: refGate {t.alias!r} is not a one-dimensional gate")  # type: ignore[union-attr]
            parts.append({k: v for k, v in spec.items() if k not in ("dims", "side")})
        notes.append(
            f"refGate {':'.join(names)}: thresholds refitted on this population's parent "
            "(the referenced gates sit under another parent)"
        )
        out = {"type": "thresholds", "dims": list(r.dims), "signs": list(r.signs)}
        if all(p == parts[0] for p in parts):
            out["method"] = parts[0]
        else:  # per dimension, each with its own method (no arguments leak between them)
            out["method"] = {"type": parts[0]["type"]}
            out["per_dim"] = dict(zip(r.dims, parts))
        return out

    def copy_of(self, t: _Row, r: _Row, where: str, notes: list[str]) -> dict[str, Any]:
        spec = self.specs.get(t.path)
        if spec is None:
            raise TemplateError(f"{where}: refGate {t.alias!r} is defined after its use")
        if spec.get("type") == "boolean":
            raise TemplateError(f"{where}: refGate {t.alias!r} is a boolean gate")
        out = dict(spec)
        if list(out.get("dims", [])) != list(r.dims):
            if len(out.get("dims", [])) != len(r.dims):
                raise TemplateError(
                    f"{where}: refGate {t.alias!r} gates {out.get('dims')}, this row {list(r.dims)}"
                )
            out["dims"] = list(r.dims)
        if "side" in out and len(r.signs) == 1:
            out["side"] = r.signs[0]
        elif "signs" in out and len(r.signs) == len(out["signs"]) and out["type"] != "hilo":
            out["signs"] = list(r.signs)
        elif r.signs != tuple(t.signs):
            raise TemplateError(
                f"{where}: refGate {t.alias!r} cannot be turned to pop {''.join(r.signs)}"
            )
        if t.path[:-1] != r.path[:-1]:
            notes.append(
                f"refGate {t.alias}: the referenced gate refitted on this population's parent"
            )
        return out


def _match_dims(targets: list[_Row], dims: tuple[str, ...]) -> list[_Row]:
    """Order referenced 1-D gates by the dimension each gates (openCyto matches by channel,
    so ``CD27gate:IgDgate`` on dims ``IgD,CD27`` pairs IgDgate with IgD)."""
    by_dim: dict[str, _Row] = {}
    for t in targets:
        if len(t.dims) == 1:
            by_dim.setdefault(t.dims[0].lower(), t)
    picked = [by_dim.get(d.lower()) for d in dims]
    if all(p is not None for p in picked) and len({id(p) for p in picked}) == len(dims):
        return picked  # type: ignore[return-value]
    return targets


def _safe(name: str) -> str:
    s = name.replace("!", "not").replace("&", "and").replace("|", "or")
    s = re.sub(r"[^A-Za-z0-9_.+-]+", "_", s).strip("_")
    return s or "population"


def opencyto_to_template(
    path: str | os.PathLike, name: str | None = None, keep_ranges: bool = False
) -> dict[str, Any]:
    """Convert an openCyto CSV gating template into an immunoprofile template (a dict).

    ``keep_ranges`` keeps the ``gate_range`` search windows of scatter channels (only
    right when the template was written for the same cytometer and scatter settings);
    by default they are dropped like the fluorescence ones and listed in the description.

    Raises
    ------
    UnsupportedMethodError : the template uses gating methods with no immunoprofile
        counterpart; the message lists every such row (line, alias, method).
    TemplateError : the CSV is malformed (unknown parent, bad ``pop``, bad arguments).
    """
    path = Path(path)
    src = str(path)
    rows = _expand(read_opencyto(path), src)
    bad = [r for r in rows if r.method not in _SUPPORTED]
    if bad:
        seen = {}
        for r in bad:
            seen.setdefault(
                (r.line, r.alias if len(r.sibling_rows) == 1 else "*", r.raw_method), None
            )
        listed = "; ".join(f"line {ln} {a!r}: {m!r}" for ln, a, m in seen)
        raise UnsupportedMethodError(
            f"{src}: unsupported openCyto gating method(s): {listed}. Supported: "
            f"{', '.join(sorted(set(_METHOD_ALIASES)))}"
        )
    # full paths (parents may refer to populations by alias or by path)
    for i, r in enumerate(rows):
        parent = _resolve(r.parent, rows[:i], i, f"{src} line {r.line} ({r.alias})")
        r.path = (*(parent.path if parent else ()), r.alias)
    paths = [r.path for r in rows]
    if len(set(paths)) != len(paths):
        dup = sorted({"/".join(p) for p in paths if paths.count(p) > 1})
        raise TemplateError(f"{src}: population(s) defined twice: {dup}")
    conv = _Converter(src, rows, keep_ranges=keep_ranges)
    taken: set[str] = set()
    for r in rows:
        for k in range(1, len(r.path) + 1):
            cand = _safe("_".join(r.path[-k:]))
            if cand not in taken:
                break
        while cand in taken:
            cand += "_"
        taken.add(cand)
        conv.names[r.path] = cand
    pops = []
    uses_live = False
    for i, r in enumerate(rows):
        notes: list[str] = []
        gate = conv.gate(r, i, notes)
        conv.specs[r.path] = gate
        if r.extra:
            notes.append("not used: " + ", ".join(f"{k}={v}" for k, v in sorted(r.extra.items())))
        uses_live |= any(d.lower() in ("live", "viability", "live/dead") for d in r.dims)
        desc = f"openCyto {r.raw_method} ({'/'.join(r.path)})"
        if notes:
            desc += "; " + "; ".join(notes)
        parent = (
            conv.name(_resolve(r.parent, rows[:i], i, src))
            if r.parent not in ("", "root")
            else None
        )
        pops.append(
            {"name": conv.names[r.path], "parent": parent, "description": desc, "gate": gate}
        )
    # put boolean/ref populations after every population they combine (the loader checks)
    tmpl: dict[str, Any] = {
        "name": _safe(name or path.stem),
        "description": f"imported from openCyto template {path.name}",
        "version": 1,
        "compensation": "file",
        # scatter stays in instrument units, the units openCyto templates give scatter
        # ranges in (boundary max = 250000, gate_range = c(50000, 100000)); fluorescence
        # gets the default logicle
        "transforms": {"scatter": None},
        "populations": pops,
    }
    if uses_live:
        live_dims = {
            d for r in rows for d in r.dims if d.lower() in ("live", "viability", "live/dead")
        }
        tmpl["aliases"] = {
            d: [a for a in _VIABILITY_ALIASES if a.lower() != d.lower()] for d in sorted(live_dims)
        }
    return tmpl


def prune_template(template: dict[str, Any], sample: Any) -> tuple[dict[str, Any], list[str]]:
    """Drop the populations that gate on markers ``sample``'s panel lacks.

    A population goes when one of its dims does not resolve in the panel (with the
    template's aliases), and with it every population below it and every boolean that
    combines it. Returns ``(pruned template, dropped population names)``; the dropped names
    are also listed in the pruned template's description. Useful for a published template
    (e.g. HIPC Lyoplate) applied to a panel that stains only part of it.
    """

    tmpl = validate_template(template)
    missing_dims: set[str] = set()
    for m in tmpl.markers():
        try:
            resolve_dims(sample, tmpl, [m])
        except MarkerNotFoundError:
            missing_dims.add(m)
    dropped: list[str] = []
    for p in template["populations"]:  # parents come first in a valid template
        g = p["gate"]
        gone = p.get("parent") in dropped
        if g.get("type") == "boolean":
            gone = gone or any(d in dropped for d in g.get("dims", []))
        else:
            gone = gone or any(d in missing_dims for d in g.get("dims", []))
        if gone:
            dropped.append(p["name"])
    out = dict(template)
    out["populations"] = [p for p in template["populations"] if p["name"] not in dropped]
    if dropped:
        out["description"] = (
            f"{template.get('description', '')}; dropped (markers {sorted(missing_dims)} not "
            f"in the panel): {', '.join(dropped)}"
        ).lstrip("; ")
    return out, dropped


__all__ = [
    "UnsupportedMethodError",
    "opencyto_to_template",
    "parse_args",
    "prune_template",
    "read_opencyto",
]
