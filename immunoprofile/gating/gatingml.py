"""Deprecated: Gating-ML 2.0 import and export moved to `immunoprofile.interop.gatingml`."""

from immunoprofile._deprecate import moved_module

__getattr__ = moved_module(__name__, "immunoprofile.interop.gatingml")
