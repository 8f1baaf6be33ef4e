"""The numba cache is keyed by every server source: a kernel is never loaded stale after a module it reads a
constant of changed (features.py reads the number of sources from candidates.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from numba.core import config

from server import kernel_cache
from server.ranking import features
from server.retrieval.candidates import SOURCES


def tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_any_source_change_names_another_directory(tmp_path: Path) -> None:
    tree(tmp_path, {"server/a.py": "K = 7\n", "server/b/c.py": "x = 1\n", "feature_worker/d.py": "y = 2\n"})
    before = kernel_cache.sources_digest(tmp_path)
    assert kernel_cache.sources_digest(tmp_path) == before  # stable
    (tmp_path / "server/a.py").write_text("K = 8\n")
    changed = kernel_cache.sources_digest(tmp_path)
    assert changed != before
    (tmp_path / "feature_worker/d.py").write_text("y = 3\n")
    assert kernel_cache.sources_digest(tmp_path) not in (before, changed)
    (tmp_path / "server/README.md").write_text("not a source")
    assert kernel_cache.sources_digest(tmp_path) == kernel_cache.sources_digest(tmp_path)


def test_the_kernels_are_cached_under_the_digest_of_these_sources_and_older_ones_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "0123456789abcdef"
    stale.mkdir()
    (stale / "kernel.nbi").write_text("old")
    keep = tmp_path / "not-a-digest"
    keep.mkdir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    previous = kernel_cache.cache_dir()
    try:
        current = kernel_cache.configure()
        assert current == tmp_path / kernel_cache.sources_digest()
        assert kernel_cache.cache_dir() == str(current)
        assert not stale.exists() and keep.exists()
    finally:
        setattr(config, "CACHE_DIR", previous)  # noqa: B010


def test_the_served_feature_kernel_writes_every_source_where_features_names_it() -> None:
    import numpy as np

    from feature_worker.catalog import Catalog
    from feature_worker.stores.base import ItemStats
    from server.retrieval.candidates import CandidateSet
    from server.retrieval.toplists import TopLists
    from tests.shop import item

    assert kernel_cache.cache_dir().endswith(kernel_cache.sources_digest())
    assert str(features._fill.stats.cache_path).startswith(kernel_cache.cache_dir())
    catalog = Catalog()
    catalog.upsert_many(item(f"i{i}") for i in range(3))
    lists = TopLists.build(ItemStats({}, {}, 0), catalog)
    assert lists.index is not None
    pool = CandidateSet()
    for source in range(len(SOURCES)):  # source s proposes item 1 alone, scored (s + 1) / 10
        pool.add(source, np.array([1]), np.array([(source + 1) / 10]), np.array([-1]))
    pool.finish()
    matrix = features.feature_matrix(pool, lists.index, lists, None, [], 0)
    for source, name in enumerate(SOURCES):
        assert matrix[0, features.FEATURES.index(f"{name}_score")] == np.float32((source + 1) / 10)
        assert matrix[0, features.FEATURES.index(f"{name}_rank")] == 1.0  # rank 0: 1 / (1 + 0)
    assert matrix[0, features.FEATURES.index("sources")] == len(SOURCES)
