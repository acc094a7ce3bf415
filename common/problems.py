"""RFC 9457 problem details: the one error body of the REST API (``application/problem+json``).

A view (or the API's plumbing: authentication, rate limits, idempotency) raises ``Problem``; the API turns it,
and every other error it knows (validation, 404, 401...), into ``problem_response``. ``type`` stays
``about:blank`` (the status says what happened, RFC 9457 section 4.2.1); ``code`` is a stable word for
programs to branch on, and ``errors`` lists what was wrong with which field of the input.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, TypedDict

from django.http import HttpRequest, HttpResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"


class FieldError(TypedDict):
    """One thing wrong with the input: where (``body.price``, ``query.limit``, ``form.mode``) and why."""

    field: str
    message: str


class ProblemBody(TypedDict, total=False):
    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str
    errors: list[FieldError]


class Problem(Exception):
    """An answer that is an error, with what the caller needs to fix or retry it. ``headers`` go on the
    response (``Retry-After``, ``WWW-Authenticate``)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str = "",
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
        self.errors = errors or []
        self.headers = headers or {}


def problem_body(request: HttpRequest, problem: Problem) -> ProblemBody:
    body: ProblemBody = {
        "type": "about:blank",
        "title": HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.path,
        "code": problem.code,
    }
    if problem.errors:
        body["errors"] = problem.errors
    return body


def problem_response(request: HttpRequest, problem: Problem) -> HttpResponse:
    response = HttpResponse(
        json.dumps(problem_body(request, problem)), status=problem.status, content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in problem.headers.items():
        response[name] = value
    return response


def field_errors(errors: dict[str, Any], *, prefix: str) -> list[FieldError]:
    """A form's ``{field: message or [messages]}`` as problem ``errors`` (``prefix``: body, form, query)."""
    out: list[FieldError] = []
    for name, messages in errors.items():
        for message in messages if isinstance(messages, list) else [messages]:
            out.append(
                {"field": f"{prefix}.{name}" if name != "__all__" else prefix, "message": str(message)}
            )
    return out
