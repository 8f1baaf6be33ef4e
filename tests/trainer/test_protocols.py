"""The protocols: which events are learned and which interactions are scored, on data with known answers."""

from __future__ import annotations

from protos.aisle.v1 import events_pb2
from tests.trainer.clusters import CLUSTER_SIZE, CLUSTERS, USERS_PER_CLUSTER, clusters_dataset
from trainer.data.dataset import Dataset
from trainer.evaluation.protocols import cutoffs, leave_one_out, replay, sample_cases, time_split

T0 = 1_700_000_000_000


def _event(
    n: int, user: str, item: str, ts: int, etype: events_pb2.EventType.ValueType = events_pb2.VIEW
) -> events_pb2.Event:
    return events_pb2.Event(
        event_id=f"e{n}",
        type=etype,
        user_id=user,
        item_id=item,
        ts_ms=ts,
    )


def _dataset(
    rows: list[tuple[str, str, int]], types: dict[int, events_pb2.EventType.ValueType] | None = None
) -> Dataset:
    events = [_event(n, u, i, ts, (types or {}).get(n, events_pb2.VIEW)) for n, (u, i, ts) in enumerate(rows)]
    items = {e.item_id for e in events}
    from protos.aisle.v1 import catalog_pb2

    return Dataset("t", {i: catalog_pb2.Item(item_id=i, in_stock=True) for i in sorted(items)}, events)


def test_leave_one_out_holds_out_the_last_new_items_and_learns_what_came_before() -> None:
    # u1: a b a c d d   (new items a b c d: test d, valid c); u2 has two new items only: never scored.
    data = _dataset(
        [
            ("u1", "a", 1),
            ("u1", "b", 2),
            ("u2", "x", 3),
            ("u1", "a", 4),
            ("u1", "c", 5),
            ("u2", "y", 6),
            ("u1", "d", 7),
            ("u1", "d", 8),
        ]
    )
    test = leave_one_out(data, "test")
    assert [(c.user_id, c.target, c.history) for c in test.cases] == [("u1", "d", ("a", "b", "c"))]
    assert [e.event_id for e in test.train] == ["e0", "e1", "e2", "e3", "e4", "e5"]
    valid = leave_one_out(data, "valid")
    assert [(c.user_id, c.target, c.history) for c in valid.cases] == [("u1", "c", ("a", "b"))]
    assert [e.event_id for e in valid.train] == ["e0", "e1", "e2", "e3", "e5"]


def test_targets_are_interactions_never_searches_or_removals() -> None:
    data = _dataset(
        [("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("u", "z", 4)], types={3: events_pb2.REMOVE_FROM_CART}
    )
    split = leave_one_out(data, "test")
    assert [(c.target, c.history) for c in split.cases] == [("c", ("a", "b"))]


def test_time_split_learns_before_the_cut_and_predicts_the_first_new_item_after() -> None:
    rows = [(f"w{n}", f"i{n}", n) for n in range(14)]  # filler: 14 early events
    rows += [("u", "a", 20), ("u", "b", 21), ("u", "a", 30), ("u", "c", 31), ("u", "d", 32), ("v", "q", 33)]
    data = _dataset(rows)
    valid_cut, test_cut = cutoffs(data)
    assert (valid_cut, test_cut) == (30, 32)  # 20 events: the last 20% start at index 16, the last 10% at 18
    test = time_split(data, "test")
    assert max(e.ts_ms for e in test.train) < 32
    assert [(c.user_id, c.target, c.history) for c in test.cases] == [("u", "d", ("a", "b", "c"))]
    valid = time_split(data, "valid")
    # v has no history before the cut: a new customer, not scored; "a" again is not new; "c" is.
    assert [(c.user_id, c.target, c.history) for c in valid.cases] == [("u", "c", ("a", "b"))]


def test_replay_scores_each_new_item_of_a_known_user_before_learning_it() -> None:
    rows = [(f"w{n}", f"i{n}", n) for n in range(18)]
    rows += [("u", "a", 18), ("u", "b", 19), ("u", "a", 20), ("u", "c", 21), ("n", "z", 22)]
    data = _dataset(rows)
    split = replay(data, "test")
    assert [e.ts_ms for e in split.stream] == [20, 21, 22] and len(split.warmup) == 20
    # "a" again is not new; "c" is scored with history a, b; the new customer n has no history.
    assert {i: (c.target, c.history) for i, c in split.cases.items()} == {1: ("c", ("a", "b"))}


def test_clusters_have_one_case_per_user_and_their_own_cluster_as_the_answer() -> None:
    data = clusters_dataset()
    split = leave_one_out(data, "test")
    assert len(split.cases) == CLUSTERS * USERS_PER_CLUSTER
    for case in split.cases:
        assert len(case.history) == CLUSTER_SIZE - 1
        assert {int(i[1:]) // CLUSTER_SIZE for i in case.history} == {int(case.target[1:]) // CLUSTER_SIZE}


def test_sampling_users_is_seeded() -> None:
    cases = leave_one_out(clusters_dataset(), "test").cases
    a, b, c = (sample_cases(cases, 10, seed) for seed in (1, 1, 2))
    assert len({x.user_id for x in a}) == 10 and a == b and a != c
    assert sample_cases(cases, None, 0) is cases


def test_strict_loo_learns_the_training_part_and_keeps_validation_private() -> None:
    from trainer.evaluation.protocols import strict_leave_one_out, training_part

    # u1: a b c d (valid c, test d); u2: x c y z (valid y, test z): u2's "c" is training, u1's "c" validation.
    data = _dataset(
        [("u1", "a", 1), ("u2", "x", 2), ("u1", "b", 3), ("u2", "c", 4), ("u1", "c", 5), ("u2", "y", 6),
         ("u1", "d", 7), ("u2", "z", 8)]
    )  # fmt: skip
    strict = strict_leave_one_out(data, "test")
    assert [e.event_id for e in strict.train] == ["e0", "e1", "e2", "e3"]
    assert [e.event_id for e in strict.private] == ["e4", "e5"]  # each user's validation interaction
    assert [(c.user_id, c.target) for c in strict.cases] == [("u1", "d"), ("u2", "z")]
    assert strict_leave_one_out(data, "valid").private == []
    assert [e.event_id for e in training_part(data).events] == ["e0", "e1", "e2", "e3"]


def test_private_events_change_only_their_users_history() -> None:
    from trainer.evaluation.serving import ServingPipeline

    data = _dataset([("u1", "a", 1), ("u2", "a", 2), ("u2", "b", 3), ("u1", "c", 4)])
    pipeline = ServingPipeline(list(data.items.values()))
    pipeline.update(data.events[:3])
    before = pipeline.store.item_stats()
    covis_before = {k: dict(v) for k, v in pipeline.store.covis.items()}
    pipeline.update_private(data.events[3:])
    after = pipeline.store.item_stats()
    assert after.popularity == before.popularity and after.trending == before.trending
    assert {k: dict(v) for k, v in pipeline.store.covis.items()} == covis_before
    user = pipeline.store.read_request("u1", ()).user
    assert user is not None and [item for _, _, item in user.recent] == ["a", "c"]
