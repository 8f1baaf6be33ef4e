"""`python -m clients`: send events and ask for recommendations from the command line.

python -m clients track --user u1 --type VIEW --item i42
python -m clients recommend --user u1 -k 5
python -m clients profile --user u1
python -m clients similar --item i42
python -m clients item --item i42
python -m clients keys [--dir .keys] [--alg RS256]          # a development key pair and its JWKS
python -m clients certs [--dir .certs]                       # a development CA, server and client certs
python -m clients token --scope "recommendations:read" [--user U]   # a development access token
python -m clients --token "$TOKEN" [--ca-file ca.pem] recommend --user u1
python -m clients export --user u1      # everything held about u1, as JSON
python -m clients export --segment loyalty_tier=gold --segment active_days:30 --k 10 --format csv
python -m clients erase --user u1       # erase u1 everywhere; prints the receipt
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToJson

from clients import certs, export, tokens
from clients.client import AisleClient, ClientOptions
from protos.aisle.v1 import events_pb2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clients", description="Aisle command-line client")
    parser.add_argument(
        "--target", default="localhost:50051", help="server address (default localhost:50051)"
    )
    parser.add_argument("--token", help="JWT bearer token, for servers that require one")
    parser.add_argument("--ca-file", type=Path, help="PEM CA bundle: talk TLS, trusting these roots")
    parser.add_argument("--cert-file", type=Path, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--key-file", type=Path, help="PEM key of the client certificate (mutual TLS)")
    sub = parser.add_subparsers(dest="command", required=True)

    track = sub.add_parser("track", help="send one event")
    track.add_argument("--user", required=True)
    types = [n for n in events_pb2.EventType.keys() if n != "EVENT_TYPE_UNSPECIFIED"]  # noqa: SIM118 - an enum wrapper
    track.add_argument("--type", required=True, choices=types)
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

    keys = sub.add_parser("keys", help="write a development signing key and its JWKS (make keys)")
    keys.add_argument("--dir", type=Path, default=tokens.DEV_KEYS_DIR)
    keys.add_argument("--alg", choices=tokens.ALGORITHMS, default="RS256")

    cert = sub.add_parser("certs", help="write a development CA, server and client certificates (make certs)")
    cert.add_argument("--dir", type=Path, default=certs.DEV_CERTS_DIR)

    token = sub.add_parser("token", help="print a development access token signed with a local key")
    token.add_argument(
        "--key", type=Path, default=tokens.DEV_KEYS_DIR / "private.pem", help="PEM private key"
    )
    token.add_argument("--scope", default="admin", help='space-separated scopes (default "admin")')
    token.add_argument("--sub", default="dev-partner", help="the partner (sub and client_id)")
    token.add_argument("--user", help="bind the token to this customer (claim aisle_user)")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    token.add_argument("--issuer", default=tokens.DEV_ISSUER)
    token.add_argument("--audience", default=tokens.DEV_AUDIENCE)
    export = sub.add_parser(
        "export",
        help="everything held about a customer (--user), or a segment's recommendations (--segment)",
        description="--user U: everything held about U, as JSON. --segment TERM...: every customer of the segment "
        "with their recommendations (terms: KEY=VALUE, active_days:N, min_events:N, category:PATH, buyers; "
        "see clients/export.py).",
    )
    who = export.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the customer whose data to export")
    who.add_argument("--segment", action="append", help="a segment term; repeat for more (all must hold)")
    export.add_argument("--k", "-k", type=int, default=10, help="items per customer (segment export)")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--out", type=Path, help="write here instead of stdout")
    export.add_argument("--explain", action="store_true", help="include each item's reasons (jsonl)")
    export.add_argument(
        "--consented-only", action="store_true", help="leave out customers without consent to personalization"
    )
    export.add_argument("--category", default="", help="only items under this category prefix")

    erase = sub.add_parser("erase", help="erase a customer from every store; prints the receipt")
    erase.add_argument("--user", required=True)
    return parser


def offline(args: argparse.Namespace) -> int:
    """The commands that need no server: `keys`, `certs` and `token`."""
    if args.command == "certs":
        files = certs.write_dev_certs(args.dir)
        print(
            f"wrote {files.ca}, {files.server_cert} + key (localhost) and {files.client_cert} + key under {args.dir}"
        )
        return 0
    if args.command == "keys":
        pem, jwks = tokens.write_dev_keys(args.dir, args.alg)
        print(f"wrote {pem} (keep it private) and {jwks}; serve with:")
        for name, value in tokens.dev_settings(jwks).items():
            print(f"  export {name}={value}")
        return 0
    try:
        key = tokens.load_private_key(args.key)
    except (OSError, ValueError, TypeError) as error:
        print(f"cannot use {args.key}: {error} (run `make keys` first)", file=sys.stderr)
        return 1
    print(
        tokens.mint(
            key,
            args.scope.split(),
            subject=args.sub,
            user=args.user,
            issuer=args.issuer,
            audience=args.audience,
            ttl_s=args.ttl,
        )
    )
    return 0


def client_options(args: argparse.Namespace) -> ClientOptions:
    return ClientOptions(
        target=args.target,
        token=args.token,
        root_certificates=args.ca_file.read_bytes() if args.ca_file else None,
        certificate_chain=args.cert_file.read_bytes() if args.cert_file else None,
        private_key=args.key_file.read_bytes() if args.key_file else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("keys", "certs", "token"):
        return offline(args)
    with AisleClient(client_options(args)) as client:
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
            elif args.command == "export" and args.segment:
                if args.out is None:
                    return export.run(
                        client,
                        args.segment,
                        args.k,
                        args.format,
                        sys.stdout,
                        args.explain,
                        args.consented_only,
                        args.category,
                    )
                with open(args.out, "w", encoding="utf-8", newline="") as out:
                    return export.run(
                        client,
                        args.segment,
                        args.k,
                        args.format,
                        out,
                        args.explain,
                        args.consented_only,
                        args.category,
                    )
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
