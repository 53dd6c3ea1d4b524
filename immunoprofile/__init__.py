"""immunoprofile: flow cytometry immune profiling for longitudinal clinical studies.

The public API is imported lazily so that ``import immunoprofile`` and the command
line start fast; heavy modules (pandas, scikit-learn, matplotlib) load on first use. The
same names are imported under ``TYPE_CHECKING``, so IDEs and type checkers see the typed
public API (signatures, docstrings) without the import cost at run time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Sample": "immunoprofile.sample",
    "read_fcs": "immunoprofile.io.fcs",
    "read_fcs_datasets": "immunoprofile.io.fcs",
    "read_fcs_header": "immunoprofile.io.fcs",
    "describe_fcs": "immunoprofile.describe",
    "describe_files": "immunoprofile.describe",
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
    "prepare": "immunoprofile.prepare",
    "normalize_marker": "immunoprofile.panel",
    "load_template": "immunoprofile.gating.template",
    "validate_template": "immunoprofile.gating.template",
    "list_templates": "immunoprofile.gating.template",
    "templates_table": "immunoprofile.gating.template",
    "check_template": "immunoprofile.gating.plan",
    "apply_template": "immunoprofile.gating.engine",
    "gate": "immunoprofile.gating.run",
    "cluster": "immunoprofile.clustering.api",
    "compare": "immunoprofile.comparison",
    "Comparison": "immunoprofile.comparison",
    "simulate_cohort": "immunoprofile.simulate",
    "example_path": "immunoprofile.examples",
    "write_examples": "immunoprofile.examples",
    "read_gatingml": "immunoprofile.interop.gatingml",
    "write_gatingml": "immunoprofile.interop.gatingml",
    "read_wsp": "immunoprofile.interop.flowjo",
    "opencyto_to_template": "immunoprofile.interop.opencyto",
    "to_anndata": "immunoprofile.interop.exchange",
    "to_flowkit": "immunoprofile.interop.exchange",
    "from_flowkit": "immunoprofile.interop.exchange",
    "export_fcs": "immunoprofile.interop.exchange",
}

__all__ = [
    "Arcsinh",
    "AsinhCofactor",
    "Comparison",
    "Hyperlog",
    "Linear",
    "Log",
    "Logicle",
    "Panel",
    "Sample",
    "Spillover",
    "TransformSpec",
    "__version__",
    "apply_template",
    "check_template",
    "cluster",
    "compare",
    "compensate",
    "decompensate",
    "describe_fcs",
    "describe_files",
    "example_path",
    "export_fcs",
    "from_flowkit",
    "gate",
    "inverse_transform",
    "list_templates",
    "load_template",
    "normalize_marker",
    "opencyto_to_template",
    "prepare",
    "read_fcs",
    "read_fcs_datasets",
    "read_fcs_header",
    "read_gatingml",
    "read_wsp",
    "resolve_marker",
    "simulate_cohort",
    "templates_table",
    "to_anndata",
    "to_flowkit",
    "transform",
    "transform_from_dict",
    "validate_template",
    "write_examples",
    "write_fcs",
    "write_gatingml",
]

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time names load lazily
    from immunoprofile.clustering.api import cluster
    from immunoprofile.comparison import Comparison, compare
    from immunoprofile.compensation import (
        Spillover,
        compensate,
        decompensate,
    )
    from immunoprofile.describe import describe_fcs, describe_files
    from immunoprofile.examples import example_path, write_examples
    from immunoprofile.gating.engine import apply_template
    from immunoprofile.gating.plan import check_template
    from immunoprofile.gating.run import gate
    from immunoprofile.gating.template import (
        list_templates,
        load_template,
        templates_table,
        validate_template,
    )
    from immunoprofile.interop.exchange import export_fcs, from_flowkit, to_anndata, to_flowkit
    from immunoprofile.interop.flowjo import read_wsp
    from immunoprofile.interop.gatingml import (
        read_gatingml,
        write_gatingml,
    )
    from immunoprofile.interop.opencyto import opencyto_to_template
    from immunoprofile.io.fcs import (
        read_fcs,
        read_fcs_datasets,
        read_fcs_header,
    )
    from immunoprofile.io.write import write_fcs
    from immunoprofile.panel import (
        Panel,
        normalize_marker,
        resolve_marker,
    )
    from immunoprofile.prepare import prepare
    from immunoprofile.sample import Sample
    from immunoprofile.simulate import simulate_cohort
    from immunoprofile.transforms import (
        Arcsinh,
        AsinhCofactor,
        Hyperlog,
        Linear,
        Log,
        Logicle,
        TransformSpec,
        inverse_transform,
        transform,
        transform_from_dict,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'immunoprofile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
