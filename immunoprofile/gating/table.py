"""Deprecated: the population-table arithmetic moved to `immunoprofile.hierarchy`."""

from immunoprofile._deprecate import moved_module

__getattr__ = moved_module(__name__, "immunoprofile.hierarchy")
