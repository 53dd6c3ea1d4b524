"""immunoprofile: flow cytometry immune profiling for longitudinal clinical studies.

The public API is imported lazily so that ``import immunoprofile`` and the command
line start fast; heavy modules (pandas, scikit-learn, matplotlib) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Sample": "immunoprofile.sample",
    "read_fcs": "immunoprofile.io.fcs",
    "read_fcs_datasets": "immunoprofile.io.fcs",
    "read_fcs_header": "immunoprofile.io.fcs",
    "write_fcs": "immunoprofile.io.write",
    "Panel": "immunoprofile.panel",
    "resolve_marker": "immunoprofile.panel",
    "compensate": "immunoprofile.compensation",
    "decompensate": "immunoprofile.compensation",
    "Spillover": "immunoprofile.compensation",
    "transform": "immunoprofile.transforms",
    "inverse_transform": "immunoprofile.transforms",
    "TransformSpec": "immunoprofile.transforms",
    "Logicle": "immunoprofile.transforms",
    "Hyperlog": "immunoprofile.transforms",
    "Arcsinh": "immunoprofile.transforms",
    "AsinhCofactor": "immunoprofile.transforms",
    "Log": "immunoprofile.transforms",
    "Linear": "immunoprofile.transforms",
    "transform_from_dict": "immunoprofile.transforms",
    "normalize_marker": "immunoprofile.panel",
    "load_template": "immunoprofile.gating.template",
    "validate_template": "immunoprofile.gating.template",
    "list_templates": "immunoprofile.gating.template",
    "apply_template": "immunoprofile.gating.engine",
    "gate": "immunoprofile.gating.run",
    "cluster": "immunoprofile.clustering.api",
    "compare": "immunoprofile.compare",
    "Comparison": "immunoprofile.compare",
    "simulate_cohort": "immunoprofile.simulate",
    "read_gatingml": "immunoprofile.gating.gatingml",
    "write_gatingml": "immunoprofile.gating.gatingml",
    "read_wsp": "immunoprofile.interop.flowjo",
    "opencyto_to_template": "immunoprofile.interop.opencyto",
    "to_anndata": "immunoprofile.interop.exchange",
    "export_fcs": "immunoprofile.interop.exchange",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'immunoprofile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
