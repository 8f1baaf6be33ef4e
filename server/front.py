"""`python -m server.front`: run the nginx TLS 1.3 front before Aisle (what `make front` runs).

    python -m server.front --listen 0.0.0.0:8443 --backend 127.0.0.1:50051 \\
        --cert server.pem --key server.key [--client-ca ca.pem] [--dir .front]

Renders `server/nginx/aisle.conf.template` into `--dir` and runs Debian's nginx in the foreground on it
(`apt-get install nginx`): TLS 1.3 only, mutual TLS with `--client-ca`, HTTP/2 `grpc_pass` to the backend.
grpcio cannot refuse TLS 1.2 on its own port, which is why this front exists; run the server plaintext on
loopback (or a private network) behind it. Certificate paths default to AISLE_TLS_CERT_FILE, _KEY_FILE and
_CLIENT_CA_FILE.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx" / "aisle.conf.template"
_CLIENT_AUTH = """        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_verify_depth 3;
"""


@dataclass(frozen=True)
class FrontConfig:
    """What the front needs: where to listen, where the server is, the TLS files, and its own directory."""

    listen: str
    backend: str
    cert: Path
    key: Path
    directory: Path
    client_ca: Path | None = None
    workers: int = 1
    log_level: str = "warn"
    access_log: bool = False


def render(config: FrontConfig) -> str:
    """The nginx configuration for `config`, from the template."""
    directory = config.directory.resolve()
    client_auth = _CLIENT_AUTH.format(ca=config.client_ca.resolve()) if config.client_ca is not None else ""
    values = {
        "workers": str(config.workers),
        "dir": str(directory),
        "log_level": config.log_level,
        "access_log": str(directory / "access.log") if config.access_log else "off",
        "backend": config.backend,
        "listen": config.listen,
        "cert": str(config.cert.resolve()),
        "key": str(config.key.resolve()),
        "client_auth": client_auth,
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    if "{{" in text:
        raise ValueError(
            f"the template has a placeholder render() does not fill: {text[text.index('{{') :][:40]}"
        )
    return text


def write(config: FrontConfig) -> Path:
    """Render into `config.directory/nginx.conf` (with its temp dirs); returns the file."""
    (config.directory / "tmp").mkdir(parents=True, exist_ok=True)
    path = config.directory / "nginx.conf"
    path.write_text(render(config))
    return path


def find_nginx() -> str | None:
    """Debian's nginx, which lives in /usr/sbin (not always on PATH)."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def command(nginx: str, config_path: Path) -> list[str]:
    """The argv that runs nginx in the foreground on `config_path`, logging to stderr."""
    prefix = config_path.parent.resolve()
    return [nginx, "-p", str(prefix), "-e", "stderr", "-c", str(config_path.resolve())]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server.front", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0:8443", help="address nginx listens on (TLS)")
    parser.add_argument("--backend", default="127.0.0.1:50051", help="the Aisle server (plaintext gRPC)")
    parser.add_argument("--cert", type=Path, default=os.environ.get("AISLE_TLS_CERT_FILE"))
    parser.add_argument("--key", type=Path, default=os.environ.get("AISLE_TLS_KEY_FILE"))
    parser.add_argument(
        "--client-ca",
        type=Path,
        default=os.environ.get("AISLE_TLS_CLIENT_CA_FILE") or None,
        help="require client certificates signed by this CA (mutual TLS)",
    )
    parser.add_argument(
        "--dir", type=Path, default=Path(".front"), help="where the config, pid and temp files go"
    )
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.cert is None or args.key is None:
        sys.exit(
            "python -m server.front: --cert and --key (or AISLE_TLS_CERT_FILE / AISLE_TLS_KEY_FILE) are "
            "required; `make certs` writes development ones under .certs/"
        )
    nginx = find_nginx()
    if nginx is None:
        sys.exit("python -m server.front: nginx is not installed (Debian: apt-get install nginx)")
    config = FrontConfig(
        args.listen, args.backend, args.cert, args.key, args.dir, args.client_ca, args.workers
    )
    path = write(config)
    print(
        f"TLS 1.3 front on {args.listen} -> grpc://{args.backend} ({'mutual TLS' if args.client_ca else 'TLS'}); "
        f"config {path}",
        flush=True,
    )
    os.execv(nginx, command(nginx, path))


if __name__ == "__main__":
    main()
