"""Screenshots of the HTML report in headless Chromium (the pictures in docs/).

    python examples/report_screenshots.py RESULTS_DIR [--out docs/screenshots]

RESULTS_DIR is a folder written by ``immunoprofile demo`` or ``immunoprofile run`` (its
``report.html`` is shot). Each section is shot on its own: the report is copied with a
small style sheet that hides every other section, so one window-sized picture per
section shows that section from its top. Needs a ``chromium`` (or ``chromium-browser``,
``google-chrome``) executable.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SHOTS = {
    # picture name: (section id, window height, extra CSS)
    "report_top": (None, 1100, ""),
    "report_key_results": ("key", 1250, ""),
    "report_gating_page": ("gating", 1500, "details.page~details.page{display:none}"),
    "report_gate_enlarged": (
        "gating",
        1000,
        "details.page~details.page{display:none}"
        "details.page .gates figure:nth-of-type(15) img{position:fixed;top:0;left:0;"
        "right:0;bottom:0;margin:auto;max-width:96vw;max-height:96vh;height:96vh;width:auto;"
        "z-index:10;background:#fff;box-shadow:0 0 0 100vmax rgba(0,0,0,.6)}",
    ),
    "report_per_visit_table": ("visits", 900, ""),
}


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no chromium executable found (apt-get install chromium)")


def shoot(report: Path, out: Path, width: int = 1320) -> list[Path]:
    """Write one PNG per entry of `SHOTS` into ``out``; returns the paths."""
    html = report.read_text(encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    browser = _browser()
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (section, height, extra) in SHOTS.items():
            css = extra
            if section is not None:
                css += f"section:not(#{section}),nav,h1,h1+p{{display:none}}"
            page = Path(tmp) / f"{name}.html"
            page.write_text(re.sub("</style>", css + "</style>", html, count=1), encoding="utf-8")
            png = out / f"{name}.png"
            subprocess.run(
                [
                    browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri(),
                ],
                check=True,
                capture_output=True,
                timeout=180,
            )  # fmt: skip
            written.append(png)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = ap.parse_args()
    for p in shoot(args.results / "report.html", args.out):
        print(p)


if __name__ == "__main__":
    main()
