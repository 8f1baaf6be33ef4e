"""TLS for the gRPC port: with a certificate and key the server serves TLS only (no plaintext port); with a
client CA as well, every client must present a certificate that CA signed (mutual TLS).

grpcio cannot set TLS 1.3 as the minimum version, so a deployment that must refuse TLS 1.2 puts the nginx
front (`server/nginx/`, `python -m server.front`) before the server.
"""

from __future__ import annotations

import grpc

from server.config import ConfigError, ServerSettings


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """The TLS credentials the settings name, or None for plaintext. Raises `ConfigError` for half a pair,
    a client CA without a certificate, or files that cannot be read."""
    cert, key, client_ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if (cert is None) != (key is None):
        raise ConfigError("AISLE_TLS_CERT_FILE and AISLE_TLS_KEY_FILE go together: set both or neither")
    if cert is None or key is None:
        if client_ca is not None:
            raise ConfigError("AISLE_TLS_CLIENT_CA_FILE needs AISLE_TLS_CERT_FILE and AISLE_TLS_KEY_FILE")
        return None
    try:
        pair = (key.read_bytes(), cert.read_bytes())
        roots = client_ca.read_bytes() if client_ca is not None else None
    except OSError as exc:
        raise ConfigError(f"cannot read a TLS file: {exc}") from exc
    return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=roots is not None)


def bind(server: grpc.aio.Server, settings: ServerSettings) -> tuple[int, str]:
    """Add the one listening port (TLS when configured) and return it with a word for the log."""
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(address), "plaintext"
    mode = "mutual TLS" if settings.tls_client_ca_file is not None else "TLS"
    return server.add_secure_port(address, credentials), mode
