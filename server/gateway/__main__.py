"""`python -m server.gateway`: the HTTP/JSON gateway before an Aisle gRPC server (what `make gateway` runs).

    python -m server.gateway --port 8080 --backend 127.0.0.1:50051 --cors-origin https://shop.example
    python -m server.gateway openapi [--out FILE]      # the OpenAPI document, without serving

Settings also come from AISLE_GATEWAY_* variables (AISLE_GATEWAY_CORS_ORIGINS='["https://shop.example"]') or
an env file; the command line wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from importlib import metadata
from pathlib import Path

import uvicorn

from server.gateway.app import build_app
from server.gateway.config import GatewaySettings
from server.gateway.openapi import document
from server.gateway.routes import routes


def _version() -> str:
    try:
        return metadata.version("aisle")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, GatewaySettings]:
    parser = argparse.ArgumentParser(prog="python -m server.gateway", description="Aisle HTTP/JSON gateway")
    parser.add_argument("command", nargs="?", choices=["serve", "openapi"], default="serve")
    parser.add_argument("--host", help="address to bind (AISLE_GATEWAY_HOST, default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port, 0 for any free one (AISLE_GATEWAY_PORT, default 8080)"
    )
    parser.add_argument(
        "--backend", help="the gRPC server, host:port (AISLE_GATEWAY_BACKEND, default 127.0.0.1:50051)"
    )
    parser.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        help="a browser origin allowed to call the API; repeat for more (AISLE_GATEWAY_CORS_ORIGINS)",
    )
    parser.add_argument(
        "--timeout-s", type=float, help="deadline of each gRPC call (AISLE_GATEWAY_TIMEOUT_S)"
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving (for tools)")
    parser.add_argument("--env-file", type=Path, help="read AISLE_GATEWAY_* settings from this file too")
    parser.add_argument("--out", type=Path, help="openapi: write the document here instead of stdout")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key in GatewaySettings.model_fields
    }
    if args.env_file is not None:
        overrides["_env_file"] = args.env_file
    return args, GatewaySettings(**overrides)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    args, settings = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "openapi":
        text = json.dumps(document(routes(), _version()), indent=2) + "\n"
        if args.out is None:
            sys.stdout.write(text)
        else:
            args.out.write_text(text)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Bind first, so port 0 works and the port file names the port actually bound.
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)  # connections wait in the backlog until uvicorn serves them
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(settings, _version()),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    if args.port_file is not None:
        args.port_file.write_text(f"{port}\n")
    print(f"Aisle HTTP/JSON gateway on {settings.host}:{port} -> gRPC {settings.backend}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
