"""The whole analysis in one call: gate + cluster + compare + report (``immunoprofile run``),
and the demonstration on a simulated trial cohort (``immunoprofile demo``).

`run_pipeline` writes one results directory::

    OUT/gating/       populations.csv, per-visit tables, gates.json, qc.csv, errors.csv,
                      samples.csv, plots/<sample>.png
    OUT/clustering/   what `ClusterResult.write` writes with the gating table and figures:
                      populations.csv (method=clustering), metaclusters.csv, agreement.csv,
                      agreement_pairs.csv, heatmap.png, som_grid.png, agreement.png, ...
    OUT/comparison/   changes.csv, stats.csv, problems.csv, comparison.json
    OUT/run.json      provenance: command, settings, software versions, template
    OUT/report.html   the self-contained report

Every stage is the public API (`immunoprofile.gate`, `immunoprofile.cluster`,
`immunoprofile.compare`, `immunoprofile.report`); nothing here computes results itself.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from immunoprofile._files import atomic_write_text, check_output_dir, default_output_folder
from immunoprofile.clustering.agreement import read_gating_table
from immunoprofile.clustering.api import ClusterResult
from immunoprofile.clustering.api import cluster as run_cluster
from immunoprofile.clustering.embed import require_umap
from immunoprofile.comparison import Comparison, compare
from immunoprofile.compensation import spillover_keyword
from immunoprofile.exceptions import ConfigError, ImmunoprofileError
from immunoprofile.folder import (
    COMPARE_OUTPUTS,
    DEFAULT_OUT,
    FILE_PROVENANCE,
    GATING,
    PLOTS,
    RUN,
    STAGES,
    WRITERS,
    outputs,
)
from immunoprofile.gating.run import GateResults, gate
from immunoprofile.io.fcs import read_fcs_header
from immunoprofile.progress import stage
from immunoprofile.quantify import write_csv
from immunoprofile.report import report_from_dir, software_versions
from immunoprofile.simulate import simulate_cohort

DEFAULT_TEMPLATE = "immune_profile"
CONFIG_KEYS = {
    "files",
    "template",
    "samplesheet",
    "pattern",
    "baseline",
    "followup",
    "out",
    "jobs",
    "cluster",
    "seed",
    "markers",
    "n_metaclusters",
    "cluster_parent",
    "value",
    "umap",
}


@dataclass
class RunResult:
    """What `run_pipeline` / `run_demo` produced (paths and the in-memory comparison)."""

    out: Path
    report: Path
    comparison: Comparison
    table: pd.DataFrame
    n_files: int
    n_failed: int
    seconds: float
    cohort_dir: Path | None = None
    clashes: list = field(default_factory=list)  # cohort.IdentityClash: files sharing an identity


#: the largest run configuration read (a few settings and a file list)
MAX_CONFIG_BYTES = 1 << 20


def _load_yaml(text: str, path: Path) -> Any:
    """Safe-load YAML, refusing aliases: a run configuration needs none, and a few hundred
    bytes of nested aliases (``&a [*b, *b, ...]``) expand to billions of items."""
    import yaml

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                raise ConfigError(
                    f"{path}, line {mark.line + 1}: YAML aliases (*{event.anchor}) are not "
                    "accepted in a run configuration; write the values out"
                )
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return yaml.safe_load(text)


def _config_schema() -> dict[str, Any]:
    from importlib.resources import files

    text = files("immunoprofile").joinpath("schemas/run_config.schema.json").read_text("utf-8")
    return json.loads(text)


def _validate_config(cfg: dict[str, Any], path: Path) -> None:
    """Check the settings' types against the shipped schema; name every bad one."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_config_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            key = ".".join(str(x) for x in e.absolute_path) or "(top level)"
            expected = e.schema.get("type") or e.validator
            if e.validator == "oneOf":
                expected = "text or a list of text" if key != "cluster_parent" else "text or null"
            lines.append(f"{key}: {e.instance!r} is not valid ({expected}; {e.message})")
        raise ConfigError(f"{path}: invalid setting(s): " + "; ".join(lines))


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON or YAML run configuration; relative paths are taken from its folder.

    Keys: ``files`` (list of paths or globs), ``template``, ``samplesheet``, ``pattern``,
    ``baseline``, ``followup`` (str or list), ``out``, ``jobs``, ``cluster`` (bool),
    ``seed``, ``markers``, ``n_metaclusters``, ``cluster_parent``, ``value``.
    """
    p = Path(path)
    try:
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (or not a regular file)")
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{p}: {p.stat().st_size} bytes is too large for a run configuration "
                f"(at most {MAX_CONFIG_BYTES})"
            )
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: config is not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config ({exc})") from None
    try:
        if p.suffix.lower() in {".yaml", ".yml"}:
            cfg = _load_yaml(text, p)
        else:
            cfg = json.loads(text)
    except ConfigError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{p}: not valid {p.suffix.lstrip('.') or 'JSON'} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - yaml's errors share no base class with json's
        raise ConfigError(f"{p}: not valid {p.suffix.lstrip('.') or 'JSON'} ({exc})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{p}: the config must be a mapping of settings, got {type(cfg).__name__}"
        )
    unknown = sorted(str(k) for k in set(cfg) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{p}: unknown setting(s) {unknown}; known: {sorted(CONFIG_KEYS)}")
    _validate_config(cfg, p)
    base = p.resolve().parent

    def rel(x: str) -> str:
        return str(x) if Path(x).is_absolute() else str(base / x)

    if "files" in cfg:
        files = [cfg["files"]] if isinstance(cfg["files"], str) else list(cfg["files"])
        cfg["files"] = [rel(f) for f in files]
    for key in ("samplesheet", "out"):
        if cfg.get(key):
            cfg[key] = rel(cfg[key])
    if cfg.get("template") and Path(rel(cfg["template"])).is_file():
        cfg["template"] = rel(cfg["template"])
    return cfg


def run_from_config(config: str | os.PathLike | None = None, **settings: Any) -> RunResult:
    """What ``immunoprofile run`` runs: `run_pipeline` with the settings of a run
    configuration file (`load_config`; none without ``config``) and, over them, every one
    of ``settings`` that is not None (the command line's options win over the file)."""
    cfg = load_config(config) if config else {}
    cfg.update({k: v for k, v in settings.items() if v is not None})
    return run_pipeline(**cfg)


def expand_files(files: Sequence[str | os.PathLike]) -> list[str]:
    """Paths with shell-style globs expanded (sorted); a pattern matching nothing is an error."""
    out: list[str] = []
    for f in files:
        s = str(f)
        if any(c in s for c in "*?["):
            hits = sorted(glob.glob(s))
            if not hits:
                raise ConfigError(f"no file matches {s!r}")
            out.extend(hits)
        else:
            out.append(s)
    return out


def _write_json(path: Path, obj: Any) -> None:

    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def _template_dict(template: Any) -> Any:
    for attr in ("to_dict", "as_dict"):
        f = getattr(template, attr, None)
        if callable(f):
            try:
                return f()
            except Exception:  # noqa: BLE001 - provenance is best effort, never fatal
                break
    return str(getattr(template, "name", template))


def run_pipeline(
    files: Sequence[str | os.PathLike] | None = None,
    out: str | os.PathLike = "immunoprofile_results",
    template: Any = DEFAULT_TEMPLATE,
    samplesheet: str | os.PathLike | None = None,
    pattern: str | None = None,
    baseline: str = "baseline",
    followup: str | Sequence[str] | None = None,
    value: str | Sequence[str] | None = None,
    jobs: int = 1,
    cluster: bool = True,
    markers: Sequence[str] | None = None,
    n_metaclusters: int = 20,
    cluster_parent: str | None = "live",
    umap: bool = False,
    seed: int = 0,
    truth: pd.DataFrame | None = None,
    command: str | None = None,
    progress: bool = False,
) -> RunResult:
    """Gate, cluster, compare and report a cohort of FCS files into ``out``.

    Parameters
    ----------
    files : FCS paths (globs allowed).
    out : results directory (created).
    template : gating template (built-in name or JSON path).
    samplesheet, pattern : identity of each file (see `immunoprofile.gate`).
    baseline, followup, value : passed to `immunoprofile.compare`.
    jobs : parallel processes for gating and for clustering's per-file work.
    cluster : also run unsupervised clustering and report its agreement with gating.
    markers, n_metaclusters, cluster_parent : clustering settings.
    umap : also embed a subsample with UMAP and draw it (slower: numba compiles on first use).
    seed : seed of every random step.
    truth : optional known change per population (simulated cohorts), shown in the report.
    command : the command line to record in the provenance.
    progress : show progress on stderr: a bar over files for gating and for clustering's
        reading, a spinner with elapsed time for each other stage (SOM, metaclustering,
        naming, comparison, report); each stage is also logged at INFO.
    """

    t0 = time.perf_counter()
    if not files:
        raise ConfigError("run: no FCS files given (arguments or `files:` in the config)")
    if cluster and umap:
        require_umap()
    paths = expand_files(files)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ConfigError(
            f"run: file(s) not found: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    out = Path(out)
    # the folder's layout is `immunoprofile.folder`'s, which `report` reads back
    gdir, cdir, kdir = (out / STAGES[s] for s in ("gating", "comparison", "clustering"))

    inputs = [*paths, samplesheet, template if isinstance(template, str | os.PathLike) else None]
    check_output_dir(out, inputs, outputs("run"))
    check_output_dir(gdir, inputs, (*outputs("gating"), FILE_PROVENANCE, PLOTS))
    check_output_dir(cdir, inputs, COMPARE_OUTPUTS)
    if cluster:
        check_output_dir(kdir, inputs, (*outputs("clustering"), PLOTS))

    res, _ = gate_to_folder(paths, template, gdir, plots=True, samplesheet=samplesheet,
                            pattern=pattern, jobs=jobs, progress=progress, seed=seed)  # fmt: skip
    _write_file_provenance(paths, res, gdir / FILE_PROVENANCE)
    table = res.table()
    if table.empty:
        raise ImmunoprofileError(
            f"run: every file failed to gate; see {gdir / 'errors.csv'}:\n"
            + "\n".join(res.errors["message"].astype(str).head(5))
        )
    n_failed = res.n_failed

    cluster_info: dict[str, Any] = {}
    # files sharing an identity stay out of clustering, as of the comparison (they are in
    # gating/populations.csv and gating/errors.csv)
    clashing = set(res.clashing_samples)
    ok = [
        p
        for p, o, i in zip(paths, res.outcomes, res.identities)
        if o.ok and i.sample not in clashing
    ]
    if cluster and ok:
        kdir.mkdir(parents=True, exist_ok=True)
        try:
            cl = run_cluster(
                ok,
                markers=markers,
                n_metaclusters=n_metaclusters,
                seed=seed,
                parent=cluster_parent,
                template=res.template,
                samplesheet=samplesheet,
                pattern=pattern,
                umap=umap,
                on_error="skip",
                progress=progress,
                jobs=jobs,
            )
        except ImmunoprofileError as exc:
            # clustering is a cross-check of gating: without it the comparison and the
            # report of the gated populations still stand
            cl = None
            cluster_info = {"error": str(exc)}

            atomic_write_text(kdir / "errors.txt", f"clustering did not run: {exc}\n")
    if cluster and ok and cl is not None:
        # the one writer of a clustering folder: tables, agreement with gating, figures
        cl.write(kdir, gating=table, plots=True)
        cluster_info = {
            "markers": list(cl.markers),
            "n_metaclusters": int(getattr(cl, "n_metaclusters", n_metaclusters)),
            "parent": cluster_parent,
        }

    with stage("comparing visits", progress):
        cmp = compare(table, baseline=baseline, followup=followup, value=value)
        cmp.meta["populations"] = str((gdir / GATING["populations"]).resolve())
        cmp.write(cdir)
    if truth is not None:
        write_csv(truth_check(truth, cmp), out / RUN["truth_check"])

    tpl = res.template
    run_info = {
        "command": command or "immunoprofile.run_pipeline(...)",
        "baseline": baseline,
        "followup": cmp.followup,
        "template": _template_dict(tpl),
        "template name": str(getattr(tpl, "name", template)),
        "settings": {
            "files": len(paths),
            "samplesheet": str(samplesheet) if samplesheet else None,
            "pattern": pattern,
            "jobs": jobs,
            "seed": seed,
            "clustering": cluster_info or "not run",
        },
        "versions": software_versions(),
    }
    _write_json(out / RUN["run"], run_info)
    with stage("writing the report", progress):
        report = report_from_dir(out, command=run_info["command"])
    return RunResult(
        out=out,
        report=report,
        comparison=cmp,
        table=table,
        n_files=len(paths),
        n_failed=n_failed,
        seconds=time.perf_counter() - t0,
        clashes=list(res.clashes),
    )


def file_provenance(paths: Sequence[str], samples: Sequence[str]) -> pd.DataFrame:
    """Per file, from its HEADER and TEXT (the events are not read): cytometer, date,
    events, channels, and which spillover keyword compensation can use."""

    rows = []
    for path, sample in zip(paths, samples):
        try:
            meta = read_fcs_header(path)
        except ImmunoprofileError as exc:
            rows.append({"sample": sample, "file": str(path), "error": str(exc)})
            continue
        kw = meta.keywords
        spill = spillover_keyword(kw)
        n_spill = str(kw[spill]).split(",", 1)[0].strip() if spill else ""
        rows.append(
            {
                "sample": sample,
                "file": Path(path).name,
                "fcs_version": meta.version,
                "cytometer": kw.get("$CYT", ""),
                "date": kw.get("$DATE", ""),
                "events": meta.n_events,
                "channels": meta.n_channels,
                "spillover_keyword": spill or "none (no compensation from the file)",
                "spillover_size": n_spill,
            }
        )
    return pd.DataFrame(rows)


def _write_file_provenance(paths: Sequence[str], res: Any, out: Path) -> None:

    write_csv(file_provenance(paths, res.samples), out)


def _template_files(template: Any) -> list[Any]:
    """The paths among a template argument (one template, or ``{tube: template}``), so
    an output folder is never one of them."""
    specs = template.values() if isinstance(template, Mapping) else [template]
    return [t for t in specs if isinstance(t, str | os.PathLike)]


def gate_to_folder(
    files: Sequence[str | os.PathLike],
    template: Any,
    out: str | os.PathLike | None = None,
    *,
    plots: bool = False,
    **settings: Any,
) -> tuple[GateResults, Path]:
    """What ``immunoprofile gate`` runs: `immunoprofile.gate` of ``files`` written into the
    folder ``out`` (`GateResults.write`: the `immunoprofile.folder.GATING` outputs, with
    ``plots/<sample>/`` when ``plots``); returns the results and the folder.

    ``out`` None: `immunoprofile.folder.DEFAULT_OUT` in the current folder, or the first
    ``-2``, ``-3``, ... beside it that another writer has not filled
    (`immunoprofile._files.default_output_folder`). The folder is checked before any work
    (`immunoprofile._files.check_output_dir`): one holding an input, or files another
    writer left, is refused. ``settings`` go to `immunoprofile.gate` (``samplesheet``,
    ``pattern``, ``jobs``, ``scheduler``, ``seed``, ``compensation``, ...).
    """
    if out is None:
        out_dir = default_output_folder(Path.cwd() / DEFAULT_OUT, WRITERS["gating"])
    else:
        out_dir = Path(out)
    inputs = [*files, settings.get("samplesheet"), *_template_files(template),
              settings.get("compensation")]  # fmt: skip
    check_output_dir(out_dir, inputs, outputs("gating"))
    res = gate(list(files), template, plots_dir=out_dir / PLOTS if plots else None, **settings)
    res.write(out_dir)
    return res, out_dir


def cluster_to_folder(
    files: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    gating: str | os.PathLike | pd.DataFrame | None = None,
    plots: bool = True,
    on_error: str = "skip",
    **settings: Any,
) -> tuple[ClusterResult, list[Path]]:
    """What ``immunoprofile cluster`` runs: `immunoprofile.cluster` of ``files`` written
    into the folder ``out`` (`ClusterResult.write`: the `immunoprofile.folder.CLUSTERING`
    outputs, with the figures when ``plots``); returns the result and the paths written.

    ``gating``: a gated population table (or the path of a ``populations.csv`` from
    ``immunoprofile gate``), checked before any clustering work: ``agreement.csv`` and
    ``agreement_pairs.csv`` are written against it. ``on_error="skip"``: a file that
    cannot be read or gated is left out and listed in ``errors.csv``. ``out`` is checked
    first (`immunoprofile._files.check_output_dir`). ``settings`` go to
    `immunoprofile.cluster` (``markers``, ``n_metaclusters``, ``grid``, ``seed``,
    ``template``, ``jobs``, ...).
    """
    out_dir = Path(out)
    table_path = None if isinstance(gating, pd.DataFrame) else gating
    inputs = [*files, settings.get("samplesheet"), table_path]
    check_output_dir(out_dir, inputs, outputs("clustering"))
    gated = read_gating_table(gating) if table_path is not None else gating
    res = run_cluster(list(files), on_error=on_error, **settings)
    written = res.write(out_dir, gating=gated, plots=plots)
    return res, written


def compare_to_folder(
    table: str | os.PathLike,
    out: str | os.PathLike,
    baseline: str = "baseline",
    followup: str | Sequence[str] | None = None,
    value: str | Sequence[str] | None = None,
    populations: Sequence[str] | None = None,
    conf: float = 0.95,
    report: bool = True,
    command: str | None = None,
    progress: bool = False,
) -> tuple[Comparison, Path | None]:
    """What ``immunoprofile compare`` runs: `immunoprofile.compare` of a population table
    (a ``populations.csv``), written into the folder ``out`` (``changes.csv``,
    ``stats.csv``, ``problems.csv``, ``comparison.json``, recording the table's path) and,
    with ``report``, its ``report.html``; returns the comparison and the report's path.
    ``out`` is checked first (`immunoprofile._files.check_output_dir`): a folder holding
    the table itself or files another writer left is refused before any work."""
    out_dir = Path(out)
    check_output_dir(out_dir, [table], COMPARE_OUTPUTS)
    cmp = compare(table, baseline=baseline, followup=followup, value=value,
                  populations=populations, conf=conf)  # fmt: skip
    cmp.meta["populations"] = str(Path(table).resolve())
    cmp.write(out_dir)
    html = None
    if report:
        with stage("writing the report", progress):
            html = report_from_dir(out_dir, command=command)
    return cmp, html


def truth_check(truth: pd.DataFrame, measured: Comparison) -> pd.DataFrame:
    """Known vs measured median change per population, measure and visit.

    ``truth`` is a population table of the simulated truth (same columns as a measured
    table); it is compared with the same settings, and its Hodges–Lehmann change is set
    beside the measured one.
    """
    t = compare(
        truth,
        baseline=measured.baseline,
        followup=measured.followup,
        value=[m for m in measured.measures if m in truth.columns],
    )
    key = ["population", "measure", "followup_visit"]
    a = t.stats[[*key, "hl_estimate", "direction"]].rename(
        columns={"hl_estimate": "true_change", "direction": "true_direction"}
    )
    b = measured.stats[[*key, "hl_estimate", "hl_ci_low", "hl_ci_high", "direction"]].rename(
        columns={"hl_estimate": "measured_change", "direction": "measured_direction"}
    )
    m = a.merge(b, on=key, how="inner")
    m["true_in_ci"] = (m["hl_ci_low"] <= m["true_change"]) & (m["true_change"] <= m["hl_ci_high"])
    return m


def run_demo(
    out: str | os.PathLike = "immunoprofile_demo",
    events: int | None = 20_000,
    patients: int = 7,
    seed: int = 0,
    jobs: int = 2,
    visits: Sequence[str] = ("baseline", "week24", "week48"),
    cluster: bool = True,
    progress: bool = False,
    command: str | None = None,
) -> RunResult:
    """Simulate the trial cohort (known effect: Treg up, Th17 down, B and NK unchanged) and
    run the whole pipeline on its FCS files; returns the `RunResult` (``.report`` is the
    HTML path)."""

    t0 = time.perf_counter()
    out = Path(out)
    cohort_dir = out / "cohort"
    kwargs: dict[str, Any] = {"patients": patients, "visits": tuple(visits), "seed": seed}
    if events is not None:
        kwargs["events"] = events
    with stage(f"simulating {patients} patients x {len(visits)} visits", progress):
        sim = simulate_cohort(cohort_dir, **kwargs)
    files = sorted(str(p) for p in cohort_dir.glob("*.fcs"))
    sheet = cohort_dir / "samplesheet.csv"
    truth = _truth_table(cohort_dir, sim)
    result = run_pipeline(
        files,
        out=out,
        samplesheet=sheet if sheet.is_file() else None,
        jobs=jobs,
        cluster=cluster,
        seed=seed,
        truth=truth,
        command=command or f"immunoprofile demo --out {out} --seed {seed}",
        progress=progress,
    )
    result.cohort_dir = cohort_dir
    result.seconds = time.perf_counter() - t0
    return result


def _truth_table(cohort_dir: Path, sim: Any) -> pd.DataFrame | None:
    """The simulator's true frequencies as a population table (None when not available)."""
    path = cohort_dir / "truth_frequencies.csv"
    if not path.is_file():
        return None
    t = pd.read_csv(path, dtype={"patient": str, "visit": str, "sample": str})
    need = {"patient", "visit", "population"}
    if not need <= set(t.columns):
        return None
    return t
