"""Marker <-> channel resolution: templates name markers, files name detectors.

A template says ``CD25``; one file stores it on ``PE-A`` with ``$PnS = "CD25 PE"``,
another on ``BB515-A`` with ``$PnS = "IL-2Ra"``. `normalize_marker` reduces a label to a
comparison key (upper case, no spaces or punctuation, fluorochrome names dropped), and
`ALIASES` groups keys that name the same antigen (CD25 = IL2RA, CXCR3 = CD183, ...).
`Panel` matches a requested name against, in order: the exact channel name (``$PnN``),
user pins and aliases, the markers (``$PnS``), and finally channel names compared
case-insensitively. A name that matches nothing raises `MarkerNotFoundError` listing the
markers and channels the file has, with the closest candidates; a name that matches
several channels raises `AmbiguousMarkerError`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from immunoprofile.exceptions import AmbiguousMarkerError, MarkerNotFoundError

# Fluorochrome and tag vocabulary, as upper-case token parts. A token made only of these
# parts (e.g. "PE", "PECY7", "APC-H7" -> "APC", "H7", "BV510", "AF647", "PERCPCY5.5") is
# a label, not an antigen, and is dropped by `normalize_marker`.
_FLUOR_PART = (
    r"FITC|PE|APC|PERCP|PACBLUE|PACIFICBLUE|PACORANGE|PACIFICORANGE|PACIFIC|BLUE|ORANGE"
    r"|CY\d(?:\.?5)?|H7|R700|ECD|PC5(?:\.?5)?|PC7|TXRED|TEXASRED|TEXAS|RED|DAZZLE|DAZZLE594"
    r"|CF\d{3}|BV\d{3}|BUV\d{3}|BB\d{3}|BYG\d{3}|RB\d{3}|RY\d{3}|SB\d{3}|V\d{3}|AF\d{3}"
    r"|A\d{3}|ALEXA|FLUOR|ALEXAFLUOR|EFLUOR|EF\d{3}|EFLUOR\d{3}|QDOT\d*|QD\d{3}|NIR|IR"
    r"|SPARK|SPARKBLUE|SPARKNIR|NOVAFLUOR|VIOBLUE|VIOGREEN|VIO\d{3}|VIOBRIGHT|KO|KRO|PB|PO"
    r"|BRILLIANT|VIOLET|ULTRAVIOLET|UV|PEVIO\d{3}|PEEFLUOR\d{3}|BIOTIN|SA|STREPTAVIDIN"
    r"|AX\d{3}|PETR|TR|PECF594|GFP|YFP|RFP|BFP|MCHERRY|TDTOMATO|CELLTRACE|HOECHST"
    r"|PACBLU|FIRE\d{3}|SUPERBRIGHT|STARBRIGHT|REALBLUE|REALYELLOW|BD|HORIZON"
)
_FLUOR_TOKEN = re.compile(rf"^(?:{_FLUOR_PART})+(?:\d+)?$")
# a metal tag of mass cytometry, e.g. "145Nd" in "145Nd_CD4"
_METAL_TOKEN = re.compile(
    r"^(?:89|9\d|1\d\d|2[01]\d)(?:Y|IN|LA|CE|PR|ND|SM|EU|GD|TB|DY|HO|ER|TM|YB|LU|PT|IR|BI|RH"
    r"|CD|PD|BA|CS|XE|I|SN|TE|OS|AU|PB|HG)(?:DI)?$"
)
# channel-name area/height/width suffix tokens
_AHW = {"A", "H", "W"}
_LD = re.compile(r"(?i)\bL\s*/\s*D\b")
# everything but letters, digits and the decimal point separates tokens (also "™", "®")
_SPLIT = re.compile(r"[^A-Z0-9.]+")
_GREEK = str.maketrans({"α": "A", "β": "B", "γ": "G", "δ": "D", "κ": "K", "λ": "L"})
# parts of a combined label: "VIVID / CD14" (a dump channel), "CD21;FITC;530/30@488/B"
_PARTS = re.compile(r"\s/\s|;|\|")
#: words naming the antibody, not the antigen: "anti-CD19", "anti-human CD3"
_ANTIBODY_WORDS = frozenset({"ANTI", "HUMAN", "ANTIHUMAN", "HU"})
#: a species prefix glued to a CD number: "hCD3", "huCD19"
_SPECIES_CD = re.compile(r"^(?:H|HU)(CD\d+[A-Z]*)$")
#: a parenthesised part of a label: a clone ("CD4 (SK3)") or another name of the antigen
_PARENTHESISED = re.compile(r"\([^)]*\)")
_VIABILITY_TOKENS = {
    "LIVE",
    "DEAD",
    "LIVEDEAD",
    "LD",
    "VIABILITY",
    "VIA",
    "VIAB",
    "ZOMBIE",
    "FVS",
    "FVD",
    "7AAD",
    "DAPI",
    "PI",
    "AMINE",
    "VIVID",
    "DRAQ7",
    "TOPRO3",
}

# antigen -> other names for it (all compared after `normalize_marker`); the first
# element of each group is the key `canonical_marker` returns
ALIASES: dict[str, tuple[str, ...]] = {
    "CD3": ("CD3E", "CD3EPSILON"),
    "CD4": (),
    "CD8": ("CD8A", "CD8ALPHA"),
    "CD25": ("IL2RA", "IL2R", "IL2RALPHA"),
    "CD127": ("IL7R", "IL7RA", "IL7RALPHA"),
    "FOXP3": (),
    "CD45": ("PTPRC",),
    "CD45RA": ("PTPRCRA",),
    "CD45RO": ("PTPRCRO",),
    "CXCR3": ("CD183",),
    "CCR6": ("CD196",),
    "CCR7": ("CD197",),
    "CCR4": ("CD194",),
    "CXCR5": ("CD185",),
    "CD161": ("KLRB1",),
    "CD19": (),
    "CD20": ("MS4A1",),
    "CD27": ("TNFRSF7",),
    "CD38": (),
    "CD24": (),
    "IGD": (),
    "IGM": (),
    "IGG": (),
    "CD56": ("NCAM1", "NCAM"),
    "CD16": ("FCGR3A", "FCGR3", "FCGRIII"),
    "CD14": (),
    "HLADR": ("MHCII",),
    "CD279": ("PD1", "PDCD1"),
    "CD152": ("CTLA4",),
    "CD62L": ("SELL",),
    "CD28": (),
    "CD95": ("FAS",),
    "CD57": ("B3GAT1",),
    "CD11C": ("ITGAX",),
    "CD11B": ("ITGAM",),
    "CD39": ("ENTPD1",),
    "CD73": ("NT5E",),
    "CD69": (),
    "KI67": ("MKI67",),
    "CD137": ("41BB", "TNFRSF9"),
    "TCRGD": ("GDTCR", "TCRGAMMADELTA"),
    "VIABILITY": tuple(sorted(_VIABILITY_TOKENS)),
}

#: channel-name keys (`_channel_key`) of the scatter measurements a template names the BD
#: way, as other instruments write them, preferred first: integral (area) and linear
#: before peak (height); a log-amplified channel is never taken for a linear one
SCATTER_SYNONYMS: dict[str, tuple[str, ...]] = {
    "FSCA": ("FSINT", "FSLIN", "FSCLIN", "FSAREA", "FSC", "FS"),
    "SSCA": ("SSINT", "SSLIN", "SSCLIN", "SSAREA", "SSC", "SS"),
    "FSCH": ("FSPEAK", "FSHEIGHT", "FSCHLIN"),
    "SSCH": ("SSPEAK", "SSHEIGHT", "SSCHLIN"),
}

_ALIAS_INDEX: dict[str, str] = {}
for _canon, _names in ALIASES.items():
    _ALIAS_INDEX[_canon] = _canon
    for _n in _names:
        _ALIAS_INDEX.setdefault(_n, _canon)


def _tokens(text: str) -> list[str]:
    return [t for t in _SPLIT.split(str(text).translate(_GREEK).upper().strip()) if t]


def _part_keys(label: str | None) -> set[str]:
    """Canonical keys of the parts of a combined label (empty for a simple label)."""
    if not label:
        return set()
    parts = [p for p in _PARTS.split(str(label)) if p.strip()]
    if len(parts) < 2:
        return set()
    return {k for k in (canonical_marker(p) for p in parts) if k}


def normalize_marker(text: str | None) -> str:
    """Comparison key of a marker label: upper case, fluorochromes and punctuation dropped.

    ``"CD4 BV510"``, ``"CD4-FITC"``, ``"cd4"`` -> ``"CD4"``; ``"CD45RA PE-Cy7"`` ->
    ``"CD45RA"`` (distinct from ``"CD45"``); ``"HLA-DR"`` -> ``"HLADR"``; any viability dye
    label (``"Live/Dead Aqua"``, ``"Zombie NIR"``, ``"7-AAD"``) -> ``"VIABILITY"``.
    Returns ``""`` for None or a label made only of fluorochrome names.
    """
    if text is None:
        return ""
    raw = str(text).strip()
    if not raw or raw.lower() in ("none", "nan"):
        return ""
    # FlowJo style "BV510-A :: CD4": the marker is the part after "::"
    if "::" in raw:
        raw = raw.split("::")[-1]
    toks = _tokens(raw)
    joined_all = "".join(toks)
    if (
        any(t in _VIABILITY_TOKENS or t.startswith(("FVS", "ZOMBIE")) for t in toks)
        or joined_all in _VIABILITY_TOKENS
        or _LD.search(raw)
    ):
        return "VIABILITY"
    kept: list[str] = []
    dropped_prev = False
    for t in toks:
        if t in _ANTIBODY_WORDS:
            continue
        species = _SPECIES_CD.match(t)
        if species:
            t = species.group(1)
        if _FLUOR_TOKEN.match(t) or _METAL_TOKEN.match(t):
            dropped_prev = True
            continue
        if dropped_prev and (t.isdigit() or t in _AHW):  # "Alexa Fluor 647", "PE-A"
            continue
        dropped_prev = False
        kept.append(t)
    if not kept:
        return ""
    # "CD3 CD4"-like compound labels stay compound; tokens are joined without separators
    # so that "HLA-DR", "HLA DR" and "HLADR" agree
    return "".join(kept).replace(".", "")


def canonical_marker(text: str | None) -> str:
    """`normalize_marker`, then mapped through `ALIASES` to one name per antigen."""
    key = normalize_marker(text)
    if key in _ALIAS_INDEX:
        return _ALIAS_INDEX[key]
    # "CD4 (SK3) BV510": the antigen outside the parentheses, the clone inside
    if text is not None and "(" in str(text):
        outside = normalize_marker(_PARENTHESISED.sub(" ", str(text).split("::")[-1]))
        if outside in _ALIAS_INDEX:
            return _ALIAS_INDEX[outside]
    # "CD127 (IL7R)": several tokens that all name the same antigen
    toks = [normalize_marker(t) for t in _tokens(str(text).split("::")[-1])]
    known = {_ALIAS_INDEX[t] for t in toks if t in _ALIAS_INDEX}
    if len(known) == 1 and all(t in _ALIAS_INDEX or not t for t in toks):
        return known.pop()
    return key


def _channel_key(name: str) -> str:
    """Case- and punctuation-insensitive key of a channel name (``"fitc-a"`` == ``"FITC-A"``)."""
    return "".join(_tokens(name))


class Panel:
    """The markers and channels of one sample, with name resolution.

    Parameters
    ----------
    sample_or_channels : a `Sample` or its channel table (columns ``name``, ``marker``).
    aliases : extra names, ``{name: other name(s)}``. A value that is a channel name of
        this file pins the marker to that channel (``{"CD25": "PE-A"}``); any other value
        is an alternative marker name (``{"CD25": ["IL-2Ra", "Tac"]}``).
    """

    def __init__(
        self,
        sample_or_channels: Any,
        aliases: Mapping[str, str | Iterable[str]] | None = None,
    ) -> None:
        if isinstance(sample_or_channels, pd.DataFrame):
            table = sample_or_channels
            self.source = "<channel table>"
        else:
            table = sample_or_channels.channels
            path = getattr(sample_or_channels, "path", None)
            self.source = str(path) if path else (sample_or_channels.name or "<sample>")
        self.names: list[str] = [str(n) for n in table["name"]]
        markers = table["marker"] if "marker" in table else [None] * len(self.names)
        self.labels: list[str | None] = [
            None
            if (m is None or (isinstance(m, float) and m != m) or str(m).strip() == "")
            else str(m)
            for m in markers
        ]
        self._canon = [canonical_marker(m) for m in self.labels]
        self._parts = [_part_keys(m) for m in self.labels]
        self._name_keys = [_channel_key(n) for n in self.names]
        self._extra: dict[str, list[str]] = {}
        for key, vals in (aliases or {}).items():
            vals = [vals] if isinstance(vals, str) else list(vals)
            self._extra.setdefault(canonical_marker(key) or str(key), []).extend(
                str(v) for v in vals
            )

    # --- queries ----------------------------------------------------------------------

    def markers(self) -> list[str]:
        """Marker labels ($PnS) of the channels that have one, in file order."""
        return [m for m in self.labels if m]

    def channels(self) -> list[str]:
        """Channel names ($PnN) in file order."""
        return list(self.names)

    def table(self) -> pd.DataFrame:
        """One row per channel: index, name, marker label and its canonical key."""
        return pd.DataFrame(
            {
                "index": range(len(self.names)),
                "name": self.names,
                "marker": self.labels,
                "key": self._canon,
            }
        )

    def index(self, name: str) -> int:
        """Column index of a marker ($PnS), an alias, or a channel name ($PnN)."""
        return self._index(str(name), set())

    def channel(self, name: str) -> str:
        """Channel name ($PnN) that holds a marker, alias, or channel."""
        return self.names[self.index(name)]

    def marker(self, name: str) -> str | None:
        """Marker label ($PnS) of the channel a name resolves to (None if it has none)."""
        return self.labels[self.index(name)]

    def __contains__(self, name: object) -> bool:
        try:
            self.index(str(name))
        except MarkerNotFoundError:
            return False
        return True

    def indices(self, names: Iterable[str]) -> list[int]:
        """`index` for several names."""
        return [self.index(n) for n in names]

    # --- resolution ---------------------------------------------------------------------

    def _index(self, name: str, seen: set[str]) -> int:
        if name in self.names:  # exact $PnN wins
            if self.names.count(name) > 1:
                raise AmbiguousMarkerError(
                    f"{self.source}: channel name {name!r} occurs {self.names.count(name)} "
                    "times; rename the channels or resolve by marker"
                )
            return self.names.index(name)
        canon = canonical_marker(name)
        # user pins and aliases
        for target in self._extra.get(canon, []) + self._extra.get(name, []):
            if target in seen:
                continue
            seen.add(target)
            try:
                return self._index(target, seen)
            except AmbiguousMarkerError:
                raise
            except MarkerNotFoundError:
                continue
        if canon:
            hits = [i for i, c in enumerate(self._canon) if c == canon]
            if not hits:  # a part of a combined label such as "VIVID / CD14"
                hits = [i for i, parts in enumerate(self._parts) if canon in parts]
            if len(hits) > 1:
                hits = _one_measurement(hits, self.names)
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                desc = ", ".join(f"{self.names[i]} ({self.labels[i]})" for i in hits)
                raise AmbiguousMarkerError(
                    f"{self.source}: marker {name!r} matches {len(hits)} channels: {desc}; "
                    "name the channel instead, or pin it in the template "
                    '({"marker": ..., "channel": ...})'
                )
        key = _channel_key(name)
        hits = [i for i, k in enumerate(self._name_keys) if k == key]
        if not hits:
            hits = self._scatter_synonym(key)
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise AmbiguousMarkerError(
                f"{self.source}: {name!r} matches channels {[self.names[i] for i in hits]}"
            )
        raise MarkerNotFoundError(self._missing_message(name))

    def _scatter_synonym(self, key: str) -> list[int]:
        """The channel other instruments give a scatter measurement a template names the
        BD way (``FSC-A`` is ``FS INT`` or ``FS Lin`` on Beckman Coulter): the first
        synonym that names exactly one channel."""
        for synonym in SCATTER_SYNONYMS.get(key, ()):
            hits = [i for i, k in enumerate(self._name_keys) if k == synonym]
            if len(hits) == 1:
                return hits
        return []

    def _missing_message(self, name: str) -> str:
        canon = canonical_marker(name)
        candidates: dict[str, str] = {}
        for label, c in zip(self.labels, self._canon):
            if label:
                candidates[label] = c
        for n in self.names:
            candidates.setdefault(n, _channel_key(n))
        by_key: dict[str, list[str]] = {}
        for label, key in candidates.items():
            by_key.setdefault(key, []).append(label)
        close = difflib.get_close_matches(canon or name.upper(), list(by_key), n=3, cutoff=0.6)
        close_labels = [lab for k in close for lab in by_key[k]]
        close_labels += difflib.get_close_matches(
            name, [c for c in candidates if c not in close_labels], n=3, cutoff=0.6
        )
        hint = (
            f" Did you mean {', '.join(repr(c) for c in close_labels[:3])}?" if close_labels else ""
        )
        markers = [f"{m} ({n})" for n, m in zip(self.names, self.labels) if m]
        return (
            f"{self.source}: marker {name!r} not found.{hint} "
            f"Markers in this file: {', '.join(markers) if markers else '(none: no $PnS)'}. "
            f"Channels: {', '.join(self.names)}."
        )

    def __repr__(self) -> str:
        pairs = [f"{n}={m}" if m else n for n, m in zip(self.names, self.labels)]
        return f"Panel({self.source!r}: {', '.join(pairs)})"


#: the pulse measurements of one detector, in the order a marker's channel is chosen
#: among them: area, then height (width carries no antigen level)
_MEASUREMENTS = ("A", "H")
_MEASURED = re.compile(r"^(?P<detector>.+?)[-_ ](?P<measure>[AHW])$", re.IGNORECASE)


def _one_measurement(hits: list[int], names: Sequence[str]) -> list[int]:
    """The channel to read when a marker's label is on several pulse measurements of one
    detector (BD instruments label "PE-Cy7-A" and "PE-Cy7-H" both "CD14"): its area, else
    its height. Channels of different detectors stay ambiguous (``hits`` unchanged)."""
    parsed = [_MEASURED.match(names[i]) for i in hits]
    if not all(parsed) or len({m["detector"].upper() for m in parsed}) != 1:
        return hits
    by_measure = {m["measure"].upper(): i for m, i in zip(parsed, hits)}
    if len(by_measure) != len(hits):
        return hits
    for measure in _MEASUREMENTS:
        if measure in by_measure:
            return [by_measure[measure]]
    return hits


def resolve_marker(
    sample: Any, name: str, aliases: Mapping[str, str | Iterable[str]] | None = None
) -> int:
    """Column index of ``name`` (marker, alias or channel) in ``sample``; see `Panel`."""
    return Panel(sample, aliases=aliases).index(name)


__all__ = [
    "ALIASES",
    "Panel",
    "canonical_marker",
    "normalize_marker",
    "resolve_marker",
]
