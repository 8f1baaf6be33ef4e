"""The evaluated pipeline is the server's: same objects, and a top 10 that is the first 10 of a top 200."""

from __future__ import annotations

from pathlib import Path

from server.recommender import Query
from trainer.data.formats import load_generated
from trainer.evaluation.protocols import leave_one_out
from trainer.evaluation.serving import ServingPipeline
from trainer.generate import generate_shop


def test_top_ten_is_the_head_of_the_top_two_hundred(tmp_path: Path) -> None:
    generate_shop(300, 150, 5, tmp_path, progress=False)
    data = load_generated(tmp_path)
    split = leave_one_out(data, "test")
    pipeline = ServingPipeline(list(data.items.values()))
    pipeline.update(split.train)
    pipeline.refresh()
    cases = split.cases[:60]
    assert cases
    long = pipeline.rank(cases, 200)
    short = pipeline.rank(cases, 10)
    assert [r[:10] for r in long] == short
    for case, ranked in zip(cases, long, strict=True):
        assert not set(ranked) & set(case.history)
        assert len(ranked) == min(200, len(data.items) - len(case.history))


def test_rank_answers_what_the_recommender_answers(tmp_path: Path) -> None:
    generate_shop(100, 60, 2, tmp_path, progress=False)
    data = load_generated(tmp_path)
    split = leave_one_out(data, "test")
    pipeline = ServingPipeline(list(data.items.values()))
    pipeline.update(split.train)
    pipeline.refresh()
    for case in split.cases[:20]:
        features = pipeline.store.read_request(case.user_id, ())
        direct = pipeline.recommender.recommend(
            Query(case.user_id, 20, exclude_item_ids=frozenset(case.history)), features
        )
        assert [r.item_id for r in direct] == pipeline.rank([case], 20)[0]
