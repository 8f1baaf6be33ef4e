"""Each loader on small files written here: what it reads, and the errors it raises on malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protos.aisle.v1 import events_pb2
from trainer.data.dataset import Dataset
from trainer.data.errors import DataFormatError
from trainer.data.formats import load, load_generated
from trainer.data.s3rec import DEFAULT_SPACING_MS, SYNTHETIC_START_MS
from trainer.generate import generate_shop


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _sequence(dataset: Dataset, user: str) -> list[tuple[str, int]]:
    return [(e.item_id, e.ts_ms) for e in dataset.events if e.user_id == user]


# -- S3-Rec --------------------------------------------------------------------------------------------------

ATTRIBUTES = {"1": [9, 1, 2], "2": [9, 1, 3], "3": [1, 2], "4": [8, 4]}


def test_s3rec_reads_sequences_in_order_with_synthetic_time_and_attributes(tmp_path: Path) -> None:
    _write(tmp_path / "Toy.txt", "1 1 2 3\n2 3 4\n")
    _write(tmp_path / "Toy_item2attributes.json", json.dumps(ATTRIBUTES))
    data = load("s3rec", tmp_path)
    assert data.synthetic_time and data.name == "Toy"
    assert _sequence(data, "1") == [
        (item, SYNTHETIC_START_MS + i * DEFAULT_SPACING_MS) for i, item in enumerate("123")
    ]
    assert _sequence(data, "2") == [("3", SYNTHETIC_START_MS), ("4", SYNTHETIC_START_MS + DEFAULT_SPACING_MS)]
    assert all(e.type == events_pb2.PURCHASE for e in data.events)
    assert [e.ts_ms for e in data.events] == sorted(e.ts_ms for e in data.events)
    # 9 and 8 only ever come first: brands; 1 is a root category, 2 and 3 its children.
    assert (data.items["1"].brand, data.items["1"].category) == ("b9", "a1/a2")
    assert (data.items["3"].brand, data.items["3"].category) == ("", "a1/a2")
    assert (data.items["4"].brand, data.items["4"].category) == ("b8", "a4")
    assert data.items["2"].attributes["s3rec_attributes"] == "9,1,3"
    assert all(item.in_stock for item in data.items.values())


def test_s3rec_spacing_is_a_parameter(tmp_path: Path) -> None:
    _write(tmp_path / "Toy.txt", "1 1 2\n")
    data = load("s3rec", tmp_path, spacing_ms=3_600_000)
    assert [ts for _, ts in _sequence(data, "1")] == [SYNTHETIC_START_MS, SYNTHETIC_START_MS + 3_600_000]
    assert data.items["1"].category == "" and any("no attributes" in note for note in data.notes)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("1 1 2\n\n2 3\n", 2, "empty line"),
        ("1 1 2\n2\n", 2, "has no items"),
        ("1 1 2\n1 3 4\n", 2, "already on line 1"),
    ],
)
def test_s3rec_malformed_lines_name_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = _write(tmp_path / "Toy.txt", text)
    with pytest.raises(DataFormatError) as error:
        load("s3rec", tmp_path)
    assert error.value.path == path and error.value.line == line and reason in error.value.reason
    assert str(error.value).startswith(f"{path}:{line}: ")


def test_s3rec_bad_attributes_json_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "Toy.txt", "1 1 2\n")
    _write(tmp_path / "Toy_item2attributes.json", '{"1": ["x"]}')
    with pytest.raises(DataFormatError, match="integer attribute ids"):
        load("s3rec", tmp_path)


def _timed(tmp_path: Path, times: str) -> Path:
    directory = tmp_path / "toy-time"
    _write(directory / "Toy_item_org.txt", "1 10 20 30\n2 30 40\n")
    _write(directory / "Toy_time_org.txt", times)
    return directory


def test_s3rec_time_reads_aligned_timestamps_and_maps_attributes_from_the_sibling_copy(
    tmp_path: Path,
) -> None:
    directory = _timed(tmp_path, "1 100 100 200\n2 50 300\n")
    _write(directory / "item_map_s3rec_to_time.tsv", "s3rec_item\ttime_item\n1\t10\n2\t20\n3\t30\n4\t40\n")
    _write(tmp_path / "toy" / "Toy_item2attributes.json", json.dumps(ATTRIBUTES))
    data = load("s3rec-time", directory)
    assert not data.synthetic_time
    assert _sequence(data, "1") == [("10", 100_000), ("20", 100_000), ("30", 200_000)]
    assert [(e.user_id, e.item_id) for e in data.events] == [
        ("2", "30"),
        ("1", "10"),
        ("1", "20"),
        ("1", "30"),
        ("2", "40"),
    ]
    assert data.items["10"].brand == "b9" and data.items["40"].category == "a4"


@pytest.mark.parametrize(
    ("times", "line", "reason"),
    [
        ("1 100 100\n2 50 300\n", 1, "2 timestamps for 3 items"),
        ("1 100 90 200\n2 50 300\n", 1, "is before 100"),
        ("1 100 x 200\n2 50 300\n", 1, "not an integer"),
    ],
)
def test_s3rec_time_malformed_timestamps(tmp_path: Path, times: str, line: int, reason: str) -> None:
    directory = _timed(tmp_path, times)
    with pytest.raises(DataFormatError) as error:
        load("s3rec-time", directory)
    assert (
        error.value.path.name == "Toy_time_org.txt"
        and error.value.line == line
        and reason in error.value.reason
    )


def test_s3rec_time_without_a_times_file_says_so(tmp_path: Path) -> None:
    _write(tmp_path / "Toy_item_org.txt", "1 10 20\n")
    with pytest.raises(DataFormatError, match="missing"):
        load("s3rec-time", tmp_path)


# -- Diginetica ----------------------------------------------------------------------------------------------

VIEWS = """session_id;user_id;item_id;timeframe;eventdate
1;NA;100;5000;2016-05-09
1;NA;200;1000;2016-05-09
2;NA;100;0;2016-05-10
2;7;300;9000;2016-05-10
3;NA;400;86401000;2016-05-11
"""
PURCHASES = """sessionId;userId;timeframe;eventdate;ordernumber;itemId
2;7;20000;2016-05-10;1;300
9;NA;0;2016-05-12;2;500
"""
CATEGORIES = "itemId;categoryId\n100;11\n200;11\n300;12\n999;13\n"
DAY_0509 = 1_462_752_000_000  # 2016-05-09T00:00Z
DAY = 86_400_000


def test_diginetica_views_purchases_users_and_time(tmp_path: Path) -> None:
    _write(tmp_path / "sample_train-item-views.csv", VIEWS)
    _write(tmp_path / "train-purchases.csv", PURCHASES)
    _write(tmp_path / "product-categories.csv", CATEGORIES)
    data = load("diginetica", tmp_path)
    # Anonymous session -> its own user; a session logged in on any row -> that user on every row.
    assert _sequence(data, "s1") == [("200", DAY_0509 + 1000), ("100", DAY_0509 + 5000)]
    assert _sequence(data, "u7") == [
        ("100", DAY_0509 + DAY),
        ("300", DAY_0509 + DAY + 9000),
        ("300", DAY_0509 + DAY + 20000),
    ]
    assert [e.type for e in data.events if e.user_id == "u7"] == [
        events_pb2.VIEW,
        events_pb2.VIEW,
        events_pb2.PURCHASE,
    ]
    # timeframe is taken within the event's own day.
    assert _sequence(data, "s3") == [("400", DAY_0509 + 2 * DAY + 1000)]
    assert _sequence(data, "s9") == [("500", DAY_0509 + 3 * DAY)]
    # The catalog is the items of the events; categories annotate them.
    assert set(data.items) == {"100", "200", "300", "400", "500"}
    assert data.items["100"].category == "c11" and data.items["400"].category == ""


def test_diginetica_errors_name_file_and_line(tmp_path: Path) -> None:
    _write(
        tmp_path / "train-item-views.csv", VIEWS.replace("2;7;300;9000;2016-05-10", "2;7;300;9000;10/05/2016")
    )
    with pytest.raises(DataFormatError) as error:
        load("diginetica", tmp_path)
    assert error.value.line == 5 and "YYYY-MM-DD" in error.value.reason
    _write(tmp_path / "train-item-views.csv", VIEWS.replace("1;NA;200;1000;2016-05-09", "1;NA;200;1000"))
    with pytest.raises(DataFormatError, match=r"train-item-views.csv:3: expected 5 fields"):
        load("diginetica", tmp_path)
    _write(tmp_path / "train-item-views.csv", "a;b;c\n")
    with pytest.raises(DataFormatError, match="header must be"):
        load("diginetica", tmp_path)


def test_diginetica_without_views_says_which_files_it_wants(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="train-item-views.csv"):
        load("diginetica", tmp_path)


# -- Taobao --------------------------------------------------------------------------------------------------


def test_taobao_behaviours_become_event_types(tmp_path: Path) -> None:
    _write(
        tmp_path / "UserBehavior.csv",
        "1,10,5,pv,1511544070\n1,11,5,fav,1511544080\n1,11,5,cart,1511544090\n"
        "1,11,5,buy,1511544100\n2,10,6,pv,1511544000\n",
    )
    data = load("taobao", tmp_path)
    assert [e.type for e in data.events if e.user_id == "1"] == [
        events_pb2.VIEW,
        events_pb2.CLICK,
        events_pb2.ADD_TO_CART,
        events_pb2.PURCHASE,
    ]
    assert data.events[0].user_id == "2" and data.events[0].ts_ms == 1_511_544_000_000
    assert data.items["10"].category == "c5"  # the first row's category wins


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("1,10,5,like,1511544070", "unknown behavior 'like'"),
        ("1,10,5,pv", "expected 5 fields"),
        ("1,10,5,pv,soon", "not an integer"),
        ("1,,5,pv,1511544070", "item_id"),
    ],
)
def test_taobao_malformed_rows(tmp_path: Path, row: str, reason: str) -> None:
    _write(tmp_path / "UserBehavior.csv", f"1,10,5,pv,1511544070\n{row}\n")
    with pytest.raises(DataFormatError) as error:
        load("taobao", tmp_path)
    assert error.value.line == 2 and reason in error.value.reason


# -- Generated -----------------------------------------------------------------------------------------------


def test_generated_shop_loads_with_every_item_in_stock(tmp_path: Path) -> None:
    meta = generate_shop(50, 30, 3, tmp_path, progress=False)
    data = load_generated(tmp_path)
    assert len(data.events) == meta["events"] and len(data.items) == 30
    assert all(item.in_stock for item in data.items.values())
    assert not data.synthetic_time


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        load("parquet", tmp_path)
