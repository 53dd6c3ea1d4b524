"""The workspace model FlowJo 9 and 10 share: samples, groups, population trees and the
gates as stored (data units, names as written), and the parts of the XML both layouts
write alike (boolean nodes, groups). `immunoprofile.interop.flowjo` (FlowJo 10, and the
conversion to immunoprofile gates) and `immunoprofile.interop.flowjo9` read into it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from immunoprofile._xml import attr, child, children, local_name
from immunoprofile.exceptions import WorkspaceError
from immunoprofile.interop.gatingml import ScaleTransform, SpectrumMatrix

# --------------------------------------------------------------------------------------
# raw workspace model (as stored, data units)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WspGate:
    """A gate as stored in the workspace. ``dims`` are names as written (``Comp-`` kept)."""

    kind: str  # rectangle | polygon | ellipse | ellipse4 (FlowJo 9) | and | or | not
    dims: tuple[str, ...] = ()
    mins: tuple[float | None, ...] = ()
    maxs: tuple[float | None, ...] = ()
    vertices: tuple[tuple[float, ...], ...] = ()
    foci: tuple[tuple[float, ...], ...] = ()
    edges: tuple[tuple[float, ...], ...] = ()
    refs: tuple[str, ...] = ()  # boolean: dependent population paths
    inside: bool = True
    #: FlowJo 9 "magnetic" gate: FlowJo moves it onto each sample's events before counting,
    #: and the workspace keeps only the drawn position
    magnetic: bool = False


@dataclass(frozen=True)
class WspPopulation:
    """One node of a gating tree: its path from the root, FlowJo's count and its gate."""

    path: tuple[str, ...]
    gate: WspGate
    count: int | None = None

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def id(self) -> str:
        return "/".join(self.path)

    @property
    def parent_id(self) -> str | None:
        return "/".join(self.path[:-1]) if len(self.path) > 1 else None


@dataclass
class WspSample:
    """One sample of a workspace."""

    id: str
    name: str
    uri: str = ""
    count: int | None = None
    keywords: dict[str, str] = field(default_factory=dict)
    transforms: dict[str, ScaleTransform] = field(default_factory=dict)
    matrix: SpectrumMatrix | None = None
    matrix_name: str = ""
    prefix: str = "Comp-"
    suffix: str = ""
    populations: list[WspPopulation] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        """The FCS file name the workspace points at: its data set's URI, else its ``$FIL``
        keyword (FlowJo 9 keeps only a Mac alias), else the node name."""
        if self.uri:
            return Path(unquote(urlparse(self.uri).path)).name or self.name
        fil = self.keywords.get("$FIL", "").strip()
        return Path(fil.replace("\\", "/")).name if fil else self.name


@dataclass
class WspGroup:
    """A FlowJo group: a name, the ids of its samples and its shared gating tree."""

    name: str
    sample_ids: list[str] = field(default_factory=list)
    populations: list[WspPopulation] = field(default_factory=list)


#: FlowJo boolean node tag -> the gate's operation
BOOL_NODES = {"AndNode": "and", "OrNode": "or", "NotNode": "not"}


def boolean_gate(pop: ET.Element, here: str) -> WspGate:
    """The and/or/not gate of a FlowJo boolean node (FlowJo 9 and 10 write it alike)."""
    deps = child(pop, "Dependents")
    refs = tuple(
        attr(d, "name") or ""
        for d in (deps if deps is not None else [])
        if local_name(d.tag) == "Dependent"
    )
    if not refs:
        raise WorkspaceError(f"{here}: boolean node without dependents")
    return WspGate(BOOL_NODES[local_name(pop.tag)], refs=refs)


def read_groups(root: ET.Element, path: Any, tree: Callable[..., list[WspPopulation]]) -> dict:
    """The workspace's groups (FlowJo 9 and 10 store them alike), each population tree
    read by ``tree``, the version's own population parser."""
    groups: dict[str, WspGroup] = {}
    groups_el = child(root, "Groups")
    for gn in children(groups_el, "GroupNode") if groups_el is not None else []:
        g_el = child(gn, "Group")
        refs_el = child(g_el, "SampleRefs") if g_el is not None else None
        ids = [attr(r, "sampleID") or "" for r in (refs_el if refs_el is not None else [])]
        name = attr(gn, "name") or ""
        groups[name] = WspGroup(name, ids, tree(gn, (), f"{path} group {name!r}"))
    return groups


__all__ = [
    "BOOL_NODES",
    "WspGate",
    "WspGroup",
    "WspPopulation",
    "WspSample",
    "boolean_gate",
    "read_groups",
]
