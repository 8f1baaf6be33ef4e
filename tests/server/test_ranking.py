"""Re-ranking on the serving path: a bundle's ranker orders the answer, the rules hold whatever it prefers (they
filter before it, which gives the answer ranking everything first would), diversity comes after it, and the
server's feature matrix is the trainer's.

Rankers here are linear ONNX graphs over named features (`loadtest.harness.bundles.linear_ranker`), so each test
knows what order to expect.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from clients.client import AisleClient, ClientOptions
from feature_worker.catalog import Catalog
from loadtest.harness.bundles import add_ranker, one_hot, write_bundle
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import catalog_pb2, events_pb2, recommendations_pb2
from server.ranking.diversity import cap_per_group
from server.ranking.features import FEATURES, feature_matrix
from server.ranking.ranker import Ranker
from server.recommender import Query
from server.retrieval import bundles
from server.retrieval.bundles import BundleError
from server.retrieval.two_tower import TwoTowerRetriever
from tests.polling import wait_for_version
from tests.shop import BASE_TS, Shop, event, item, unique, view
from trainer.evaluation.serving import ServingPipeline

MIN = 60_000
N = 6  # items a0..a5 of one category and brand; a0 the most viewed by other customers, a5 the least


def catalog_items(shop: Shop) -> list[catalog_pb2.Item]:
    items = [
        item(shop.id(f"a{i}"), category=shop.category("shelf"), brand=f"{shop.prefix}-b") for i in range(N)
    ]
    # Each in a category of its own, for the diversity test.
    items += [
        item(shop.id(f"d{i}"), category=shop.category(f"d{i % 2}"), brand=f"{shop.prefix}-b")
        for i in range(4)
    ]
    items.append(
        item(shop.id("gone"), category=shop.category("shelf"), brand=f"{shop.prefix}-b", in_stock=False)
    )
    return items


def popularity_events(shop: Shop) -> list[events_pb2.Event]:
    """a_i viewed by N - i other customers, and the sold-out item by everyone."""
    events = []
    for i in range(N):
        for j in range(N - i):
            events.append(view(f"{shop.prefix}-fan{j}", shop.id(f"a{i}"), BASE_TS + i * MIN))
    for j in range(N):
        events.append(view(f"{shop.prefix}-fan{j}", shop.id("gone"), BASE_TS + 10 * MIN))
    return events


def shop_bundle(bundles_dir: Path, shop: Shop, version: str, ranker: dict[str, float] | None) -> None:
    """Towers where every item's embedding is its own one-hot (no learned preference), plus ``ranker``."""
    ids = [i.item_id for i in catalog_items(shop)]
    vectors = np.stack([one_hot(len(ids), j, 0.01) for j in range(len(ids))])
    paths = write_bundle(bundles_dir, version, ids, vectors, params={"temperature": 1.0})
    if ranker is not None:
        add_ranker(paths, ranker)


def serve(client: AisleClient, bundles_dir: Path, version: str, user: str) -> None:
    bundles.promote(bundles_dir, version)
    wait_for_version(client, user, version)


def test_the_bundles_ranker_orders_the_answer_and_rules_and_diversity_come_after(
    bundle_server: tuple[ServerProcess, Path],
) -> None:
    process, bundles_dir = bundle_server
    shop = Shop()
    user = unique("u")
    # The blend puts the popular a0 first; this ranker prefers the least popular (and the sold-out item most).
    shop_bundle(bundles_dir, shop, "blend", ranker=None)
    shop_bundle(bundles_dir, shop, "unpopular", ranker={"log_popularity": -1.0, "sources": 0.001})
    with AisleClient(ClientOptions(target=process.target)) as client:
        client.upsert_items(catalog_items(shop))
        client.track(popularity_events(shop))
        client.track([view(user, shop.id("d0"), BASE_TS + 20 * MIN)])
        prefix = shop.category("shelf")
        serve(client, bundles_dir, "blend", user)
        blended = [i.item_id for i in client.recommend(user, 3, category_prefix=prefix).items]
        assert blended[0] == shop.id("a0")

        serve(client, bundles_dir, "unpopular", user)
        answer = client.recommend(user, N, category_prefix=prefix, explain=True)
        ids = [i.item_id for i in answer.items]
        assert answer.model_version == "unpopular"
        assert ids == [shop.id(f"a{i}") for i in reversed(range(N))]  # least popular first
        assert shop.id("gone") not in ids  # the rules hold whatever the ranker prefers: never out of stock
        scores = [i.score for i in answer.items]
        assert scores == sorted(scores, reverse=True)
        assert all(i.reasons for i in answer.items)  # every ranked item still says why it is there

        # Diversity: one item per category at most; without a cap (-1) the category may fill the answer.
        one_each = client.recommend(user, 3, max_per_category=1).items
        categories = [client.get_item(i.item_id).category for i in one_each]
        assert len(categories) == len(set(categories))
        uncapped = client.recommend(user, N, category_prefix=prefix, max_per_category=-1).items
        assert len(uncapped) == N

        # Rollback swaps the towers and the ranker back together: the blend's order again.
        bundles.rollback(bundles_dir)
        wait_for_version(client, user, "blend")
        again = client.recommend(user, 3, category_prefix=prefix)
        assert again.model_version == "blend" and again.items[0].item_id == shop.id("a0")


