"""`make demo`: the whole loop in one process, shown on a generated shop.

Generates a shop, starts the embedded server on localhost:50051, replays the shop's events through
EventService.Track, then picks a customer, shows their recommendations, sends a few of their clicks
in a department they never visited, and shows the very next answer change. Then it keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc

from clients import tokens
from clients.client import AisleClient, AsyncAisleClient, ClientOptions
from clients.replay import replay
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import events_pb2
from trainer.data.generated import read_events, read_items, read_meta, read_users
from trainer.generate import generate_shop


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clients.demo")
    parser.add_argument("--data-dir", type=Path, default=Path(".demo"))
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-serve", action="store_true", help="stop after the walkthrough")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="require JWTs: a development key under DATA_DIR/keys signs the demo's tokens",
    )
    return parser.parse_args()


def start_server(data_dir: Path, port: int, env: dict[str, str] | None = None) -> ServerProcess:
    server_dir = data_dir / "server"
    shutil.rmtree(server_dir, ignore_errors=True)  # a clean shop each run
    try:
        # lists refresh in the background, as in production; bundles promoted under data_dir/bundles are hot-swapped
        args = ["--lists-refresh-s", "1", "--bundles", str(bundles_dir(data_dir)), "--bundle-poll-s", "0.5"]
        return ServerProcess(server_dir, port=port, args=args, env=env or {}).start()
    except RuntimeError as error:
        sys.exit(str(error))


def bundles_dir(data_dir: Path) -> Path:
    return (data_dir / "bundles").resolve()


def train_and_promote(shop: Path, data_dir: Path, target: str, user: str, token: str | None = None) -> None:
    """Train a bundle on the shop (two-tower model, item transitions and the learned re-ranker, in a child process:
    only the trainer imports torch), promote it, and show the running server's next answer once it has hot-swapped
    the bundle in."""
    out = bundles_dir(data_dir)
    shutil.rmtree(out, ignore_errors=True)  # a clean shop each run
    version = "demo-1"
    print(
        f"\nTraining on the shop's events: a two-tower model (PyTorch, a few epochs), item transitions and a "
        f"re-ranker over the server's own candidates; exporting ONNX + FAISS to {out}/{version} and promoting it…",
        flush=True,
    )
    command = [
        sys.executable,
        "-m",
        "trainer",
        "train",
        "--data",
        str(shop),
        "--format",
        "generated",
        "--protocol",
        "none",
        "--out",
        str(out),
        "--version",
        version,
        "--epochs",
        "4",
        "--promote",
        "--no-progress",
    ]
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        print("training failed (see above); the server keeps serving the real-time sources")
        return
    with AisleClient(ClientOptions(target=target, read_timeout_s=5, token=token)) as client:
        for _ in range(100):  # the server checks for a promotion every 0.5 s
            if client.recommend(user, 1).model_version == version:
                break
            time.sleep(0.1)
        show(f"Recommendations with bundle {version} hot-swapped in (no restart):", client, user)
    print(
        "Items marked `learned` come from the user tower (ONNX Runtime) and the FAISS index, `often_next_after` "
        "from the item transitions, on the same real-time features; the bundle's ranker (ONNX) ordered them all."
    )


def show(title: str, client: AisleClient, user: str, before: set[str] | None = None) -> set[str]:
    answer = client.recommend(user, 8, explain=True)
    print(f"\n{title}  (model {answer.model_version}, recommendation {answer.recommendation_id[:8]}…)")
    for rank, scored in enumerate(answer.items, 1):
        item = client.get_item(scored.item_id)
        new = "  NEW" if before is not None and scored.item_id not in before else ""
        print(
            f"  {rank}. {scored.item_id:<7} {item.category:<40.40} {item.brand:<14.14} "
            f"{scored.score:6.3f}  {', '.join(scored.reasons)}{new}"
        )
    return {s.item_id for s in answer.items}


def walkthrough(target: str, shop: Path, token: str | None = None) -> str:
    """Show a customer's answer change with three views; return that customer's id."""
    with AisleClient(ClientOptions(target=target, read_timeout_s=5, token=token)) as client:
        items = list(read_items(shop))
        users = [u.user_id for u in read_users(shop)]
        # A customer with a real history, to make the change visible.
        user = max(users[:300], key=lambda u: client.profile(u).events_applied)
        profile = client.profile(user)
        top = [a.key for a in profile.category_affinities[:3]]
        print(
            f"\nCustomer {user}: {profile.events_applied} events, favourite categories {top}, "
            f"loyalty {profile.loyalty.score:.2f}"
        )
        before = show("Recommendations now:", client, user)

        departments = {a.key for a in profile.category_affinities if "/" not in a.key}
        fresh = [i for i in items if i.category.split("/")[0] not in departments and i.in_stock]
        leaf = fresh[0].category
        clicked = [i for i in fresh if i.category == leaf][:3]
        print(f"\n{user} now looks at {len(clicked)} items in {leaf}, a department they never visited:")
        for item in clicked:
            print(f"  VIEW  {item.item_id}  {item.title}")
        client.track(
            events_pb2.Event(event_id=uuid.uuid4().hex, type=events_pb2.VIEW, user_id=user, item_id=i.item_id)
            for i in clicked
        )
        show("Recommendations on the very next call:", client, user, before)
        print(
            "\nNo retraining, no batch job: the events were folded into the customer's features as they came in."
        )
    return user


def main() -> None:
    args = parse_args()
    shop = args.data_dir / "shop"
    if not (shop / "meta.json").exists():
        print(f"Generating a shop: {args.users} users, {args.items} items (seed {args.seed})…")
        generate_shop(args.users, args.items, args.seed, shop)
    meta = read_meta(shop)
    target = f"localhost:{args.port}"
    print(f"Starting the embedded server on {target}…")
    env, token = auth_setup(args.data_dir) if args.auth else ({}, None)
    server = start_server(args.data_dir, args.port, env)
    try:

        async def load() -> None:
            async with AsyncAisleClient(
                ClientOptions(target=target, write_timeout_s=60, token=token)
            ) as client:
                report = await replay(
                    client,
                    list(read_items(shop)),
                    list(read_users(shop)),
                    read_events(shop),
                    total_events=meta["events"],
                )
            print(
                f"Replayed {report.events} events ({report.rejected} rejected) for {report.users} users and "
                f"{report.items} items in {report.seconds:.1f} s: {report.events_per_s:,.0f} events/s over gRPC"
            )

        asyncio.run(load())
        user = walkthrough(target, shop, token)
        train_and_promote(shop, args.data_dir, target, user, token)
        if args.no_serve:
            return
        if token is not None:
            print(f"""
