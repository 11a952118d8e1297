"""The API's guard: request ids and metrics around every request, the bearer-token dependency on
every non-public route, and the audit record of a refused request."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import unquote

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from g2p_bridge.api.wire import refusal
from g2p_bridge.auth import ANONYMOUS_ADMIN, Authenticator, Principal
from g2p_bridge.core import audit
from g2p_bridge.core.errors import BridgeError, ErrorCode, InvalidRequest, Unauthenticated
from g2p_bridge.db import transaction
from g2p_bridge.observability import (
    AUTH_REFUSALS,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    REQUEST_ID_HEADER,
    actor_var,
    new_request_id,
    request_id_var,
    role_var,
)
from g2p_bridge.schemas import forbidden_character

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="An OAuth2 access token (JWT)")


class RequestContextMiddleware:
    """Gives each request an id (the client's ``X-Request-ID`` or a new one), echoes it in the
    answer, and counts the request by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None
        )
        request_id = new_request_id(given)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_LATENCY.labels(method, template).observe(time.perf_counter() - started)
            if status in (401, 403):
                AUTH_REFUSALS.labels(str(status)).inc()
            request_id_var.reset(token)


class RefuseControlCharactersMiddleware:
    """Answers 400 to a URL whose path or query holds a control character (NUL above all,
    which PostgreSQL's text type cannot hold) before any route or database sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = unquote(scope.get("query_string", b"").decode("latin-1"), errors="replace")
            bad = forbidden_character(scope.get("path", "")) or forbidden_character(query)
            if bad is not None:
                error = InvalidRequest(
                    ErrorCode.INVALID_CHARACTER,
                    f"the URL holds the control character {bad}, which no path or query takes",
                )
                error.http_status = 400
                await refusal(error, {})(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def authenticate(request: Request) -> Principal:
    """The dependency on every protected route: the caller's principal, or a 401 refusal.
    A route with a body calls it before reading the body (api/g2p_connect.py); then it is
    already known here."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    authenticator: Authenticator = request.app.state.authenticator
    if authenticator.disabled:
        principal = ANONYMOUS_ADMIN
    else:
        credentials: HTTPAuthorizationCredentials | None = await bearer(request)
        if credentials is None or not credentials.credentials:
            raise Unauthenticated(ErrorCode.AUTHENTICATION_REQUIRED, "a bearer token is required")
        principal = await run_in_threadpool(authenticator.verify, credentials.credentials)
    request.state.principal = principal
    # Async dependencies run in the request's task: the endpoint and its threads see these.
    actor_var.set(principal.client_id)
    role_var.set(principal.role)
    return principal


def principal_of(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def record_refusal(
    factory: sessionmaker[Session],
    principal: Principal,
    action: str,
    error: BridgeError,
    entity_type: str = "request",
    entity_id: str | None = None,
    envelope_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """An authorization refusal, in its own transaction (the refused one rolled back)."""
    with transaction(factory) as session:
        audit.record(
            session,
            action,
            entity_type,
            entity_id,
            outcome="denied",
            envelope_id=envelope_id,
            actor=principal.client_id,
            role=principal.role,
            detail={"code": error.code.value, "reason": error.message, **(detail or {})},
        )
    log.warning("refused %s for %s: %s", action, principal.client_id, error.message)
