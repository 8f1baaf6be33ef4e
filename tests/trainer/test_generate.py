"""The generated shop: deterministic, consistent with itself, and read back by trainer.data.generated."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from protos.aisle.v1 import events_pb2
from trainer.__main__ import main
from trainer.data.errors import DataFormatError
from trainer.data.generated import (
    EVENT_COLUMNS,
    EVENTS_FILE,
    ITEMS_FILE,
    META_FILE,
    USERS_FILE,
    read_events,
    read_items,
    read_meta,
    read_users,
)
from trainer.generate import generate_shop
from trainer.generate.model import DEFAULT_END_TS_MS

USERS = 200
ITEMS = 100
SEED = 7
FILES = (ITEMS_FILE, USERS_FILE, EVENTS_FILE, META_FILE)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(USERS, ITEMS, SEED, out, progress=False)
    return out


def _rows(shop: Path) -> list[dict[str, str]]:
    with (shop / EVENTS_FILE).open(newline="") as f:
        return list(csv.DictReader(f))


def _items(shop: Path) -> dict[str, dict[str, object]]:
    with (shop / ITEMS_FILE).open() as f:
        return {item["item_id"]: item for item in map(json.loads, f)}


def test_same_seed_gives_identical_files(shop: Path, tmp_path: Path) -> None:
    generate_shop(USERS, ITEMS, SEED, tmp_path, progress=False)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (shop / name).read_bytes(), name


def test_different_seed_gives_different_shop(shop: Path, tmp_path: Path) -> None:
    generate_shop(USERS, ITEMS, SEED + 1, tmp_path, progress=False)
    for name in (ITEMS_FILE, EVENTS_FILE):
        assert (tmp_path / name).read_bytes() != (shop / name).read_bytes(), name


def test_catalog_does_not_depend_on_the_number_of_users(shop: Path, tmp_path: Path) -> None:
    generate_shop(USERS // 2, ITEMS, SEED, tmp_path, progress=False)
    assert (tmp_path / ITEMS_FILE).read_bytes() == (shop / ITEMS_FILE).read_bytes()


def test_meta_matches_the_files(shop: Path) -> None:
    meta = read_meta(shop)
    assert meta["users"] == USERS and meta["items"] == ITEMS and meta["seed"] == SEED
    assert meta["end_ms"] == DEFAULT_END_TS_MS
    assert meta["end_ms"] - meta["start_ms"] == 30 * 86_400_000
    assert meta["events"] == len(_rows(shop))
    assert len(_items(shop)) == ITEMS
    assert sum(1 for _ in read_users(shop)) == USERS


def test_about_a_dozen_events_per_user(shop: Path) -> None:
    per_user = Counter(row["user_id"] for row in _rows(shop))
    assert 6 <= sum(per_user.values()) / USERS <= 20
    # Heavy users and light ones.
    assert max(per_user.values()) >= 4 * sorted(per_user.values())[len(per_user) // 2]


def test_events_are_in_time_order_within_the_window(shop: Path) -> None:
    meta = read_meta(shop)
    rows = _rows(shop)
    times = [int(row["ts_ms"]) for row in rows]
    assert times == sorted(times)
    assert meta["start_ms"] <= times[0] and times[-1] < meta["end_ms"]
    assert [row["event_id"] for row in rows] == [f"e{i}" for i in range(1, len(rows) + 1)]


def test_events_refer_to_known_items_and_users(shop: Path) -> None:
    items = _items(shop)
    users = {user.user_id for user in read_users(shop)}
    for row in _rows(shop):
        assert row["user_id"] in users
        if row["type"] == "SEARCH":
            assert row["item_id"] == "" and row["query"]
        else:
            assert row["item_id"] in items


def test_every_event_type_occurs(shop: Path) -> None:
    types = Counter(row["type"] for row in _rows(shop))
    assert set(types) == {"VIEW", "CLICK", "SEARCH", "ADD_TO_CART", "REMOVE_FROM_CART", "PURCHASE"}
    assert types["VIEW"] > types["ADD_TO_CART"] > types["PURCHASE"]


def test_carts_and_purchases_follow_a_view_in_the_same_session(shop: Path) -> None:
    items = _items(shop)
    viewed: set[tuple[str, str, str]] = set()
    carted: set[tuple[str, str, str]] = set()
    for row in _rows(shop):
        key = (row["user_id"], row["session_id"], row["item_id"])
        if row["type"] == "VIEW":
            viewed.add(key)
        elif row["type"] in ("CLICK", "ADD_TO_CART", "PURCHASE"):
            assert key in viewed, row
        if row["type"] == "ADD_TO_CART":
            carted.add(key)
        elif row["type"] in ("REMOVE_FROM_CART", "PURCHASE"):
            assert key in carted, row
        if row["type"] in ("ADD_TO_CART", "PURCHASE"):
            assert float(row["price"]) == items[row["item_id"]]["price"]
            assert int(row["quantity"]) >= 1


@pytest.fixture(scope="module")
def larger_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough items per leaf and brand for the statistical properties to show."""
    out = tmp_path_factory.mktemp("larger_shop")
    generate_shop(2000, 2000, SEED, out, progress=False)
    return out


