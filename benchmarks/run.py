"""Run every ``benchmarks/bench_*.py`` in turn and print each one's table.

``--quick`` is passed to the benchmarks that accept it (those whose source declares a
``--quick`` option); the others run with their defaults. Exits non-zero if any failed.

Run: ``python benchmarks/run.py [--quick] [--only read,gating]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, fewer repeats")
    ap.add_argument("--only", help="comma-separated topics (bench_<topic>.py) to run")
    args = ap.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {t.strip() for t in args.only.split(",")}
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    failed = []
    for script in scripts:
        cmd = [sys.executable, str(script)]
        if args.quick and '"--quick"' in script.read_text():
            cmd.append("--quick")
        print(f"=== {script.name} {'(quick)' if '--quick' in cmd else ''}".rstrip(), flush=True)
        t = time.perf_counter()
        res = subprocess.run(cmd)
        print(f"--- {script.name}: exit {res.returncode}, {time.perf_counter() - t:.0f} s\n")
        if res.returncode:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
