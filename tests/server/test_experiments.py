"""Experiments: sticky assignment (test vectors), layers, holdout, variants as serving configurations, the admin
service, interleaving and exposure logging, against a real server over a real channel."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    experiments_pb2,
    experiments_pb2_grpc,
    recommendations_pb2,
    recommendations_pb2_grpc,
)
from server.experiments.assignment import Assigner, draw, unit_of
from server.experiments.exposures import read_journal
from server.experiments.interleaving import team_draft
from server.experiments.model import pipeline_of
from tests.polling import wait_for
from tests.shop import BASE_TS, Shop, item, view
from tests.statuses import field_violations

E = experiments_pb2


def ab(
    name: str,
    *variants: tuple[str, float, E.ServingConfig],
    layer: str = "",
    start: float = 0.0,
    traffic: float = 1.0,
    state: E.ExperimentState.ValueType = E.RUNNING,
) -> E.Experiment:
    return E.Experiment(
        name=name,
        layer=layer,
        traffic_start=start,
        traffic=traffic,
        state=state,
        variants=[E.Variant(name=n, weight=w, config=c) for n, w, c in variants],
    )


# -- assignment (pure) ------------------------------------------------------------------------------------------
def test_draw_test_vectors() -> None:
    """Pinned values: an assignment must not change across processes, restarts, machines or releases."""
    assert draw("holdout", "u1") == pytest.approx(0.0038834044183316393, abs=1e-15)
    assert draw("layer:default", "u1") == pytest.approx(0.9813284815619996, abs=1e-15)
    assert draw("checkout-test", "u1") == pytest.approx(0.6316903936162982, abs=1e-15)
    assert draw("checkout-test", "session:s-42") == pytest.approx(0.03839908846127581, abs=1e-15)
    assert draw("layer:ranking", "alice") == pytest.approx(0.7931639852243562, abs=1e-15)
    assert unit_of("u1", "s1") == "u1" and unit_of("", "s1") == "session:s1" and unit_of("", "") == ""


def test_shares_layers_and_holdout() -> None:
    spec = E.ExperimentsFile(
        holdout=0.1,
        experiments=[
            ab("a", ("control", 1, E.ServingConfig()), ("treat", 3, E.ServingConfig(use_ranker=False))),
            ab(
                "b",
                ("x", 1, E.ServingConfig()),
                ("y", 1, E.ServingConfig(max_per_category=2)),
                layer="ui",
                traffic=0.5,
            ),
        ],
    )
    assigner = Assigner(spec)
    counts: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    n = 20_000
    for i in range(n):
        a = assigner.assign(f"user-{i}")
        assert a == assigner.assign(f"user-{i}")  # sticky
        counts[a.label] += 1
        got = dict(a.experiments)
        if "a" in got:
            pairs[(got["a"], got.get("b", "-"))] += 1
    assert counts["holdout"] == pytest.approx(0.1 * n, rel=0.08)
    in_a = n - counts["holdout"]
    assert sum(v for (x, _), v in pairs.items() if x == "treat") == pytest.approx(0.75 * in_a, rel=0.03)
    # Layer "ui" takes half the users, independently of the variant in layer "default".
    for variant in ("control", "treat"):
        total = sum(v for (x, _), v in pairs.items() if x == variant)
        in_b = sum(v for (x, y), v in pairs.items() if x == variant and y != "-")
        assert in_b / total == pytest.approx(0.5, abs=0.03)
    both = assigner.assign(
        next(f"user-{i}" for i in range(n) if len(assigner.assign(f"user-{i}").experiments) == 2)
    )
    assert both.label.count(";") == 1 and "/" in both.label
    assert assigner.assign("").label == "default"


def test_team_draft_is_fair_and_complete() -> None:
    a, b = ["1", "2", "3", "4"], ["3", "5", "1", "6"]
    ids, teams = team_draft(a, b, 6, random.Random(7))
    assert len(ids) == len(set(ids)) == 6 and set(ids) == {"1", "2", "3", "4", "5", "6"}
    assert abs(teams.count(0) - teams.count(1)) <= 1 or len(set(a) | set(b)) < 6
    for picked, team in zip(ids, teams):
        assert picked in (a, b)[team]
    assert team_draft(a, b, 6, random.Random(7)) == (ids, teams)  # seeded: reproducible
    assert team_draft(["1"], [], 3, random.Random(1)) == (["1"], [0])


def test_pipeline_of_unknown_defaults() -> None:
    assert pipeline_of(E.ServingConfig()) is None
    p = pipeline_of(E.ServingConfig(sources=["popular"], blend_weights={"popular": 2.0}, use_ranker=False))
    assert p is not None and p.sources is not None and p.use_ranker is False and p.weights is not None


# -- a real server ----------------------------------------------------------------------------------------------
#: One running experiment, "sources": every source against popular items only, half the traffic each.
SOURCES_RUNNING = {
    "experiments": [
        {
            "name": "sources",
            "state": "RUNNING",
            "traffic": 1.0,
            "variants": [
                {"name": "everything", "weight": 1},
                {"name": "popular_only", "weight": 1, "config": {"sources": ["popular"]}},
            ],
        }
    ]
}


@pytest.fixture
def exp_server(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "server"
    data.mkdir()
    (data / "experiments.json").write_text(json.dumps(SOURCES_RUNNING))
    process = ServerProcess(
        data,
        args=["--lists-refresh-s", "0"],
        env={"AISLE_EXPERIMENTS_POLL_S": "0.05", "AISLE_ENCRYPTION": "off"},
    ).start()
    yield process
    process.stop()


def wait_for_answer(
    recs: recommendations_pb2_grpc.RecommendationServiceStub,
    user_id: str,
    condition: Callable[[recommendations_pb2.RecommendResponse], bool],
    what: str,
) -> None:
    """Ask for `user_id`'s recommendations until the answer meets `condition` (the server picks up a changed
    experiments file or a promoted bundle on its own schedule)."""
    wait_for(
        lambda: condition(recs.Recommend(recommendations_pb2.RecommendRequest(user_id=user_id), timeout=10)),
        what,
        timeout_s=30,
        interval_s=0.05,
    )


def stubs(
    channel: grpc.Channel,
) -> tuple[
    recommendations_pb2_grpc.RecommendationServiceStub,
    experiments_pb2_grpc.ExperimentServiceStub,
    catalog_pb2_grpc.CatalogServiceStub,
    events_pb2_grpc.EventServiceStub,
]:
    return (
        recommendations_pb2_grpc.RecommendationServiceStub(channel),
        experiments_pb2_grpc.ExperimentServiceStub(channel),
        catalog_pb2_grpc.CatalogServiceStub(channel),
        events_pb2_grpc.EventServiceStub(channel),
    )


def seed_shop(channel: grpc.Channel) -> Shop:
    shop = Shop()
    _, _, catalog, events = stubs(channel)
    items = [item(shop.id(f"p{i}"), category=shop.category("c")) for i in range(8)]
    catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=items), timeout=10)
    # p0 and p1 viewed together often: co-visitation proposes p1 next to p0.
    evs = []
    for u in range(6):
        evs += [
            view(f"{shop.prefix}-v{u}", shop.id("p0"), BASE_TS + u),
            view(f"{shop.prefix}-v{u}", shop.id("p1"), BASE_TS + u + 1),
        ]
    events.Track(events_pb2.TrackRequest(events=evs), timeout=10)
    return shop


def test_variants_serve_their_configuration_and_log_exposures(exp_server: ServerProcess) -> None:
    with exp_server.channel() as channel:
        recs, admin, _, events = stubs(channel)
        shop = seed_shop(channel)
        by_variant: dict[str, list[str]] = {}
        answers = []
        for i in range(40):
            user = f"{shop.prefix}-u{i}"
            events.Track(events_pb2.TrackRequest(events=[view(user, shop.id("p0"))]), timeout=10)
            answer = recs.Recommend(
                recommendations_pb2.RecommendRequest(user_id=user, k=3, explain=True),
                timeout=10,
            )
            again = recs.Recommend(recommendations_pb2.RecommendRequest(user_id=user, k=3), timeout=10)
            assert answer.variant == again.variant  # sticky
            assert answer.recommendation_id and answer.recommendation_id != again.recommendation_id
            expected = "sources/everything" if draw("sources", user) < 0.5 else "sources/popular_only"
            assert answer.variant == expected
            reasons = [r for i in answer.items for r in i.reasons]
            by_variant.setdefault(answer.variant, []).extend(reasons)
            answers.extend([answer, again])
        # Only the variant with every source explains an item by co-visitation.
        assert any(r.startswith("co_viewed_with:") for r in by_variant["sources/everything"])
        assert not any(r.startswith("co_viewed_with:") for r in by_variant["sources/popular_only"])
        # Without a user: the session decides, consistently.
        s1 = recs.Recommend(
            recommendations_pb2.RecommendRequest(context_item_id=shop.id("p0"), session_id="s-42"),
            timeout=10,
        )
        assert s1.variant == (
            "sources/everything" if draw("sources", "session:s-42") < 0.5 else "sources/popular_only"
        )
        anonymous = recs.Recommend(
            recommendations_pb2.RecommendRequest(context_item_id=shop.id("p0")), timeout=10
        )
        assert anonymous.variant == "default"

        listed = admin.ListExperiments(E.ListExperimentsRequest(), timeout=10)
        assert [e.name for e in listed.experiments] == ["sources"]
        admin.StopExperiment(E.StopExperimentRequest(name="sources"), timeout=10)
        stopped = recs.Recommend(
            recommendations_pb2.RecommendRequest(user_id=f"{shop.prefix}-u0"), timeout=10
        )
        assert stopped.variant == "default"

    exp_server.stop()  # drains the exposure queue into the journal
    logged = read_journal(exp_server.data_dir / "exposures.bin")
    by_id = {e.recommendation_id: e for e in logged}
    for answer in answers:
        exposure = by_id[answer.recommendation_id]
        assert exposure.variant == answer.variant
        assert list(exposure.item_ids) == [i.item_id for i in answer.items]
        assert exposure.experiments["sources"] == answer.variant.split("/")[1]
    assert len(logged) == len(by_id)  # once each


def test_admin_service_create_start_stop_and_bad_input(exp_server: ServerProcess) -> None:
    with exp_server.channel() as channel:
        recs, admin, _, _ = stubs(channel)
        with pytest.raises(grpc.RpcError) as bad:
            admin.CreateExperiment(
                E.CreateExperimentRequest(
                    experiment=ab("bad name!", ("a", 1, E.ServingConfig(sources=["nope"])))
                ),
                timeout=10,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert {
            "experiment.name",
            "experiment.variants",
            "experiment.variants[0].config.sources[0]",
        } <= set(field_violations(bad.value))

        # The layer "default" is taken whole by the running experiment "sources": a second one cannot start there.
        draft = ab(
            "ranker",
            ("on", 1, E.ServingConfig()),
            ("off", 1, E.ServingConfig(use_ranker=False)),
            state=E.DRAFT,
        )
        created = admin.CreateExperiment(E.CreateExperimentRequest(experiment=draft), timeout=10).experiment
        assert created.state == E.DRAFT
        with pytest.raises(grpc.RpcError) as taken:
            admin.StartExperiment(E.StartExperimentRequest(name="ranker"), timeout=10)
        assert taken.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as exists:
            admin.CreateExperiment(E.CreateExperimentRequest(experiment=draft), timeout=10)
        assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.RpcError) as missing:
            admin.StartExperiment(E.StartExperimentRequest(name="nothing"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        # In another layer it runs beside "sources"; the answer names both.
        other = ab(
            "ui",
            ("tight", 1, E.ServingConfig(max_per_category=1)),
            ("loose", 1, E.ServingConfig()),
            layer="ui",
            state=E.DRAFT,
        )
        admin.CreateExperiment(E.CreateExperimentRequest(experiment=other), timeout=10)
        started = admin.StartExperiment(E.StartExperimentRequest(name="ui"), timeout=10).experiment
        assert started.state == E.RUNNING and started.started_ms > 0
        variant = recs.Recommend(
            recommendations_pb2.RecommendRequest(user_id="someone", k=2), timeout=10
        ).variant
        assert variant.startswith("sources/") and ";ui/" in variant

        # The file is the source of truth: the service wrote it, and an edit by hand is picked up.
        path = exp_server.data_dir / "experiments.json"
        spec = json.loads(path.read_text())
        assert {e["name"] for e in spec["experiments"]} == {"sources", "ranker", "ui"}
        for e in spec["experiments"]:
            e["state"] = "STOPPED"
        path.write_text(json.dumps(spec))
        wait_for_answer(recs, "someone", lambda a: a.variant == "default", "the stopped experiments")
        with pytest.raises(grpc.RpcError) as restart:
            admin.StartExperiment(E.StartExperimentRequest(name="ui"), timeout=10)
        assert restart.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_interleaving_mixes_two_variants_with_teams(exp_server: ServerProcess) -> None:
    with exp_server.channel() as channel:
        recs, admin, _, events = stubs(channel)
        shop = seed_shop(channel)
        admin.StopExperiment(E.StopExperimentRequest(name="sources"), timeout=10)
        experiment = ab(
            "mix", ("blend", 0, E.ServingConfig()), ("popular", 0, E.ServingConfig(sources=["popular"]))
        )
        experiment.mode = E.INTERLEAVING
        admin.CreateExperiment(E.CreateExperimentRequest(experiment=experiment), timeout=10)
        user = f"{shop.prefix}-shopper"
        events.Track(events_pb2.TrackRequest(events=[view(user, shop.id("p0"))]), timeout=10)
        answer = recs.Recommend(recommendations_pb2.RecommendRequest(user_id=user, k=4), timeout=10)
        assert answer.variant == "mix/interleaved" and len(answer.items) == 4
    exp_server.stop()
    exposure = {e.recommendation_id: e for e in read_journal(exp_server.data_dir / "exposures.bin")}[
        answer.recommendation_id
    ]
    assert list(exposure.item_ids) == [i.item_id for i in answer.items]
    assert set(exposure.teams) <= {"blend", "popular"} and len(exposure.teams) == 4
    assert exposure.experiments["mix"] == "interleaved"


def test_a_variant_serves_another_bundle_version_beside_the_promoted_one(
    bundle_server: tuple[ServerProcess, Path],
) -> None:
    """The registry keeps a pinned version loaded beside the promoted one; each variant's answers say which."""
    import numpy as np

    from loadtest.harness.bundles import write_bundle
    from server.retrieval import bundles

    process, bundles_dir = bundle_server
    shop = Shop()
    ids = [shop.id(f"p{i}") for i in range(6)]
    for version in ("v1", "v2"):
        write_bundle(bundles_dir, version, ids, np.eye(6, dtype=np.float32))
    bundles.promote(bundles_dir, "v2")
    with process.channel() as channel:
        recs, admin, catalog, _ = stubs(channel)
        catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=[item(i) for i in ids]), timeout=10)
        wait_for_answer(recs, "x", lambda a: a.model_version == "v2", "v2 to be served")
        missing = ab(
            "old-missing",
            ("old", 1, E.ServingConfig(bundle_version="v9")),
            ("new", 1, E.ServingConfig()),
            state=E.DRAFT,
        )
        admin.CreateExperiment(E.CreateExperimentRequest(experiment=missing), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            admin.StartExperiment(E.StartExperimentRequest(name="old-missing"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "v9" in (
            refused.value.details() or ""
        )
        admin.StopExperiment(E.StopExperimentRequest(name="old-missing"), timeout=10)
        experiment = ab(
            "bundles", ("old", 1, E.ServingConfig(bundle_version="v1")), ("new", 1, E.ServingConfig())
        )
        admin.CreateExperiment(E.CreateExperimentRequest(experiment=experiment), timeout=10)
        seen = set()
        for i in range(30):
            answer = recs.Recommend(recommendations_pb2.RecommendRequest(user_id=f"b{i}", k=3), timeout=10)
            expected = "v1" if answer.variant == "bundles/old" else "v2"
            assert answer.model_version == expected
            seen.add(answer.variant)
        assert seen == {"bundles/old", "bundles/new"}


def test_forgetting_a_customer_removes_their_exposures_from_the_lake(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from feature_worker.lake.maintenance import forget_user
    from feature_worker.lake.writer import Lake, table_uri
    from server.experiments.lake import EXPOSURES, ExposureTable

    lake_dir = tmp_path / "lake"
    table = ExposureTable(lake_dir)
    table.append(
        [
            E.Exposure(
                recommendation_id=f"r{i}",
                user_id=user,
                ts_ms=BASE_TS + i,
                variant="default",
                item_ids=["a", "b"],
            )
            for i, user in enumerate(["gone", "kept", "gone"])
        ]
    )
    forget_user(Lake(lake_dir), "gone")
    left = DeltaTable(table_uri(lake_dir, EXPOSURES)).to_pyarrow_table().to_pylist()
    assert [row["user_id"] for row in left] == ["kept"]


def test_maintenance_compacts_and_vacuums_the_exposures_too(tmp_path: Path) -> None:
    from feature_worker.lake.maintenance import optimize
    from feature_worker.lake.writer import Lake
    from server.experiments.lake import EXPOSURES, ExposureTable

    lake_dir = tmp_path / "lake"
    table = ExposureTable(lake_dir)
    for i in range(3):  # three small files, as three flushes write them
        table.append(
            [
                E.Exposure(
                    recommendation_id=f"r{i}",
                    user_id="u",
                    ts_ms=BASE_TS + i,
                    variant="default",
                    model_version="m",
                )
            ]
        )
    report = optimize(Lake(lake_dir), retention_hours=0)
    assert report[EXPOSURES]["files_removed"] == 3 and report[EXPOSURES]["files_vacuumed"] >= 3
