"""Ranking metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from trainer.evaluation.metrics import Accumulator, evaluate, hit, ndcg, rank_of, reciprocal_rank


def test_rank_hit_ndcg_and_reciprocal_rank_of_single_targets() -> None:
    ranked = ["a", "b", "c"]
    assert rank_of("a", ranked) == 1 and rank_of("c", ranked) == 3 and rank_of("z", ranked) is None
    assert hit(1, 10) == 1.0 and hit(10, 10) == 1.0 and hit(11, 10) == 0.0 and hit(None, 10) == 0.0
    assert ndcg(1, 10) == 1.0
    assert ndcg(3, 10) == pytest.approx(0.5)  # 1 / log2(4)
    assert ndcg(10, 10) == pytest.approx(1 / math.log2(11))
    assert ndcg(11, 10) == 0.0 and ndcg(None, 20) == 0.0
    assert reciprocal_rank(4) == 0.25 and reciprocal_rank(None) == 0.0


def test_means_over_cases_and_coverage_of_the_top_ten() -> None:
    ranked = [str(i) for i in range(25)]
    # Targets at ranks 1, 3, 15 and absent.
    result = evaluate(["0", "2", "14", "x"], [ranked] * 4, catalog_size=50)
    assert result["HR@10"] == pytest.approx(2 / 4)
    assert result["HR@20"] == pytest.approx(3 / 4)
    assert result["NDCG@10"] == pytest.approx((1.0 + 0.5) / 4)
    assert result["NDCG@20"] == pytest.approx((1.0 + 0.5 + 1 / math.log2(16)) / 4)
    assert result["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 15) / 4)
    # Every case shows the same ten items: 10 of 50.
    assert result["coverage@10"] == pytest.approx(0.2)


def test_coverage_counts_distinct_items_across_cases() -> None:
    acc = Accumulator()
    acc.add("a", ["a", "b"])
    acc.add("c", ["b", "c"])
    assert acc.result(catalog_size=4)["coverage@10"] == pytest.approx(3 / 4)
    assert acc.result(catalog_size=4)["HR@10"] == 1.0


def test_no_cases_gives_zeros_not_an_error() -> None:
    assert Accumulator().result(catalog_size=10) == {
        "HR@10": 0.0,
        "NDCG@10": 0.0,
        "HR@20": 0.0,
        "NDCG@20": 0.0,
        "MRR": 0.0,
        "coverage@10": 0.0,
    }
