"""`python -m trainer train`: sequences as the fold builds them, a model that learns a known pattern, the export.

The data is tiny and synthetic with a known answer: in every user's sequence item ``i`` is followed by item
``i + 1``, so a trained model must put the next item in its top 3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from feature_worker.catalog import Catalog
from feature_worker.fold import ItemDeltas, fold
from feature_worker.state import UserState
from protos.aisle.v1 import catalog_pb2, events_pb2
from server.retrieval import bundles
from trainer.data.dataset import Dataset
from trainer.models.sequences import build_vocabulary, left_pad, training_windows, user_streams

torch = pytest.importorskip("torch")
faiss = pytest.importorskip("faiss")

from trainer.export import (
    ExportError,
    build_index,
    check_parity,
    export_user_tower,
    onnx_user_vectors,
    session,
    torch_user_vectors,
    write_bundle,
)
from trainer.models.two_tower import TowerConfig, TwoTower
from trainer.preparation import Prepared, prepare
from trainer.train import TrainParams, fit, rank_targets

N_ITEMS = 24
MAX_LEN = 8


def chain_shop(users: int = 160, seed: int = 0) -> Dataset:
    """Users walk the items in order (i -> i + 1, wrapping) from a random start, 5 to 9 steps each."""
    rng = np.random.default_rng(seed)
    items = {
        f"i{k}": catalog_pb2.Item(
            item_id=f"i{k}", category=f"c{k % 3}/l{k % 6}", brand=f"b{k % 4}", in_stock=True
        )
        for k in range(N_ITEMS)
    }
    events: list[events_pb2.Event] = []
    for u in range(users):
        start = int(rng.integers(N_ITEMS))
        for step in range(int(rng.integers(5, 10))):
            events.append(
                events_pb2.Event(
                    event_id=f"u{u}:{step}",
                    type=events_pb2.VIEW if step % 2 else events_pb2.PURCHASE,
                    user_id=f"u{u}",
                    item_id=f"i{(start + step) % N_ITEMS}",
                    ts_ms=1_700_000_000_000 + step * 60_000,
                )
            )
    events.sort(key=lambda e: e.ts_ms)
    return Dataset("chain", items, events)


@pytest.fixture(scope="module")
def trained() -> tuple[TwoTower, Prepared]:
    torch.manual_seed(0)
    dataset = chain_shop()
    data = prepare(dataset, "loo", MAX_LEN)
    model = TwoTower(data.vocab, TowerConfig(dim=32, max_len=MAX_LEN, blocks=1, dropout=0.1))
    params = TrainParams(epochs=10, batch_size=64, lr=5e-3, patience=10, progress=False)
    fit(model, data, params, log=lambda _: None)
    return model, data


def test_sequences_match_the_folds_recent() -> None:
    """The user stream is exactly `UserState.recent` after folding the same events (types, order, ties)."""
    items = {f"i{k}": catalog_pb2.Item(item_id=f"i{k}", in_stock=True) for k in range(5)}
    raw = [
        (events_pb2.VIEW, "i1", 1000),
        (events_pb2.SEARCH, "", 1500),
        (events_pb2.ADD_TO_CART, "i2", 2000),
        (events_pb2.VIEW, "unknown", 2000),
        (events_pb2.PURCHASE, "i2", 2000),
        (events_pb2.IMPRESSION, "i3", 2500),
        (events_pb2.REMOVE_FROM_CART, "i1", 3000),
        (events_pb2.CLICK, "i4", 3000),
    ]
    events = [
        events_pb2.Event(
            event_id=f"e{n}", type=t, user_id="u", item_id=i, ts_ms=ts, query="q" if not i else ""
        )
        for n, (t, i, ts) in enumerate(raw)
    ]
    state = UserState()
    catalog = Catalog()
    for event in events:
        fold(state, event, catalog, ItemDeltas())
    vocab = build_vocabulary(items, events)
    # "unknown" is not in the catalog but appears in events: it gets an index (served bundles know it too).
    stream = user_streams(events, vocab)["u"]
    expected = [(etype, vocab.encode(item)) for _, etype, item in state.recent]
    assert list(zip(stream.types.tolist(), stream.items.tolist(), strict=True)) == expected
    # Only new-item interactions are targets: the purchase of i2 after its cart line is not, nor the removal.
    assert stream.learn.tolist() == [True, True, True, False, False, True]


def test_unknown_items_are_dropped_and_rows_left_padded() -> None:
    items = {"a": catalog_pb2.Item(item_id="a"), "b": catalog_pb2.Item(item_id="b")}
    vocab = build_vocabulary(items, [])
    events = [
        events_pb2.Event(event_id=f"e{n}", type=events_pb2.VIEW, user_id="u", item_id=i, ts_ms=n)
        for n, i in enumerate(["a", "zzz", "b"])
    ]
    stream = user_streams(events, vocab)["u"]
    assert stream.items.tolist() == [1, 2]
    assert left_pad([stream.items], 4).tolist() == [[0, 0, 1, 2]]
    assert left_pad([np.arange(1, 7)], 4).tolist() == [[3, 4, 5, 6]]


def test_long_streams_are_cut_into_windows() -> None:
    items = {f"i{k}": catalog_pb2.Item(item_id=f"i{k}") for k in range(30)}
    vocab = build_vocabulary(items, [])
    events = [
        events_pb2.Event(event_id=f"e{n}", type=events_pb2.VIEW, user_id="u", item_id=f"i{n}", ts_ms=n)
        for n in range(20)
    ]
    windows = training_windows(user_streams(events, vocab).values(), max_len=8)
    # 19 targets in windows of at most 8 inputs each, every target exactly once.
    assert sorted(len(w) for w in windows.items) == [3, 8, 8]
    assert sorted(np.concatenate(windows.targets).tolist()) == list(range(2, 21))
    for inputs, targets in zip(windows.items, windows.targets, strict=True):
        assert (targets[:-1] == inputs[1:]).all()


def test_the_model_learns_the_next_item(trained: tuple[TwoTower, Prepared]) -> None:
    model, data = trained
    vocab = data.vocab
    hits = 0
    for k in range(N_ITEMS):
        seq = [vocab.encode(f"i{(k + j) % N_ITEMS}") for j in range(3)]
        items = left_pad([np.asarray(seq)], MAX_LEN)
        types = (items > 0).astype(np.int64) * events_pb2.VIEW
        with torch.no_grad():
            user = model.user_vectors(torch.from_numpy(items), torch.from_numpy(types))
            scores = (user @ model.item_vectors()[1:].T)[0]
        top3 = set((torch.topk(scores, 3).indices + 1).tolist())
        hits += vocab.encode(f"i{(k + 3) % N_ITEMS}") in top3
    assert hits >= N_ITEMS - 2


def test_validation_ranks_the_target_first(trained: tuple[TwoTower, Prepared]) -> None:
    model, data = trained
    ranks = rank_targets(
        model,
        data.valid_items,
        data.valid_types,
        data.valid_targets,
        data.valid_history,
    )
    assert (ranks == 1).mean() > 0.8


def test_onnx_matches_pytorch_on_real_and_edge_sequences(
    trained: tuple[TwoTower, Prepared], tmp_path: Path
) -> None:
    model, data = trained
    path = tmp_path / bundles.USER_TOWER
    export_user_tower(model, path, MAX_LEN)
    items = np.concatenate([data.valid_items[:20], np.zeros((1, MAX_LEN), np.int64)])
    types = np.concatenate([data.valid_types[:20], np.zeros((1, MAX_LEN), np.int64)])
    assert check_parity(model, path, items, types) < 1e-4
    # dynamic batch: one row alone gives the same vector as within the batch
    one = onnx_user_vectors(session(path), items[3:4], types[3:4])
    np.testing.assert_allclose(one, torch_user_vectors(model, items[3:4], types[3:4]), atol=1e-5)
    # dynamic length: the real interactions alone (as the server feeds them) give the padded row's vector
    real = int((items[3] > 0).sum())
    assert 0 < real < MAX_LEN
    alone = onnx_user_vectors(session(path), items[3:4, -real:], types[3:4, -real:])
    np.testing.assert_allclose(alone, one, atol=1e-5)


def test_parity_failure_is_loud(trained: tuple[TwoTower, Prepared], tmp_path: Path) -> None:
    model, data = trained
    path = tmp_path / bundles.USER_TOWER
    export_user_tower(model, path, MAX_LEN)
    with torch.no_grad():
        model.user_tower.norm.bias.add_(1.0)  # PyTorch now disagrees with the exported graph
    try:
        with pytest.raises(ExportError, match="differ"):
            check_parity(model, path, data.valid_items[:5], data.valid_types[:5])
    finally:
        with torch.no_grad():
            model.user_tower.norm.bias.sub_(1.0)


def test_flat_index_is_exact_and_hnsw_recall_is_measured() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((600, 16)).astype(np.float32)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    _, meta = build_index(vectors, queries, hnsw_above=1000, log=lambda _: None)
    assert meta["kind"] == "IndexFlatIP" and meta["recall_at_100"] == 1.0
    hnsw, meta = build_index(vectors, queries, hnsw_above=100, log=lambda _: None)
    assert meta["kind"] == "IndexHNSWFlat"
    assert meta["recall_at_100"] >= 0.95 and meta["ef_search"] >= 100
    assert hnsw.metric_type == faiss.METRIC_INNER_PRODUCT and hnsw.hnsw.efSearch == meta["ef_search"]


def test_hnsw_that_misses_the_target_recall_falls_back_to_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import export

    monkeypatch.setattr(export, "TARGET_RECALL", 1.01)  # unreachable
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    index, meta = build_index(vectors, vectors[:20], hnsw_above=100, log=lambda _: None)
    assert meta["kind"] == "IndexFlatIP" and meta["recall_at_100"] == 1.0
    assert meta["hnsw_rejected"]["ef_search"] == export.EF_SEARCH_TRIED[-1]
    assert isinstance(index, faiss.IndexFlatIP)


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Vectors around a few dozen centres, as learned item embeddings are (an IVF index needs some structure)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim)) * 3
    return (centres[rng.integers(0, 40, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def test_large_catalogues_get_an_inverted_file_that_reaches_its_recall() -> None:
    from trainer import export

    vectors, queries = _clustered(3000, 16, 2), _clustered(200, 16, 3)
    index, meta = build_index(vectors, queries, hnsw_above=10**9, log=lambda _: None, ivf_above=1000)
    assert meta["kind"] == "IndexIVFFlat" and isinstance(index, faiss.IndexIVFFlat)
    assert meta["recall_at_100"] >= export.IVF_TARGET_RECALL and index.nprobe == meta["nprobe"]
    assert meta["nlist"] == round(3000**0.5) and meta["nprobe"] in export.NPROBE_TRIED
    _, small = build_index(vectors[:900], queries, hnsw_above=10**9, log=lambda _: None, ivf_above=1000)
    assert small["kind"] == "IndexFlatIP"  # at or below the threshold: exact


def test_an_inverted_file_that_misses_its_recall_falls_back_to_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import export

    monkeypatch.setattr(export, "IVF_TARGET_RECALL", 1.01)  # unreachable
    index, meta = build_index(
        _clustered(2000, 8, 4), _clustered(50, 8, 5), 10**9, lambda _: None, ivf_above=100
    )
    assert isinstance(index, faiss.IndexFlatIP) and meta["kind"] == "IndexFlatIP"
    rejected = meta["ivf_rejected"]  # every probe count up to the number of lists was tried
    assert rejected["nprobe"] == max(p for p in export.NPROBE_TRIED if p <= rejected["nlist"])
    assert rejected["recall_at_100"] < 1.01 and meta["recall_at_100"] == 1.0


def test_the_server_probes_the_lists_the_export_chose_and_feeds_unpadded_sequences(
    trained: tuple[TwoTower, Prepared], tmp_path: Path
) -> None:
    from server.retrieval.two_tower import TwoTowerRetriever

    model, data = trained
    paths = write_bundle(model, data, tmp_path, version="ivf", ivf_above=10, log=lambda _: None)
    meta = paths.read_meta()["index"]
    assert meta["kind"] == "IndexIVFFlat"
    retriever = TwoTowerRetriever.load(paths)
    assert isinstance(retriever.index, faiss.IndexIVFFlat)  # faiss reads the index back as its own class
    assert retriever.index.nprobe == meta["nprobe"]
    vector = retriever.encode([(0, 1, retriever.item_ids[0])], ())
    assert vector is not None and len(retriever.search(vector, 5, ())) == 5
    # The tower takes any length: the server feeds a user's real interactions alone, and gets the padded vector.
    assert retriever.dynamic_length
    recent = [(i, 1 + i % 3, item) for i, item in enumerate(retriever.item_ids[:7])]
    alone = retriever.encode(recent, (retriever.item_ids[9],))
    assert alone is not None
    alone = alone.copy()
    retriever.dynamic_length = False
    padded = retriever.encode(recent, (retriever.item_ids[9],))
    assert padded is not None
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_write_bundle_is_complete_and_never_overwrites(
    trained: tuple[TwoTower, Prepared], tmp_path: Path
) -> None:
    model, data = trained
    paths = write_bundle(model, data, tmp_path, version="v1", hnsw_above=0, log=lambda _: None)
    paths.check()
    assert bundles.versions(tmp_path) == ["v1"]
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]  # no temporary directory left behind
    meta = paths.read_meta()
    assert meta["index"]["kind"] == "IndexHNSWFlat" and 0.0 < meta["index"]["recall_at_100"] <= 1.0
    assert meta["max_len"] == MAX_LEN and meta["dim"] == 32
    assert paths.read_item_ids() == list(data.vocab.item_ids)
    index = faiss.read_index(str(paths.item_index))
    assert index.ntotal == len(paths.read_item_ids())
    with pytest.raises(ExportError, match="exists"):
        write_bundle(model, data, tmp_path, version="v1", log=lambda _: None)


def test_cli_trains_a_generated_shop_and_promotes(tmp_path: Path) -> None:
    from trainer.__main__ import main
    from trainer.generate import generate_shop

    shop = tmp_path / "shop"
    generate_shop(300, 200, 1, shop, progress=False)
    out = tmp_path / "bundles"
    argv = [
        "train", "--data", str(shop), "--format", "generated", "--protocol", "none", "--out", str(out),
        "--version", "g1", "--promote", "--epochs", "2", "--dim", "16", "--max-len", "10",
        "--negatives", "64", "--no-progress", "--threads", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    assert bundles.current(out) == "g1"
    meta = json.loads((out / "g1" / bundles.META).read_text())
    assert meta["data"]["dataset"] == "generated" and meta["data"]["protocol"] == "none"
    assert meta["params"]["negatives"] == 64 and meta["metrics"]["split"] == "valid"
    assert {"NDCG@10", "HR@10"} <= set(meta["metrics"]) and meta["train_seconds"] > 0
    assert meta["index"]["kind"] == "IndexFlatIP" and meta["index"]["recall_at_100"] == 1.0
