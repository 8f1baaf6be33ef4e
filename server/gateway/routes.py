"""The REST mapping of the contract: `google.api.http` options read from the service descriptors.

Every method of an `aisle.v1` service that carries the option (and each of its `additional_bindings`) becomes
a `Route`: an HTTP method, a path template compiled to a regular expression over the *raw* (still
percent-encoded) path, the request fields its variables bind, and where the body goes. Services are found by
importing every generated module of `protos.aisle.v1`, so a new service with annotations is served without a
change here.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

import protos.aisle.v1

PACKAGE = "aisle.v1"
_VERBS = ("get", "put", "post", "delete", "patch")


class TemplateError(ValueError):
    """A path template this gateway cannot serve (a contract bug: raised when the routes are built)."""


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one gRPC method."""

    #: GET, POST, PUT, DELETE or PATCH.
    http_method: str
    #: The template as the contract writes it, e.g. "/v1/users/{user_id}/recommendations".
    template: str
    pattern: re.Pattern[str]
    #: The request fields bound by the template's variables (dotted paths), in the order of the groups.
    variables: tuple[str, ...]
    #: "" (no body: the other fields come from the query string), "*" (the whole request) or a field name.
    body: str
    method: MethodDescriptor

    @property
    def grpc_path(self) -> str:
        """The gRPC method path, e.g. "/aisle.v1.RecommendationService/Recommend"."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    def match(self, raw_path: str) -> tuple[str, ...] | None:
        """The (still percent-encoded) values of the variables when `raw_path` matches, else None."""
        found = self.pattern.fullmatch(raw_path)
        return None if found is None else found.groups()


def services() -> list[ServiceDescriptor]:
    """Every service of the `aisle.v1` package, from the generated modules under `protos.aisle.v1`."""
    found: dict[str, ServiceDescriptor] = {}
    for module in pkgutil.iter_modules(protos.aisle.v1.__path__):
        if module.name.endswith("_pb2"):
            file = importlib.import_module(f"protos.aisle.v1.{module.name}").DESCRIPTOR
            if file.package == PACKAGE:
                found.update((s.full_name, s) for s in file.services_by_name.values())
    return [found[name] for name in sorted(found)]


def routes(service_list: Iterable[ServiceDescriptor] | None = None) -> list[Route]:
    """The routes of `service_list` (default: every aisle.v1 service), those with a `:verb` first."""
    built: list[Route] = []
    for service in services() if service_list is None else service_list:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            for binding in (rule, *rule.additional_bindings):
                built.append(_route(binding, method))
    # A custom verb is the more specific template: "/v1/users/{id}:export" before "/v1/users/{id}".
    return sorted(built, key=lambda r: ":" not in r.template.rsplit("/", 1)[-1])


def _route(rule: http_pb2.HttpRule, method: MethodDescriptor) -> Route:
    kind = rule.WhichOneof("pattern")
    if kind not in _VERBS:
        raise TemplateError(f"{method.full_name}: unsupported HTTP pattern {kind!r}")
    template = getattr(rule, kind)
    pattern, variables = compile_template(template)
    if rule.response_body:
        raise TemplateError(f"{method.full_name}: response_body is not supported")
    return Route(kind.upper(), template, pattern, variables, rule.body, method)


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """Compile a google.api.http path template ("/v1/{name=items/*}:verb") to a regex and its variables.

    Grammar (google/api/http.proto): Template = "/" Segments [":" Verb]; Segment = "*" | "**" | LITERAL |
    "{" FieldPath ["=" Segments] "}". A variable without "=" matches one segment; "**" matches the rest.
    """
    if not template.startswith("/"):
        raise TemplateError(f"{template!r}: a template starts with '/'")
    segments, verb = _split_verb(template[1:])
    parts: list[str] = []
    variables: list[str] = []
    for segment in _split_segments(segments, template):
        if segment.startswith("{"):
            field, _, inner = segment[1:-1].partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", field):
                raise TemplateError(f"{template!r}: bad field path {field!r}")
            variables.append(field)
            parts.append("(" + "/".join(_segment_regex(s, template) for s in (inner or "*").split("/")) + ")")
        else:
            parts.append(_segment_regex(segment, template))
    regex = "/" + "/".join(parts) + (":" + re.escape(verb) if verb else "")
    return re.compile(regex), tuple(variables)


def _split_verb(text: str) -> tuple[str, str]:
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        char = text[i]
        if char == "}":
            depth += 1
        elif char == "{":
            depth -= 1
        elif char == "/" and depth == 0:
            return text, ""
        elif char == ":" and depth == 0:
            return text[:i], text[i + 1 :]
    return text, ""


def _split_segments(text: str, template: str) -> list[str]:
    segments: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == "/" and depth == 0:
            segments.append(current)
            current = ""
        else:
            current += char
    segments.append(current)
    if depth != 0 or any(not s for s in segments):
        raise TemplateError(f"{template!r}: empty segment or unbalanced braces")
    return segments


def _segment_regex(segment: str, template: str) -> str:
    if segment == "*":
        return "[^/]+"
    if segment == "**":
        return ".+"
    if "{" in segment or "}" in segment or "*" in segment:
        raise TemplateError(f"{template!r}: bad segment {segment!r}")
    return re.escape(segment)
