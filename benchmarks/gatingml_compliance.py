"""ISAC Gating-ML 2.0 compliance suite and FlowJo workspace counts, measured through the
template engine that `immunoprofile gate` uses.

Each gate file of the suite (MANIFEST.md section A) is imported as `import-gates` does
(`strategy_to_template`), and the template is applied to data1.fcs read as `gate` reads it
(`apply_template`). Prints, for every gate of every gate file and every gate of
gml_all_gates.xml: our count, the truth count (ones in Results_<gate>.txt) and whether the
membership matches event for event; then FlowJo's stored counts beside ours
for the workspaces whose FCS file is present; then timings against flowkit (taken on a
shared machine: indicative only).

    python benchmarks/gatingml_compliance.py [--realdata ../shared/realdata]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from immunoprofile.gating.engine import apply_template  # noqa: E402
from immunoprofile.gating.template import validate_template  # noqa: E402
from immunoprofile.interop.flowjo import read_wsp  # noqa: E402
from immunoprofile.interop.gatingml import read_gatingml, strategy_to_template  # noqa: E402
from immunoprofile.io.fcs import read_fcs  # noqa: E402

# truth file stem where it differs from the gate id
TRUTH_NAME = {"ParRectangle1": "ParQuadRect"}
WORKSPACES = [
    "simple_diamond_example/simple_diamond_example_quad_gate.wsp",
    "simple_diamond_example/test_data_diamond_asinh_rect.wsp",
    "simple_diamond_example/test_data_diamond_asinh_rect2.wsp",
    "simple_diamond_example/test_data_diamond_biex_rect.wsp",
    "simple_line_example/single_ellipse_51_events.wsp",
    "simple_line_example/simple_poly_and_rect.wsp",
    "simple_line_example/simple_poly_and_rect_v2_poly50.wsp",
]


def _gate_file(xml: Path, sample) -> dict:  # noqa: ANN001
    """Gate id -> mask: the file imported as a template, applied by the engine."""
    tmpl = strategy_to_template(read_gatingml(xml), xml.stem)
    res = apply_template(sample, validate_template(tmpl), min_events=0)
    return {
        p["description"].removeprefix("Gating-ML gate "): res.masks[p["name"]]
        for p in tmpl["populations"]
    }


def compliance(root: Path) -> tuple[int, int]:
    data = read_fcs(root / "data1.fcs")
    print(f"{'gate file':46s} {'gate':16s} {'ours':>6s} {'truth':>6s}  match")
    ok = bad = 0
    files = sorted((root / "gml").glob("*.xml"))
    files = [f for f in files if f.name != "gml_all_gates.xml"] + [
        root / "gml" / "gml_all_gates.xml"
    ]
    for f in files:
        masks = _gate_file(f, data)
        for gid, m in masks.items():
            truth_file = root / "truth" / f"Results_{TRUTH_NAME.get(gid, gid)}.txt"
            if not truth_file.is_file():
                continue  # gates without a Results file (gml_ellipse2, attr testing)
            truth = np.loadtxt(truth_file, dtype=int).astype(bool)
            match = bool(np.array_equal(m, truth))
            ok += match
            bad += not match
            print(
                f"{f.name:46s} {gid:16s} {int(m.sum()):6d} {int(truth.sum()):6d}  {'yes' if match else 'NO'}"
            )
    print(f"\n{ok} of {ok + bad} gate memberships equal the truth event for event\n")
    return ok, bad


def flowjo(data_root: Path) -> None:
    print(f"{'workspace':42s} {'population':30s} {'FlowJo':>8s} {'ours':>8s}")
    for w in WORKSPACES:
        wsp = data_root / w
        ws = read_wsp(wsp)
        for smp in ws.samples.values():
            fcs = wsp.parent / smp.file_name
            if not fcs.is_file():
                print(f"{w:42s} (FCS file {smp.file_name} absent)")
                continue
            for r in ws.compare_counts(smp, read_fcs(fcs, scale=False)):
                fj = "-" if r["flowjo"] is None else str(r["flowjo"])
                print(f"{Path(w).name:42s} {r['population']:30s} {fj:>8s} {r['immunoprofile']:8d}")
    print("('-': FlowJo stored no count for that population)")
    print(
        "simple_poly_and_rect_v2_poly50.wsp: FlowJo's stored 0 was never recomputed (the group\n"
        "node holds 0 too); flowkit also finds 50 events in poly1, as the file name says.\n"
    )


def timing(root: Path, repeats: int = 5) -> None:
    xml = root / "gml" / "gml_all_gates.xml"
    tmpl = validate_template(strategy_to_template(read_gatingml(xml), "all"))
    t0 = time.perf_counter()
    for _ in range(repeats):
        apply_template(read_fcs(root / "data1.fcs"), tmpl, min_events=0)
    ours = (time.perf_counter() - t0) / repeats
    line = f"gml_all_gates.xml on data1 (13,367 events, read + gate): immunoprofile {ours * 1e3:.1f} ms"
    try:
        import flowkit as fk

        gs = fk.parse_gating_xml(str(xml))
        t0 = time.perf_counter()
        for _ in range(repeats):
            gs.gate_sample(fk.Sample(str(root / "data1.fcs")))
        theirs = (time.perf_counter() - t0) / repeats
        line += f", flowkit {theirs * 1e3:.1f} ms"
    except ImportError:
        line += " (flowkit not installed)"
    print(line + "  [shared 2-core machine under load: indicative only]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("IMMUNOPROFILE_REALDATA", str(REPO.parent / "shared" / "realdata"))
    ap.add_argument("--realdata", default=default)
    args = ap.parse_args()
    data_root = Path(args.realdata) / "FlowKit" / "data"
    root = data_root / "gate_ref"
    if not root.is_dir():
        print(f"compliance suite not found under {root}; pass --realdata")
        return 2
    _, bad = compliance(root)
    flowjo(data_root)
    timing(root)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
