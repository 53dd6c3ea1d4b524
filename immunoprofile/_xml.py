"""Namespace-agnostic helpers for reading XML (Gating-ML files, FlowJo workspaces).

Both formats mix namespace prefixes freely across writers, so elements and attributes are
matched by their local name only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET


def local_name(tag: str) -> str:
    """``{namespace}name`` -> ``name``."""
    return tag.rsplit("}", 1)[-1]


def attr(el: ET.Element, name: str, default: str | None = None) -> str | None:
    """An attribute by local name, whatever its namespace prefix."""
    for k, v in el.attrib.items():
        if local_name(k) == name:
            return v
    return default


def children(el: ET.Element, name: str) -> list[ET.Element]:
    """Direct children with local name ``name``."""
    return [c for c in el if local_name(c.tag) == name]


def child(el: ET.Element, name: str) -> ET.Element | None:
    """The first direct child with local name ``name``, or None."""
    for c in el:
        if local_name(c.tag) == name:
            return c
    return None


def number(text: str | None, where: str, error: type[Exception]) -> float:
    """``float(text)``, raising ``error`` with ``where`` in the message when it is not one."""
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise error(f"{where}: expected a number, got {text!r}") from None
