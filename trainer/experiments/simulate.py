"""``python -m trainer simulate-experiment``: simulated customers against a live server with two variants, then
the experiment report on what the lake recorded; or, offline, the report's false-positive rate and power.

Live (default): starts an embedded server with a lake under ``--out`` (or uses ``--target`` with ``--lake``),
loads a catalog of ``--categories`` x ``--items-per-category`` items, creates and starts the experiment
``--name`` through ExperimentService with the variants "control" (the default configuration) and "treatment"
(``--treatment``: a ServingConfig as JSON; ``same`` for an A/A test), replays each customer's pre-period (views
of items they like, a few clicks and purchases, days before), then ``--sessions`` sessions each: a Recommend, the
customer's clicks, carts and purchases on what was shown (`customers.Customers`), tracked with the answer's
recommendation id. It then stops the server (flushing the lake) and runs the report.

``--aa-runs N`` instead runs N offline A/A experiments (`customers.offline_units`, seeded) and prints the share
in which each test called a difference (the false-positive rate, to compare with alpha); ``--power`` prints the
users per variant that detect ``--lift`` (relative, on conversion) at 80 % power (statsmodels) and checks it by
simulation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from clients.client import AisleClient, ClientOptions
from protos.aisle.v1 import catalog_pb2, events_pb2, experiments_pb2, experiments_pb2_grpc
from trainer.experiments.customers import Customers, offline_units
from trainer.experiments.report import _clean as clean
from trainer.experiments.report import analyze, build_report, markdown
from trainer.experiments.stats import compare, cuped

DAY_MS = 86_400_000
BATCH = 500


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--users", type=int, default=1000, help="customers (live) or customers per variant (offline)"
    )
    parser.add_argument(
        "--sessions", type=int, default=3, help="Recommend calls per customer in the experiment"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--categories", type=int, default=8)
    parser.add_argument("--items-per-category", type=int, default=25)
    parser.add_argument(
        "--control",
        default='{"sources": ["popular"]}',
        dest="control_config",
        help="the control's ServingConfig as JSON (default: popular items only, not personal)",
    )
    parser.add_argument(
        "--treatment",
        default="{}",
        help="the treatment's ServingConfig as JSON (default: the server's default, personal), or "
        "'same' (the control's: an A/A test)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="team-draft interleaving of control and treatment instead of an A/B split",
    )
    parser.add_argument(
        "--lift",
        type=float,
        default=0.0,
        help="a known relative lift of the treatment's purchase probability (0: none)",
    )
    parser.add_argument("--name", default="", help="experiment name (default: a fresh one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--target", help="a running server (host:port) instead of starting one; needs --lake")
    parser.add_argument("--lake", type=Path, help="that server's lake (AISLE_LAKE_DIR)")
    parser.add_argument("--out", type=Path, default=Path(".simulate"), help="server data, lake and report")
    parser.add_argument("--aa-runs", type=int, default=0, help="offline: this many A/A experiments")
    parser.add_argument("--power", action="store_true", help="offline: users needed for --lift at 80%% power")


# -- live -----------------------------------------------------------------------------------------------------------
def _catalog(
    prefix: str, categories: int, per_category: int, rng: np.random.Generator
) -> list[catalog_pb2.Item]:
    return [
        catalog_pb2.Item(
            item_id=f"{prefix}-c{c}-i{j}",
            title=f"item {c}/{j}",
            category=f"sim/c{c}",
            brand=f"{prefix}-b{c}-{j % 3}",
            price=float(np.round(rng.uniform(5, 60), 2)),
            in_stock=True,
        )
        for c in range(categories)
        for j in range(per_category)
    ]


def _event(
    etype: events_pb2.EventType.ValueType, user: str, item: str, ts_ms: int, **fields: Any
) -> events_pb2.Event:
    return events_pb2.Event(
        event_id=uuid.uuid4().hex,
        type=etype,
        user_id=user,
        item_id=item,
        ts_ms=ts_ms,
        **fields,
    )


def live(args: argparse.Namespace, target: str, lake: Path) -> dict[str, Any]:
    """Drive the server at `target`; returns counts of what the customers did."""
    rng = np.random.default_rng(args.seed)
    prefix = f"sim{args.seed}"
    name = args.name or f"sim-{uuid.uuid4().hex[:8]}"
    items = _catalog(prefix, args.categories, args.items_per_category, rng)
    category_of = {item.item_id: int(item.category.rsplit("c", 1)[1]) for item in items}
    price_of = {item.item_id: item.price for item in items}
    by_category = [[i.item_id for i in items if category_of[i.item_id] == c] for c in range(args.categories)]
    customers = Customers.draw(args.users, args.categories, rng)
    control = json_format.Parse(args.control_config, experiments_pb2.ServingConfig())
    treatment = json_format.Parse(
        args.control_config if args.treatment == "same" else args.treatment, experiments_pb2.ServingConfig()
    )
    experiment = experiments_pb2.Experiment(
        name=name,
        traffic=1.0,
        state=experiments_pb2.RUNNING,
        layer=f"sim-{name}",
        mode=experiments_pb2.INTERLEAVING if args.interleave else experiments_pb2.AB,
        variants=[
            experiments_pb2.Variant(name="control", weight=1, config=control),
            experiments_pb2.Variant(name="treatment", weight=1, config=treatment),
        ],
    )
    done = {"answers": 0, "clicks": 0, "carts": 0, "purchases": 0}
    with AisleClient(ClientOptions(target=target, read_timeout_s=10)) as client:
        client.upsert_items(items)
        # On the client's own channel: its token and TLS, if any, apply to this call too.
        experiments_pb2_grpc.ExperimentServiceStub(client.channel).CreateExperiment(
            experiments_pb2.CreateExperimentRequest(experiment=experiment),
            timeout=30,
            metadata=client.options.metadata(),
        )
        now = int(time.time() * 1000)
        # The pre-period: a week of views in liked categories, and clicks and purchases as the customer's latent
        # engagement and propensity have it (the CUPED covariates, and the features personalisation reads).
        pending: list[events_pb2.Event] = []
        for i in range(args.users):
            user = f"{prefix}-u{i}"
            liked = rng.choice(args.categories, size=4, p=customers.taste[i])
            for n, c in enumerate(liked):
                ts = now - 7 * DAY_MS + int(rng.integers(0, 6 * DAY_MS)) + n
                item = str(rng.choice(by_category[int(c)]))
                pending.append(_event(events_pb2.VIEW, user, item, ts))
                if rng.random() < min(0.95, 0.3 * customers.engagement[i]):
                    pending.append(_event(events_pb2.CLICK, user, item, ts + 1))
                    if rng.random() < customers.buy_probability(i) * 0.4:
                        pending.append(
                            _event(events_pb2.PURCHASE, user, item, ts + 2, price=price_of[item], quantity=1)
                        )
            if len(pending) >= BATCH:
                client.track(pending)
                pending = []
        if pending:
            client.track(pending)
        lift_of = {"control": 0.0, "treatment": args.lift}
        order = [(i, s) for s in range(args.sessions) for i in range(args.users)]
        for i, _ in order:
            user = f"{prefix}-u{i}"
            answer = client.recommend(user, args.k, explain=False)
            done["answers"] += 1
            variant = answer.variant.rpartition("/")[2]
            shown = [r.item_id for r in answer.items]
            clicked = rng.random(len(shown)) < customers.click_probabilities(
                i, [category_of.get(s, 0) for s in shown]
            )
            events: list[events_pb2.Event] = []
            for item, hit in zip(shown, clicked):
                if not hit:
                    continue
                rid = answer.recommendation_id
                events.append(_event(events_pb2.CLICK, user, item, 0, recommendation_id=rid))
                done["clicks"] += 1
                if rng.random() < customers.behaviour.cart_rate:
                    events.append(
                        _event(
                            events_pb2.ADD_TO_CART,
                            user,
                            item,
                            0,
                            recommendation_id=rid,
                            price=price_of[item],
                            quantity=1,
                        )
                    )
                    done["carts"] += 1
                    if rng.random() < customers.buy_probability(i, lift_of.get(variant, 0.0)):
                        events.append(
                            _event(
                                events_pb2.PURCHASE,
                                user,
                                item,
                                0,
                                recommendation_id=rid,
                                price=price_of[item],
                                quantity=1,
                            )
                        )
                        done["purchases"] += 1
            if events:
                client.track(events)
    return {"experiment": name, "lake": str(lake), **done}


def run_live(args: argparse.Namespace) -> dict[str, Any]:
    if args.target:
        if args.lake is None:
            sys.exit("--target needs --lake (the server's AISLE_LAKE_DIR)")
        counts = live(args, args.target, args.lake)
        time.sleep(2.0)  # the server's exposure log and lake sink flush within their intervals
        lake = args.lake
    else:
        # Only here: a run against --target needs no server code.
        from loadtest.harness.server import ServerProcess

        data = args.out / f"server-{args.seed}"
        lake = args.out / f"lake-{args.seed}"
        process = ServerProcess(
            data, env={"AISLE_LAKE_DIR": str(lake), "AISLE_ENCRYPTION": "off", "AISLE_SINK_FLUSH_S": "1"}
        )
        process.start()
        try:
            counts = live(args, process.target, lake)
        finally:
            process.stop()  # flushes the exposure log and the journal's lake appends
    report_args = argparse.Namespace(
        lake=lake,
        experiment=counts["experiment"],
        experiments_file=None,
        control="control",
        window_h=24.0,
        pre_days=14.0,
        alpha=args.alpha,
        tau=0.1,
    )
    report = build_report(report_args)
    return {"simulation": counts, "report": report}


# -- offline --------------------------------------------------------------------------------------------------------
def false_positive_rates(runs: int, users: int, seed: int, alpha: float) -> dict[str, dict[str, float]]:
    """A/A experiments (no lift): per metric, the share of runs each test called significant."""
    rng = np.random.default_rng(seed)
    hits: dict[str, dict[str, int]] = {}
    for _ in range(runs):
        result = analyze(offline_units(users, rng), "control", {"control": 1, "treatment": 1}, alpha)
        for metric, r in result["comparisons"]["treatment"].items():
            h = hits.setdefault(metric, {"raw": 0, "cuped": 0, "sequential": 0})
            h["raw"] += r["significant"]
            h["cuped"] += r["cuped"]["significant"]
            h["sequential"] += r["sequential"]["significant"]
    return {metric: {test: count / runs for test, count in h.items()} for metric, h in hits.items()}


def power(lift: float, seed: int, alpha: float, runs: int = 200) -> dict[str, Any]:
    """Users per variant to detect a relative `lift` of the conversion rate at 80 % power (statsmodels'
    `NormalIndPower` on the simulated baseline), and the share of `runs` simulated experiments of that size in
    which the report's conversion test (raw Welch, and after CUPED) finds it."""
    rng = np.random.default_rng(seed)

    # The lift is given to the purchase probability; conversion rises nearly in proportion to it: measure the ratio
    # on a draw of a million customers per variant (against its own control), then scale.
    def conversion_lift(purchase_lift: float) -> tuple[float, float]:
        units = offline_units(1_000_000, rng, lift=purchase_lift)
        rates = units.groupby("variant")["converted"].mean()
        return float(rates["treatment"] / rates["control"] - 1), float(rates["control"])

    probe = 3 * lift
    measured, baseline = conversion_lift(probe)
    purchase_lift = probe * lift / measured
    achieved, _ = conversion_lift(purchase_lift)
    effect = proportion_effectsize(baseline * (1 + lift), baseline)
    n = int(np.ceil(NormalIndPower().solve_power(effect_size=effect, power=0.8, alpha=alpha, ratio=1.0)))
    detected = {"raw": 0, "cuped": 0}
    for _ in range(runs):
        units = offline_units(n, rng, lift=purchase_lift)
        treated_rows = (units["variant"] == "treatment").to_numpy()
        y = units["converted"].to_numpy(dtype=float)
        raw = compare(y[treated_rows], y[~treated_rows], alpha)
        adjusted, _ = cuped(y, units["pre_purchases"].to_numpy(dtype=float))
        adj = compare(adjusted[treated_rows], adjusted[~treated_rows], alpha)
        detected["raw"] += raw["p_value"] < alpha and raw["diff"] > 0
        detected["cuped"] += adj["p_value"] < alpha and adj["diff"] > 0
    return {
        "baseline_conversion": baseline,
        "conversion_lift": lift,
        "purchase_lift": purchase_lift,
        "conversion_lift_achieved": achieved,
        "users_per_variant": n,
        "runs": runs,
        "power_raw": detected["raw"] / runs,
        "power_cuped": detected["cuped"] / runs,
    }


def run(args: argparse.Namespace) -> int:
    if args.aa_runs:
        result: dict[str, Any] = {
            "aa_runs": args.aa_runs,
            "users_per_variant": args.users,
            "alpha": args.alpha,
            "false_positive_rate": false_positive_rates(args.aa_runs, args.users, args.seed, args.alpha),
        }
        print(json.dumps(result, indent=2))
        return 0
    if args.power:
        print(json.dumps(power(args.lift or 0.05, args.seed, args.alpha), indent=2))
        return 0
    outcome = run_live(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "simulation.json").write_text(json.dumps(clean(outcome), indent=2) + "\n")
    print(json.dumps(outcome["simulation"]))
    print(markdown(outcome["report"]))
    return 0
