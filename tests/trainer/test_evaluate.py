"""Every protocol through every default model on data with known answers, and the command line's contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.clusters import clusters_dataset, sequences
from trainer.__main__ import main
from trainer.evaluate import DEFAULT_MODELS, evaluate

CO_OCCURRENCE = ("aisle", "covisitation", "itemknn")


@pytest.mark.parametrize("protocol", ["loo", "time-split", "replay"])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_models_that_learn_co_occurrence_find_the_users_cluster(protocol: str, split: str) -> None:
    rows = dict(evaluate(clusters_dataset(), protocol, split, [*DEFAULT_MODELS, "ease"], progress=False))
    for name, [result] in rows.items():
        assert result.cases > 0, name
        assert all(0.0 <= v <= 1.0 for v in result.metrics.values()), name
    for name in (*CO_OCCURRENCE, "ease"):
        # At most two items of the user's cluster are left: both lead the ranking.
        assert rows[name][0].metrics["HR@10"] == 1.0, name
        assert rows[name][0].metrics["NDCG@10"] >= 1 / 1.585 - 1e-9, name  # rank 1 or 2
    assert rows["popularity"][0].metrics["HR@10"] < 0.5


def test_loo_answer_is_exact_when_one_item_is_left() -> None:
    rows = dict(evaluate(clusters_dataset(), "loo", "test", list(CO_OCCURRENCE), progress=False))
    for name in CO_OCCURRENCE:
        assert rows[name][0].metrics["NDCG@10"] == 1.0 and rows[name][0].metrics["MRR"] == 1.0, name


def test_seeds_repeat_only_what_is_random() -> None:
    data = clusters_dataset()
    once = dict(evaluate(data, "loo", "test", ["popularity"], seeds=3, progress=False))
    assert len(once["popularity"]) == 1  # nothing is drawn at random: one run
    drawn = dict(evaluate(data, "replay", "test", ["popularity"], seeds=3, users=5, progress=False))
    assert len(drawn["popularity"]) == 3 and all(r.cases > 0 for r in drawn["popularity"])


def _s3rec_files(directory: Path) -> Path:
    directory.mkdir()
    lines = [
        f"{n + 1} " + " ".join(item[1:] for item in items)
        for n, items in enumerate(sequences(clusters_dataset()).values())
    ]
    (directory / "Clusters.txt").write_text("\n".join(lines) + "\n")
    return directory


def test_command_line_prints_a_table_and_writes_the_json_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _s3rec_files(tmp_path / "clusters")
    out = tmp_path / "out" / "result.json"
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
            "--seeds",
            "3",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "| model | HR@10 | NDCG@10 |" in printed and "| aisle |" in printed
    document = json.loads(out.read_text())
    assert set(document) == {"dataset", "protocol", "split", "results", "paired"}
    assert (document["dataset"], document["protocol"], document["split"]) == ("Clusters", "loo", "valid")
    assert [row["model"] for row in document["results"]] == list(DEFAULT_MODELS)
    for row in document["results"]:
        assert set(row) == {"model", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR", "coverage@10", "seconds"}
        assert all(isinstance(row[key], float) for key in row if key != "model")
    aisle = document["results"][0]
    assert aisle["HR@10"] == 1.0
    # aisle against every other row on the same cases (one run: the seeds change nothing without --users).
    assert [row["model"] for row in document["paired"]] == list(DEFAULT_MODELS)[1:]
    for row in document["paired"]:
        assert row["low"] <= row["difference"] <= row["high"] and row["metric"] == "NDCG@10"
    assert "aisle minus each row on the same cases" in printed


def test_command_line_reports_malformed_data_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Bad.txt").write_text("1 1 2\n2\n")
    status = main(
        ["evaluate", "--data", str(tmp_path), "--format", "s3rec", "--protocol", "loo", "--no-progress"]
    )
    assert status == 2
    assert f"{tmp_path / 'Bad.txt'}:2: user 2 has no items" in capsys.readouterr().err


def test_command_line_refuses_unknown_models(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path),
                "--format",
                "s3rec",
                "--protocol",
                "loo",
                "--models",
                "sasrec",
            ]
        )
