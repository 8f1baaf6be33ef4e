"""Path templates of google.api.http, compiled to regular expressions (no server needed)."""

from __future__ import annotations

import pytest

from server.gateway.routes import TemplateError, compile_template, routes


@pytest.mark.parametrize(
    ("template", "path", "values"),
    [
        ("/v1/events:track", "/v1/events:track", ()),
        ("/v1/events:track", "/v1/events", None),
        ("/v1/users/{user_id}", "/v1/users/u1", ("u1",)),
        ("/v1/users/{user_id}", "/v1/users/u1/x", None),
        ("/v1/users/{user_id}:export", "/v1/users/a%3Ab:export", ("a%3Ab",)),
        ("/v1/users/{user.user_id}", "/v1/users/u%2F1", ("u%2F1",)),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books/b2", ("shelves/s1/books/b2",)),
        ("/v1/{path=**}", "/v1/a/b/c", ("a/b/c",)),
        ("/v1/*/x", "/v1/anything/x", ()),
    ],
)
def test_templates_match(template: str, path: str, values: tuple[str, ...] | None) -> None:
    pattern, _ = compile_template(template)
    found = pattern.fullmatch(path)
    assert (found.groups() if found else None) == values


@pytest.mark.parametrize("template", ["v1/x", "/v1//x", "/v1/{x", "/v1/{1x}", "/v1/a*b"])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(template)


def test_every_annotated_method_is_routed_custom_verbs_first() -> None:
    table = routes()
    assert {(r.http_method, r.template) for r in table} >= {
        ("POST", "/v1/events:track"),
        ("GET", "/v1/users/{user_id}/recommendations"),
        ("POST", "/v1/users/{user_id}/recommendations"),
        ("GET", "/v1/users/{user_id}:export"),
        ("DELETE", "/v1/users/{user_id}"),
    }
    export = next(i for i, r in enumerate(table) if r.template.endswith(":export"))
    erase = next(i for i, r in enumerate(table) if r.template == "/v1/users/{user_id}")
    assert export < erase
