"""Namespace-agnostic helpers for reading XML (Gating-ML files, FlowJo workspaces).

Both formats mix namespace prefixes freely across writers, so elements and attributes are
matched by their local name only.
"""

from __future__ import annotations

import os
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


def parse(
    source: str | bytes | os.PathLike, error: type[Exception], text_name: str = "<xml text>"
) -> tuple[ET.Element, str]:
    """The root element of an XML file (or of XML given as text/bytes) and its name for messages.

    A missing file or malformed XML raises ``error`` naming the source and the cause.
    """
    from_text = isinstance(source, bytes) or (
        isinstance(source, str) and source.lstrip().startswith("<")
    )
    name = text_name if from_text else str(source)
    try:
        root = ET.fromstring(source) if from_text else ET.parse(source).getroot()
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except ET.ParseError as exc:
        raise error(f"{name}: not well-formed XML ({exc})") from None
    return root, name
