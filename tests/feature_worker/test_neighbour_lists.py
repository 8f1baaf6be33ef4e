"""Decoding the read script's neighbour lists once per content (`feature_worker.stores.neighbour_lists`)."""

from __future__ import annotations

from feature_worker.stores.bounds import NEIGHBOURS_PER_SEED, heaviest
from feature_worker.stores.neighbour_lists import NeighbourLists


def reply(*triples: tuple[bytes, list[bytes], list[bytes] | None]) -> list[object]:
    """A read script's reply: the features and the key (unused here), then ``seed, top, ties`` triples."""
    out: list[object] = [None, None]
    for seed, top, ties in triples:
        out += [seed, top, ties]
    return out


def test_a_reply_is_decoded_as_the_in_process_store_ranks_it() -> None:
    top = [b"b", b"3", b"c", b"2", b"a", b"2"]
    got = NeighbourLists().decode(reply((b"s", top, None)))
    assert got == {"s": heaviest([("b", 3.0), ("c", 2.0), ("a", 2.0)], NEIGHBOURS_PER_SEED)}
    assert got["s"] == [("b", 3.0), ("a", 2.0), ("c", 2.0)]


def test_members_tied_with_the_last_are_ranked_by_id() -> None:
    top = [x for n in range(NEIGHBOURS_PER_SEED) for x in (f"n{n:03}".encode(), b"5" if n < 48 else b"1")]
    ties = [b"a", b"n048", b"n049", b"z"]
    ranked = NeighbourLists().decode(reply((b"s", top, ties)))["s"]
    assert len(ranked) == NEIGHBOURS_PER_SEED
    assert ranked[-2:] == [("a", 1.0), ("n048", 1.0)]


def test_an_equal_reply_gets_the_same_list_and_any_change_a_new_one() -> None:
    lists = NeighbourLists()
    first = lists.decode(reply((b"s", [b"a", b"2", b"b", b"1"], None), (b"t", [b"a", b"1"], None)))
    same = lists.decode(reply((b"s", [b"a", b"2", b"b", b"1"], None)))
    assert same["s"] is first["s"] and (lists.decoded, lists.reused) == (2, 1)
    rescored = lists.decode(reply((b"s", [b"a", b"2", b"b", b"2"], None)))
    assert rescored["s"] == [("a", 2.0), ("b", 2.0)] and rescored["s"] is not first["s"]
    renamed = lists.decode(reply((b"s", [b"a", b"2", b"c", b"2"], None)))
    assert renamed["s"] == [("a", 2.0), ("c", 2.0)]
    tied = lists.decode(reply((b"s", [b"a", b"2", b"c", b"2"], [b"a", b"c", b"d"])))
    assert tied["s"] == [("a", 2.0), ("c", 2.0), ("d", 2.0)] and lists.reused == 1


def test_past_its_capacity_it_starts_over_and_still_answers_right() -> None:
    lists = NeighbourLists(capacity=2)
    for seed in (b"s", b"t", b"u"):
        lists.decode(reply((seed, [b"a", b"1"], None)))
    again = lists.decode(reply((b"s", [b"a", b"1"], None), (b"u", [b"a", b"1"], None)))
    assert again == {"s": [("a", 1.0)], "u": [("a", 1.0)]}
    assert (lists.decoded, lists.reused) == (4, 1)
