"""Interoperability benchmark for `benchmarks/run.py`: the Gating-ML 2.0 compliance table,
FlowJo's stored counts beside immunoprofile's, and Gating-ML evaluation time against
flowkit (all from `gatingml_compliance.py`).

    python benchmarks/bench_interop.py [--realdata ../shared/realdata]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gatingml_compliance import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