def test_sessions_stay_in_one_leaf(shop: Path) -> None:
    items = _items(shop)
    views: defaultdict[str, list[str]] = defaultdict(list)
    for row in _rows(shop):
        if row["type"] == "VIEW":
            views[row["session_id"]].append(row["item_id"])
    several = [v for v in views.values() if len(v) >= 2]
    assert len(several) > len(views) / 2
    for session in several:
        assert len({items[i]["category"] for i in session}) == 1


def test_co_viewed_items_share_a_brand_more_than_chance(larger_shop: Path) -> None:
    items = _items(larger_shop)
    leaf_size = Counter(item["category"] for item in items.values())
    brand_in_leaf = Counter((item["category"], item["brand"]) for item in items.values())
    views: defaultdict[str, list[str]] = defaultdict(list)
    for row in _rows(larger_shop):
        if row["type"] == "VIEW":
            views[row["session_id"]].append(row["item_id"])
    same_brand = chance = 0.0
    pairs = 0
    for session in views.values():
        for a, b in itertools.pairwise(session):
            leaf = items[a]["category"]
            pairs += 1
            same_brand += items[a]["brand"] == items[b]["brand"]
            # The chance that another item of a's leaf, drawn uniformly, has a's brand.
            chance += (brand_in_leaf[leaf, items[a]["brand"]] - 1) / (leaf_size[leaf] - 1)
    assert pairs > 1000
    assert same_brand / pairs > 1.3 * chance / pairs


def test_consumables_are_bought_again(larger_shop: Path) -> None:
    purchases = Counter(
        (row["user_id"], row["item_id"]) for row in _rows(larger_shop) if row["type"] == "PURCHASE"
    )
    assert sum(count > 1 for count in purchases.values()) > 10


def test_catalog_is_a_three_level_tree_with_sane_items(shop: Path) -> None:
    items = list(read_items(shop))
    assert [item.item_id for item in items] == [f"i{i}" for i in range(1, ITEMS + 1)]
    categories = {item.category for item in items}
    assert len(categories) >= 5
    for item in items:
        assert len(item.category.split("/")) == 3
        assert item.title and item.description and item.brand
        assert item.price > 0 and round(item.price, 2) == item.price
    assert 0.8 < sum(item.in_stock for item in items) / ITEMS <= 1.0


def test_users_have_attributes_and_consent(shop: Path) -> None:
    for user in read_users(shop):
        assert set(user.attributes) == {"age_band", "gender", "loyalty_tier", "region"}
        assert user.consent.personalization


def test_read_events_round_trips_the_csv(shop: Path) -> None:
    events = list(read_events(shop))
    rows = _rows(shop)
    assert len(events) == len(rows)
    for event, row in zip(events, rows):
        assert events_pb2.EventType.Name(event.type) == row["type"]
        assert (event.event_id, event.user_id, event.session_id, event.item_id, event.query) == (
            row["event_id"],
            row["user_id"],
            row["session_id"],
            row["item_id"],
            row["query"],
        )
        assert event.ts_ms == int(row["ts_ms"])
        assert event.price == (float(row["price"]) if row["price"] else 0.0)
        assert event.quantity == (int(row["quantity"]) if row["quantity"] else 0)


