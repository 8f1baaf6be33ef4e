"""Paired comparisons of evaluate's rows: the difference on the same cases and its interval."""

from __future__ import annotations

import pytest
from scipy import stats

from trainer.evaluation.harness import ModelResult
from trainer.evaluation.paired import paired_difference, paired_markdown, paired_rows


def result(name: str, ndcg10: list[float]) -> ModelResult:
    return ModelResult(name, {"NDCG@10": sum(ndcg10) / len(ndcg10)}, len(ndcg10), 0.0, 0.0, ndcg10)


def test_the_interval_is_students_t_over_the_per_case_differences() -> None:
    a, b = [1.0, 0.0, 0.5, 1.0, 0.3, 0.0], [0.5, 0.0, 0.5, 0.0, 0.6, 0.2]
    found = paired_difference(a, b)
    expected = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert found.mean == pytest.approx(sum(a) / 6 - sum(b) / 6)
    assert found.low == pytest.approx(expected.low) and found.high == pytest.approx(expected.high)
    assert (found.better, found.worse) == (2, 2)  # two ties


def test_pairing_removes_what_both_rows_share() -> None:
    # Two rows that move together case by case: their means' own errors are large, the paired one is zero.
    a = [0.9, 0.1, 0.8, 0.2, 0.7]
    found = paired_difference(a, [x - 0.05 for x in a])
    assert found.mean == pytest.approx(0.05) and found.high - found.low == pytest.approx(0.0, abs=1e-12)


def test_cases_must_match() -> None:
    with pytest.raises(ValueError, match="paired cases must match"):
        paired_difference([1.0, 0.0], [1.0])


def test_every_row_is_compared_with_aisle_and_printed() -> None:
    rows = [
        ("aisle", [result("aisle", [1.0, 0.5, 0.0, 1.0])]),
        ("itemknn", [result("itemknn", [0.5, 0.5, 0.5, 0.0])]),
    ]
    (row,) = paired_rows(rows)
    assert row["model"] == "itemknn" and row["difference"] == pytest.approx(0.25)
    assert (row["cases_better"], row["cases_worse"]) == (2, 1)
    table = paired_markdown([row])
    assert "| itemknn | +0.2500 | [" in table and "| 2 / 1 |" in table


def test_nothing_to_compare_without_aisle_or_with_several_runs() -> None:
    assert paired_rows([("itemknn", [result("itemknn", [1.0, 0.0])])]) == []
    several = [result("aisle", [1.0, 0.0]), result("aisle", [0.0, 1.0])]
    assert paired_rows([("aisle", several), ("itemknn", several)]) == []
    assert paired_markdown([]) == ""
