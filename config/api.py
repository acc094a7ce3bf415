"""The REST API v1: one django-ninja API at /api/v1/ made of each app's router (``<app>/api.py``), its OpenAPI
3.1 schema at /api/v1/schema/ and its browsable docs at /api/v1/docs (docs/api.md).

Here every error becomes an RFC 9457 problem (``common.problems``): the apps raise ``Problem`` or ``Http404``,
django-ninja raises its validation and authentication errors, and anything unforeseen is logged and answered
500 in the same shape. ``problem_middleware`` does the same for what Django answers before the API runs (an
unknown path, a method a path does not take).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.datastructures import MultiValueDict
from django.utils.decorators import sync_and_async_middleware
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.schema import OpenAPISchema
from ninja.parser import Parser
from ninja.types import DictStrAny

from agents.api import router as agents_router
from catalogs.api import router as catalogs_router
from common.problems import PROBLEM_CONTENT_TYPE, FieldError, Problem, problem_response
from common.text import holds_nul
from dashboard.api import router as dashboard_router
from messaging.api import router as messaging_router
from regressions.api import router as regressions_router

logger = logging.getLogger(__name__)

PREFIX = "/api/v1/"

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An error, as RFC 9457 problem details (application/problem+json)",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string", "description": "A stable word for programs: not_found, scope_missing..."},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
PROBLEM_RESPONSE = {
    "description": "A problem: what went wrong and, for bad input, with which field",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def _nul_refused() -> Problem:
    return Problem(400, "text may not contain NUL characters (\\u0000)", code="validation_failed")


class TextParser(Parser):
    """JSON bodies, form fields and query parameters, refusing a NUL character in any text: PostgreSQL
    stores none (in text or JSON), so it would fail the write after the checks passed. Files are not read
    here (an uploaded spreadsheet holds NUL bytes and is the importer's to judge)."""

    def parse_body(self, request: HttpRequest) -> DictStrAny:
        data = super().parse_body(request)
        if holds_nul(data):
            raise _nul_refused()
        return data

    def parse_querydict(
        self, data: MultiValueDict[str, Any], list_fields: list[str], request: HttpRequest
    ) -> DictStrAny:
        parsed = super().parse_querydict(data, list_fields, request)
        if holds_nul(parsed):
            raise _nul_refused()
        return parsed


class BizagentApi(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> OpenAPISchema:
        """The schema with the problem body as every operation's 4XX answer."""
        schema = super().get_openapi_schema(**kwargs)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].setdefault("4XX", PROBLEM_RESPONSE)
        return schema


api = BizagentApi(
    title="bizagent API",
    version="1",
    description="A business's catalog, documents, conversations, agent settings and analytics "
    "(docs/api.md). Authenticate with `Authorization: Bearer <API key>`.",
    openapi_url="/schema/",
    docs_url="/docs",
    urls_namespace="api",
    parser=TextParser(),
)
for router in (catalogs_router, messaging_router, agents_router, dashboard_router, regressions_router):
    api.add_router("", router)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    # ninja names a JSON body by the view's parameter ("body.payload.price"): the client knows no such name.
    if len(parts) > 2 and parts[0] == "body":
        del parts[1]
    return ".".join(parts)


@api.exception_handler(Problem)
def _problem(request: HttpRequest, exc: Problem) -> HttpResponse:
    return problem_response(request, exc)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors: list[FieldError] = [
        {"field": _field(error.get("loc", ())), "message": str(error.get("msg", "invalid"))}
        for error in exc.errors
    ]
    return problem_response(
        request, Problem(422, "the request is not valid", code="validation_failed", errors=errors)
    )


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return problem_response(request, Problem(404, "not found"))


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return problem_response(
        request,
        Problem(
            401,
            "a valid API key is required (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        ),
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # django-ninja wraps what the body's parser raises ("Cannot parse request body"): our own refusal says why.
    if isinstance(exc.__cause__, Problem):
        return problem_response(request, exc.__cause__)
    return problem_response(request, Problem(exc.status_code, str(exc)))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return problem_response(request, Problem(413, "the request body is too large", code="too_large"))


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("REST API error on %s %s", request.method, request.path)
    return problem_response(request, Problem(500, "internal error: it was logged, and nothing was changed"))


def _as_problem(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if (
        not request.path.startswith(PREFIX)
        or response.status_code < 400
        or response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE)
    ):
        return response
    status = response.status_code
    detail = (
        f"this path does not take {request.method}" if status == 405 else HTTPStatus(status).phrase.lower()
    )
    problem = problem_response(request, Problem(status, detail))
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            problem[header] = response[header]
    return problem


@sync_and_async_middleware
def problem_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Errors that Django answers under /api/v1/ before an operation runs (404 for an unknown path, 405 for
    a method the path does not take) become problems too: a client parses one error shape."""
    if iscoroutinefunction(get_response):

        async def middleware_async(request: HttpRequest) -> HttpResponseBase:
            return _as_problem(request, await get_response(request))

        return middleware_async

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return _as_problem(request, get_response(request))

    return middleware