def test_read_items_round_trips_the_jsonl(shop: Path) -> None:
    raw = _items(shop)
    for item in read_items(shop):
        line = raw[item.item_id]
        assert (item.title, item.category, item.brand, item.price, item.in_stock) == (
            line["title"],
            line["category"],
            line["brand"],
            line["price"],
            line["in_stock"],
        )
        assert dict(item.attributes) == line["attributes"]


def _break(shop: Path, tmp_path: Path, name: str, line: int, text: str) -> Path:
    """A copy of the shop whose file ``name`` has its 1-based ``line`` replaced by ``text``."""
    for file in FILES:
        shutil.copy(shop / file, tmp_path / file)
    lines = (tmp_path / name).read_text().splitlines(keepends=True)
    lines[line - 1] = text + "\n"
    (tmp_path / name).write_text("".join(lines))
    return tmp_path


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        (ITEMS_FILE, '{"item_id": "i3", "title": ', "invalid JSON"),
        (ITEMS_FILE, '{"item_id": "i3", "colour": "red"}', "colour"),
        (ITEMS_FILE, '{"title": "no id"}', "missing item_id"),
        (ITEMS_FILE, "", "empty line"),
        (USERS_FILE, '["u3"]', "expected a JSON object"),
        (EVENTS_FILE, "e2,VIEW,u1,s1,i1,1764633600001,,,", "expected 10 fields"),
        (EVENTS_FILE, "e2,LIKE,u1,s1,i1,1764633600001,,,,", "unknown event type"),
        (EVENTS_FILE, "e2,VIEW,u1,s1,,1764633600001,,,,", "VIEW event without item_id"),
        (EVENTS_FILE, "e2,VIEW,u1,s1,i1,soon,,,,", "ts_ms is not an integer"),
        (EVENTS_FILE, "e2,PURCHASE,u1,s1,i1,1764633600001,cheap,1,,", "price is not a number"),
        (EVENTS_FILE, "e2,VIEW,u1,s1,i1,1,,,,", "is before"),
    ],
)
def test_a_malformed_line_names_file_and_line(
    shop: Path, tmp_path: Path, name: str, text: str, reason: str
) -> None:
    # Line 3: for events.csv the header is line 1, so line 2 holds a valid event for "is before" to compare to.
    broken = _break(shop, tmp_path, name, 3, text)
    read = {ITEMS_FILE: read_items, USERS_FILE: read_users, EVENTS_FILE: read_events}[name]
    with pytest.raises(DataFormatError, match=reason) as caught:
        for _ in read(broken):
            pass
    assert caught.value.path == broken / name
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{broken / name}:3: ")


def test_a_wrong_header_is_malformed(shop: Path, tmp_path: Path) -> None:
    broken = _break(shop, tmp_path, EVENTS_FILE, 1, ",".join(reversed(EVENT_COLUMNS)))
    with pytest.raises(DataFormatError, match=f"{EVENTS_FILE}:1: header must be"):
        next(read_events(broken))


def test_generate_shop_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate_shop(0, 10, SEED, tmp_path, progress=False)
    with pytest.raises(ValueError, match="non-negative"):
        generate_shop(10, 10, -1, tmp_path, progress=False)


def test_command_line_generates_a_shop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    end = DEFAULT_END_TS_MS - 86_400_000
    args = ["generate", "--users", "30", "--items", "20", "--seed", "3", "--out", str(tmp_path)]
    assert main([*args, "--end-ts-ms", str(end)]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta == read_meta(tmp_path)
    assert (meta["users"], meta["items"], meta["seed"], meta["end_ms"]) == (30, 20, 3, end)


def test_command_line_rejects_a_bad_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["generate", "--users", "0", "--items", "20", "--out", str(tmp_path)])
    assert caught.value.code == 2
    assert "--users" in capsys.readouterr().err


@pytest.mark.parametrize(("users", "items"), [(1, 1), (5, 3), (1, 500), (50, 2)])
def test_tiny_shops_are_complete(tmp_path: Path, users: int, items: int) -> None:
    meta = generate_shop(users, items, SEED, tmp_path, progress=False)
    assert sum(1 for _ in read_items(tmp_path)) == items
    assert sum(1 for _ in read_users(tmp_path)) == users
    assert sum(1 for _ in read_events(tmp_path)) == meta["events"] > 0