Auth is on: every aisle.v1 call needs a token. Mint one (here: admin, an hour) and pass it along:
  export TOKEN=$(.venv/bin/python -m clients token --key {args.data_dir / "keys" / "private.pem"} --scope admin)
  .venv/bin/python -m clients --token "$TOKEN" recommend --user demo-user -k 5
  .venv/bin/python -m clients recommend --user demo-user -k 5     # no token: UNAUTHENTICATED""")
        print(
            f"""
Aisle keeps serving on {target} (Ctrl-C to stop). Try:
  .venv/bin/python -m clients recommend --user {read_users_first(shop)} -k 5
  .venv/bin/python -m clients track --user demo-user --type VIEW --item {next(read_items(shop)).item_id}
  .venv/bin/python -m clients recommend --user demo-user -k 5
  .venv/bin/python -m clients profile --user demo-user
  grpcurl -plaintext -d '{{"user_id": "demo-user", "k": 5, "explain": true}}' {target} aisle.v1.RecommendationService/Recommend
  grpcurl -plaintext {target} list
""",
            flush=True,
        )
        if server.proc is not None:
            server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def auth_setup(data_dir: Path) -> tuple[dict[str, str], str]:
    """A development key and JWKS under DATA_DIR/keys: the server's AISLE_AUTH_* settings and an admin token."""
    key_file, jwks_file = tokens.write_dev_keys(data_dir / "keys")
    print(f"Auth on: keys in {key_file.parent}, tokens from `python -m clients token --key {key_file}`")
    return tokens.dev_settings(jwks_file.resolve()), tokens.mint(tokens.load_private_key(key_file), ["admin"])


def read_users_first(shop: Path) -> str:
    return next(read_users(shop)).user_id


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        main()
    except grpc.RpcError as error:
        sys.exit(f"demo failed: {error.code().name}: {error.details()}")
