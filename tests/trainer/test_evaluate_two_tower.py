"""``trainer evaluate --bundle``: the learned retrieval row and the pipeline serving a bundle, on data with a
known answer (`tests.trainer.clusters`: customers shop one cluster of items each).

The bundle is made, not trained (`loadtest.harness.bundles`): every item of cluster ``c`` has the embedding
``e_c``, so any history points at its own cluster and the right answer is found exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtest.harness.bundles import one_hot, write_bundle
from tests.trainer.clusters import CLUSTER_SIZE, CLUSTERS, cluster_of, clusters_dataset
from tests.trainer.test_evaluate import _s3rec_files
from trainer.__main__ import main
from trainer.evaluate import evaluate
from trainer.evaluation.two_tower import load_bundle, provenance_warnings


def cluster_bundle(bundles_dir: Path, prefix: str = "i", name: str = "clusters", version: str = "v1") -> Path:
    """A bundle over every item of the clusters data set (ids ``<prefix><n>``), one axis per cluster."""
    n = CLUSTERS * CLUSTER_SIZE
    ids = [f"{prefix}{i}" for i in range(n)]
    # Within a cluster, a small per-item tilt keeps the order strict (no ties for FAISS to break).
    vectors = np.stack(
        [
            one_hot(CLUSTERS, cluster_of(f"i{i}"))
            + one_hot(CLUSTERS, (cluster_of(f"i{i}") + 1) % CLUSTERS, 0.01 * (i % 4))
            for i in range(n)
        ]
    )
    return write_bundle(bundles_dir, version, ids, vectors, data={"dataset": name, "format": "test"}).root


@pytest.mark.parametrize("protocol", ["loo", "replay"])
def test_learned_retrieval_finds_the_users_cluster(tmp_path: Path, protocol: str) -> None:
    learned = load_bundle(cluster_bundle(tmp_path))
    rows = dict(
        evaluate(
            clusters_dataset(),
            protocol,
            "valid",
            ["aisle", "two_tower", "aisle:no-two-tower", "popularity"],
            progress=False,
            learned=learned,
        )
    )
    for name in ("two_tower", "aisle", "aisle:no-two-tower"):
        assert rows[name][0].cases > 0
        assert rows[name][0].metrics["HR@10"] == 1.0, name
    assert rows["two_tower"][0].metrics["NDCG@10"] >= 1 / 1.585 - 1e-9  # rank 1 or 2
    assert rows["popularity"][0].metrics["HR@10"] < 0.5


def test_the_pipeline_serves_the_bundle_it_is_given(tmp_path: Path) -> None:
    """A bundle that is wrong on purpose (every cluster points at the next one) drags the aisle row down."""
    n = CLUSTERS * CLUSTER_SIZE
    ids = [f"i{i}" for i in range(n)]
    vectors = np.stack([one_hot(CLUSTERS, cluster_of(f"i{i}")) for i in range(n)])
    inputs = np.stack([one_hot(CLUSTERS, (cluster_of(f"i{i}") + 1) % CLUSTERS) for i in range(n)])
    paths = write_bundle(tmp_path, "wrong", ids, vectors, inputs, data={"dataset": "clusters"})
    wrong = load_bundle(paths.root)
    rows = dict(
        evaluate(
            clusters_dataset(),
            "loo",
            "test",
            ["two_tower", "aisle:two_tower=100"],
            progress=False,
            learned=wrong,
        )
    )
    assert rows["two_tower"][0].metrics["HR@10"] < 0.5  # only ties at 0 after the wrong cluster
    assert rows["aisle:two_tower=100"][0].metrics["HR@10"] < 1.0


def test_provenance_warns_about_another_data_set() -> None:
    assert provenance_warnings({"data": {"dataset": "clusters"}}, "clusters") == []
    assert provenance_warnings({"data": {"name": "clusters"}}, "clusters") == []
    assert "trained on 'beauty'" in provenance_warnings({"data": {"name": "beauty"}}, "clusters")[0]
    assert provenance_warnings({}, "clusters")
    assert provenance_warnings({"data": {"path": "/x"}}, "clusters")


def test_command_line_adds_the_two_tower_rows_and_records_the_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _s3rec_files(tmp_path / "clusters")
    # The S3-Rec files number items without the "i"; the bundle says it was trained on another data set.
    bundle = cluster_bundle(tmp_path / "bundles", prefix="", name="Beauty")
    out = tmp_path / "result.json"
    status = main(
        [
            "evaluate",
            "--data",
            str(data),
            "--format",
            "s3rec",
            "--protocol",
            "loo",
            "--split",
            "valid",
            "--bundle",
            str(bundle),
            "--two-tower-weights",
            "0.5,2",
            "--models",
            "aisle,popularity",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "warning: the bundle was trained on 'Beauty', not on 'Clusters'" in printed
    document = json.loads(out.read_text())
    names = [row["model"] for row in document["results"]]
    assert names == ["aisle", "two_tower", "popularity", "aisle:two_tower=0.5", "aisle:two_tower=2"]
    rows = {row["model"]: row for row in document["results"]}
    assert rows["two_tower"]["HR@10"] == 1.0 and rows["aisle:two_tower=2"]["HR@10"] == 1.0
    assert document["bundle"]["version"] == "v1" and document["bundle"]["warnings"]


def test_command_line_needs_a_bundle_for_the_two_tower_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _s3rec_files(tmp_path / "clusters")
    status = main(
        [
            "evaluate",
            "--data",
            str(data),
            "--format",
            "s3rec",
            "--protocol",
            "loo",
            "--models",
            "two_tower",
            "--no-progress",
        ]
    )
    assert status == 2 and "--bundle" in capsys.readouterr().err
    broken = tmp_path / "not-a-bundle"
    broken.mkdir()
    status = main(
        [
            "evaluate",
            "--data",
            str(data),
            "--format",
            "s3rec",
            "--protocol",
            "loo",
            "--bundle",
            str(broken),
            "--no-progress",
        ]
    )
    assert status == 2 and "not a complete bundle" in capsys.readouterr().err
