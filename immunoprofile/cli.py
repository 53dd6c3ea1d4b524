"""The ``immunoprofile`` command line: a thin shell over the public API.

Only click is imported at start-up; each command imports what it needs when it runs, so
``immunoprofile --help`` answers at once.
"""

from __future__ import annotations

import sys

import click

from immunoprofile import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="immunoprofile")
def main() -> None:
    """Flow cytometry immune profiling: FCS files to per-visit population tables and
    baseline-to-follow-up statistics."""


def fail(message: str, code: int = 1) -> None:
    """Print an error to stderr and exit with ``code``."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


# === inspect (FCS reading) =================================================


# === simulate ==============================================================


# === templates =============================================================


# === gate ==================================================================


# === cluster ===============================================================


# === compare / report / run / demo =========================================


# === import-gates / export-gates / export ==================================


if __name__ == "__main__":  # pragma: no cover
    main()