def test_bad_max_per_category_is_invalid_argument(bundle_server: tuple[ServerProcess, Path]) -> None:
    process, _ = bundle_server
    channel = grpc.insecure_channel(process.target)
    from protos.aisle.v1 import recommendations_pb2_grpc

    stub = recommendations_pb2_grpc.RecommendationServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Recommend(recommendations_pb2.RecommendRequest(user_id="u", max_per_category=-2), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_per_category" in (raised.value.details() or "")
    channel.close()


def test_the_server_ranks_the_matrix_the_trainer_builds(bundle_server: tuple[ServerProcess, Path]) -> None:
    """Same events, same bundle: the scores the server answers are the ranker's scores of the matrix that
    `trainer`'s serving pipeline (`Recommender.retrieve` + `features`) builds in this process."""
    process, bundles_dir = bundle_server
    shop = Shop()
    user = unique("u")
    rng = np.random.default_rng(0)
    weights = {name: float(w) for name, w in zip(FEATURES, rng.normal(size=len(FEATURES)))}
    shop_bundle(bundles_dir, shop, "all-features", ranker=weights)
    events = [
        *popularity_events(shop),
        view(user, shop.id("a2"), BASE_TS + 30 * MIN),
        event(user, events_pb2.ADD_TO_CART, shop.id("d1"), BASE_TS + 31 * MIN),
        view(user, shop.id("a4"), BASE_TS + 32 * MIN),
    ]
    items = catalog_items(shop)
    with AisleClient(ClientOptions(target=process.target)) as client:
        client.upsert_items(items)
        client.track(events)
        serve(client, bundles_dir, "all-features", user)
        answer = client.recommend(user, 8, category_prefix=shop.category(""), max_per_category=-1)
    served = {i.item_id: i.score for i in answer.items}

    retriever = TwoTowerRetriever.load(bundles.bundle(bundles_dir, "all-features"))
    assert retriever.ranker is not None
    pipeline = ServingPipeline(items, learned=retriever)
    pipeline.update(events)
    pipeline.refresh()
    query = Query(user_id=user, k=8, category_prefix=shop.category(""), max_per_category=-1)
    stage = pipeline.recommender.retrieve(query, pipeline.store.read_request(user, ()), retriever)
    matrix = pipeline.recommender.features(stage)
    local = dict(zip(stage.index.names(stage.pool.positions), retriever.ranker.score(matrix).tolist()))
    assert served and set(served) <= set(local)
    for item_id, score in served.items():
        assert score == pytest.approx(local[item_id], rel=1e-5, abs=1e-5)


def test_a_ranker_needing_an_unknown_feature_is_refused(tmp_path: Path) -> None:
    shop = Shop()
    shop_bundle(tmp_path, shop, "v1", ranker={"log_popularity": 1.0})
    meta_path = bundles.bundle(tmp_path, "v1").meta
    meta_path.write_text(meta_path.read_text().replace('"log_popularity"', '"no_such_feature"', 1))
    with pytest.raises(BundleError, match="no_such_feature"):
        TwoTowerRetriever.load(bundles.bundle(tmp_path, "v1"))


def test_the_ranker_reads_its_features_by_name(tmp_path: Path) -> None:
    shop = Shop()
    shop_bundle(tmp_path, shop, "v1", ranker={"sources": 2.0, "log_popularity": -1.0})
    paths = bundles.bundle(tmp_path, "v1")
    ranker = Ranker(paths.ranker, {"features": ["sources", "log_popularity"]})
    matrix = np.zeros((2, len(FEATURES)), dtype=np.float32)
    matrix[0, FEATURES.index("sources")] = 3.0
    matrix[1, FEATURES.index("log_popularity")] = 1.0
    assert ranker.score(matrix).tolist() == [6.0, -1.0]


def test_diversity_caps_each_group_and_fills_a_short_answer_in_rank_order() -> None:
    ranked = np.array([0, 1, 2, 3, 4])
    groups = np.array([7, 7, 7, 8, -1])
    assert cap_per_group(ranked, groups, 4, 1).tolist() == [0, 3, 4, 1]
    assert cap_per_group(ranked, groups, 3, 2).tolist() == [0, 1, 3]
    assert cap_per_group(ranked, groups, 5, 0).tolist() == [0, 1, 2, 3, 4]


def test_features_are_zero_rows_for_no_candidates() -> None:
    from server.retrieval.candidates import CandidateSet
    from server.retrieval.item_index import ItemIndex
    from server.retrieval.toplists import TopLists

    pool = CandidateSet()
    pool.finish()
    index = ItemIndex(Catalog())
    assert feature_matrix(pool, index, TopLists(), None, [], 0).shape == (0, len(FEATURES))


def test_filtering_before_the_ranker_answers_as_ranking_everything_then_filtering(tmp_path: Path) -> None:
    """The rules refuse rows before the features and the ranker see them (a category filter refuses most), and
    the answer is the one that scoring every candidate and filtering afterwards gives."""
    shop = Shop()
    rng = np.random.default_rng(1)
    shop_bundle(
        tmp_path, shop, "v1", ranker={n: float(w) for n, w in zip(FEATURES, rng.normal(size=len(FEATURES)))}
    )
    retriever = TwoTowerRetriever.load(bundles.bundle(tmp_path, "v1"))
    ranker = retriever.ranker
    assert ranker is not None
    scored_rows: list[int] = []
    score_all = ranker.score

    def counted(matrix: np.ndarray) -> np.ndarray:
        scored_rows.append(len(matrix))
        return score_all(matrix)

    ranker.score = counted  # type: ignore[method-assign]
    user = unique("u")
    pipeline = ServingPipeline(catalog_items(shop), learned=retriever)
    pipeline.update(
        [
            *popularity_events(shop),
            view(user, shop.id("a2"), BASE_TS + 30 * MIN),
            view(user, shop.id("d1"), BASE_TS + 31 * MIN),
            view(user, shop.id("a4"), BASE_TS + 32 * MIN),
        ]
    )
    pipeline.refresh()
    recommender = pipeline.recommender
    for prefix in ("", shop.category("shelf"), shop.category("d0")):
        query = Query(user_id=user, k=4, category_prefix=prefix, max_per_category=-1, explain=False)
        features = pipeline.store.read_request(user, ())
        stage = recommender.retrieve(query, features, retriever)
        everything = score_all(recommender.features(stage)).astype(np.float64)
        allowed = stage.rules.allowed_rows(stage.index, stage.pool.positions)
        assert 0 < len(allowed) < len(stage.pool)  # the sold-out item at least is refused
        ids = stage.index.names(stage.pool.positions[allowed])
        expected = sorted(zip(everything[allowed].tolist(), ids), key=lambda pair: (-pair[0], pair[1]))[:4]
        scored_rows.clear()
        answer = recommender.recommend(query, features, retriever)
        assert scored_rows == [len(allowed)]
        ranked = [r for r in answer if not r.backfilled]
        assert [r.item_id for r in ranked] == [item_id for _, item_id in expected]
        np.testing.assert_allclose([r.score for r in ranked], [score for score, _ in expected], rtol=1e-6)


def test_the_long_tailed_sources_go_less_deep_when_a_bundle_is_served(tmp_path: Path) -> None:
    """Without a bundle the blend ranks and the popular, trending and brand lists go `TAILS` deep; with one,
    `TAILS_WITH_BUNDLE` (the learned sources find what the rest found)."""
    from server.retrieval.candidates import POPULAR
    from server.retrieval.sources import TAILS, TAILS_WITH_BUNDLE

    shop = Shop()
    items = [item(shop.id(f"p{i}"), category=shop.category("shelf")) for i in range(60)]
    events = [
        view(f"{shop.prefix}-fan{j}", shop.id(f"p{i}"), BASE_TS + i * MIN)
        for i in range(60)
        for j in range(2)
    ]
    ids = [i.item_id for i in items]
    write_bundle(
        tmp_path, "v1", ids, np.stack([one_hot(len(ids), j, 0.01) for j in range(len(ids))]), params={}
    )
    retriever = TwoTowerRetriever.load(bundles.bundle(tmp_path, "v1"))
    pipeline = ServingPipeline(items, learned=retriever)
    pipeline.update(events)
    pipeline.refresh()
    query = Query(user_id=unique("nobody"), k=10)
    features = pipeline.store.read_request(query.user_id, ())
    without = pipeline.recommender.retrieve(query, features, None)
    served = pipeline.recommender.retrieve(query, features, retriever)
    assert TAILS_WITH_BUNDLE.popular < TAILS.popular < len(items)
    assert int((without.pool.scores[POPULAR] > 0).sum()) == TAILS.popular
    assert int((served.pool.scores[POPULAR] > 0).sum()) == TAILS_WITH_BUNDLE.popular
