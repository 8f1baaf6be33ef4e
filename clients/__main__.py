"""`python -m clients`: send events and ask for recommendations from the command line.

    python -m clients track --user u1 --type VIEW --item i42
    python -m clients recommend --user u1 -k 5
    python -m clients profile --user u1
    python -m clients similar --item i42
    python -m clients item --item i42
    python -m clients export --user u1      # everything held about u1, as JSON
    python -m clients erase --user u1       # erase u1 everywhere; prints the receipt
"""

from __future__ import annotations

import argparse
import sys
import uuid

import grpc
from google.protobuf.json_format import MessageToJson

from clients.client import AisleClient, ClientOptions
from protos.aisle.v1 import events_pb2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clients", description="Aisle command-line client")
    parser.add_argument("--target", default="localhost:50051", help="server address (default localhost:50051)")
    parser.add_argument("--token", help="JWT bearer token, for servers that require one")
    sub = parser.add_subparsers(dest="command", required=True)

    track = sub.add_parser("track", help="send one event")
    track.add_argument("--user", required=True)
    track.add_argument("--type", required=True, choices=[n for n in events_pb2.EventType.keys() if n != "EVENT_TYPE_UNSPECIFIED"])
    track.add_argument("--item", default="")
    track.add_argument("--items", nargs="*", default=[], help="several items (IMPRESSION, PURCHASE)")
    track.add_argument("--query", default="")
    track.add_argument("--price", type=float, default=0.0)
    track.add_argument("--quantity", type=int, default=0)
    track.add_argument("--ts-ms", type=int, default=0, help="event time; 0 = now")
    track.add_argument("--event-id", help="idempotency key (default: a new UUID)")
    track.add_argument("--recommendation-id", default="")

    rec = sub.add_parser("recommend", help="recommendations for a user")
    rec.add_argument("--user", default="")
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--context-item", default="")
    rec.add_argument("--exclude", nargs="*", default=[])
    rec.add_argument("--category", default="", help="category prefix filter")

    profile = sub.add_parser("profile", help="a user's customer profile")
    profile.add_argument("--user", required=True)

    similar = sub.add_parser("similar", help="items similar to an item")
    similar.add_argument("--item", required=True)
    similar.add_argument("-k", type=int, default=10)

    item = sub.add_parser("item", help="one catalog item")
    item.add_argument("--item", required=True)

    export = sub.add_parser("export", help="everything held about a customer, as JSON")
    export.add_argument("--user", required=True)

    erase = sub.add_parser("erase", help="erase a customer from every store; prints the receipt")
    erase.add_argument("--user", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with AisleClient(ClientOptions(target=args.target, token=args.token)) as client:
        try:
            if args.command == "track":
                event = events_pb2.Event(
                    event_id=args.event_id or uuid.uuid4().hex,
                    type=events_pb2.EventType.Value(args.type),
                    user_id=args.user,
                    item_id=args.item,
                    item_ids=args.items,
                    query=args.query,
                    price=args.price,
                    quantity=args.quantity,
                    ts_ms=args.ts_ms,
                    recommendation_id=args.recommendation_id,
                )
                print(MessageToJson(client.track([event]), indent=None))
            elif args.command == "recommend":
                response = client.recommend(
                    args.user,
                    args.k,
                    context_item_id=args.context_item,
                    exclude_item_ids=args.exclude,
                    category_prefix=args.category,
                )
                print(MessageToJson(response, indent=2))
            elif args.command == "profile":
                print(MessageToJson(client.profile(args.user), indent=2))
            elif args.command == "similar":
                print(MessageToJson(client.similar_items(args.item, args.k), indent=2))
            elif args.command == "item":
                print(MessageToJson(client.get_item(args.item), indent=2))
            elif args.command == "export":
                print(client.export_user(args.user).json)
            elif args.command == "erase":
                print(MessageToJson(client.erase_user(args.user), indent=2))
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
