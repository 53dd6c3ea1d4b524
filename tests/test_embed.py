"""UMAP embedding: lazy import, numba cache location, and (slow) an embedding of clusters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from cluster_synthetic import synthetic_sample

from immunoprofile.clustering.embed import numba_cache_dir, umap_embedding
from immunoprofile.exceptions import ClusteringError


def test_importing_clustering_does_not_import_umap_or_numba():
    code = (
        "import sys, immunoprofile.clustering.api, immunoprofile.clustering.embed;"
        "print('umap' in sys.modules, 'numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_numba_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "nb"))
    assert numba_cache_dir() == tmp_path / "nb" and (tmp_path / "nb").is_dir()
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert numba_cache_dir() == tmp_path / "xdg" / "immunoprofile" / "numba"


def test_too_few_events():
    with pytest.raises(ClusteringError, match="at least"):
        umap_embedding(np.zeros((5, 3), dtype=np.float32))


@pytest.mark.slow
def test_umap_separates_populations_and_is_seeded():
    pytest.importorskip("umap")
    from immunoprofile.clustering.api import cluster
    from immunoprofile.plots.clustering import umap_plot

    samples = [synthetic_sample(3000, seed=i, name=f"P{i}_baseline")[0] for i in range(2)]
    res = cluster(samples, umap=True, umap_events=2000, n_resamples=10)
    emb = res.embedding
    assert len(emb) == 2000 and {"umap1", "umap2", "name", "metacluster", "CD3"} <= set(emb)
    # T and non-T cells land in different regions: centroids far apart vs spread
    t = emb["CD3"] > 0.45
    c_t = emb.loc[t, ["umap1", "umap2"]].mean()
    c_n = emb.loc[~t, ["umap1", "umap2"]].mean()
    spread = emb[["umap1", "umap2"]].std().mean()
    assert np.linalg.norm(c_t - c_n) > spread
    again = cluster(samples, umap=True, umap_events=2000, n_resamples=10)
    np.testing.assert_allclose(again.embedding["umap1"], emb["umap1"], rtol=1e-4, atol=1e-4)
    fig = umap_plot(emb, "name")
    assert fig.axes


def _without_umap(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now fails


def test_umap_absent_is_named_before_any_work(monkeypatch):
    """umap-learn is an optional extra: asking for an embedding without it fails at once,
    naming the extra, before any file is read."""
    from immunoprofile.clustering.api import cluster
    from immunoprofile.clustering.embed import require_umap

    _without_umap(monkeypatch)
    with pytest.raises(ClusteringError, match=r"immunoprofile\[umap\]"):
        require_umap()
    with pytest.raises(ClusteringError, match="umap-learn"):
        cluster(["/nonexistent/never_read.fcs"], umap=True)
    with pytest.raises(ClusteringError, match="umap-learn"):
        umap_embedding(np.zeros((50, 3), dtype=np.float32))


def test_cli_umap_without_umap_learn(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from immunoprofile.cli import main

    _without_umap(monkeypatch)
    f = tmp_path / "a.fcs"
    f.write_bytes(b"not read")
    res = CliRunner().invoke(main, ["cluster", str(f), "--umap", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "immunoprofile[umap]" in res.output
    assert not (tmp_path / "o").exists()
