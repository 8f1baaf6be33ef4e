"""Nothing a client sends through the gateway gets a 5xx: arbitrary paths, query strings and bodies on every
route, over a real socket to a real gateway and server (hypothesis, as the gRPC API is fuzzed)."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.tokens import PrivateKey, mint
from loadtest.harness.gateway import GatewayProcess
from server.gateway.routes import Route, routes
from tests.http_json import call

ROUTES = routes()
FIELD_NAMES = sorted(
    {f.name for r in ROUTES for f in r.method.input_type.fields} | {"k", "x", "user.user_id", ""}
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    segment=st.text(min_size=1, max_size=40),
    query=st.lists(st.tuples(st.sampled_from(FIELD_NAMES), st.text(max_size=20)), max_size=4),
    body=json_values | st.binary(max_size=64),
)
def test_no_request_gets_a_server_error(
    gateway: GatewayProcess,
    key: PrivateKey,
    route: Route,
    segment: str,
    query: list[tuple[str, str]],
    body: object,
) -> None:
    token = mint(key, ["admin"])
    path = route.template
    for variable in route.variables:
        path = path.replace("{" + variable + "}", quote(segment, safe=""))
    path += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query) if query else ""
    raw = body if isinstance(body, bytes) else None
    answer = call(
        gateway.port,
        route.http_method,
        path,
        None if raw is not None else body,
        token,
        raw=raw,
    )
    assert answer.status < 500, (path, body, answer.body)
