"""The FastAPI application: routes, the one error renderer, health, and the embedded runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from g2p_bridge import __version__
from g2p_bridge.api import (
    approvals,
    audit_events,
    disbursements,
    envelopes,
    programs,
    statements,
)
from g2p_bridge.api.handling import database_unavailable
from g2p_bridge.api.security import (
    RefuseControlCharactersMiddleware,
    RequestContextMiddleware,
    authenticate,
)
from g2p_bridge.api.wire import add_request_schemas, json_response, refusal, validation_message
from g2p_bridge.auth import Authenticator
from g2p_bridge.console import mount_console
from g2p_bridge.core.context import Context
from g2p_bridge.core.errors import BridgeError, ErrorCode, InvalidRequest
from g2p_bridge.db import is_database_outage, make_engine, make_session_factory
from g2p_bridge.observability import DisbursementStates, MetricsServer, render_metrics
from g2p_bridge.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    session_factory: sessionmaker[Session] | None = None,
    wake: Callable[..., None] | None = None,
    run_pipeline: bool = False,
) -> FastAPI:
    """``run_pipeline`` runs producers and workers in this process (the embedded default);
    ``wake`` is told after a commit that made new work (a Celery send, or the embedded runner)."""
    settings = settings or get_settings()
    # Before anything else: an API that cannot tell who calls it must not start.
    authenticator = Authenticator(settings)
    session_factory = session_factory or make_session_factory(make_engine(settings.database_url))
    runner = None
    if run_pipeline:
        from g2p_bridge.embedded import EmbeddedRunner

        runner = EmbeddedRunner(Context(settings, session_factory))
        wake = runner.wake
    elif wake is None and not settings.embedded:
        wake = _celery_wake()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics_server = None
        if settings.metrics_port is not None:
            metrics_server = MetricsServer(
                settings.metrics_host, settings.metrics_port, app.state.disbursement_states
            )
            metrics_server.start()
            app.state.metrics_server = metrics_server
        if runner is not None:
            runner.start()
        yield
        if runner is not None:
            runner.stop()
        if metrics_server is not None:
            metrics_server.stop()

    app = FastAPI(
        title="G2P Bridge",
        version=__version__,
        lifespan=lifespan,
        description="Moves G2P benefit payments to beneficiaries through a sponsor "
        "bank, exactly once, and reconciles each one.",
    )
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.wake = wake or (lambda *_: None)
    app.state.bulk_slots = asyncio.Semaphore(settings.max_concurrent_bulk_requests)
    app.state.authenticator = authenticator
    app.state.disbursement_states = DisbursementStates(
        session_factory, settings.metrics_state_cache_seconds
    )
    for module in (envelopes, disbursements, statements, programs, audit_events, approvals):
        app.include_router(module.router, dependencies=[Depends(authenticate)])
    # The operators' console: its own sign-in (cookie sessions), not the API's bearer tokens.
    mount_console(app)
    app.add_middleware(RefuseControlCharactersMiddleware)
    app.add_middleware(RequestContextMiddleware)
    _add_health(app)
    _add_error_handlers(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            app.openapi_schema = add_request_schemas(schema)
            _document_refusals(app.openapi_schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _document_refusals(schema: dict[str, Any]) -> None:
    """Protected operations answer 401 and 403 too; say so, so clients and fuzzers know."""
    refused = {"description": "G2P Connect rjct", "content": {"application/json": {}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict) and operation.get("security"):
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", {**refused, "description": "not authenticated"})
                responses.setdefault("403", {**refused, "description": "not authorized"})
                responses.setdefault("413", {**refused, "description": "request too large"})
                responses.setdefault("422", {**refused, "description": "invalid request"})
                responses.setdefault(
                    "503", {**refused, "description": "database unavailable; retry after a while"}
                )


def _celery_wake() -> Callable[..., None]:
    from g2p_bridge.workers.celery_app import celery_app

    def wake(reason: str, *args: str) -> None:
        try:
            if reason == "statement_uploaded":
                celery_app().send_task("g2p.process_statement", args=list(args))
            else:
                celery_app().send_task("g2p.produce")
        except Exception:
            # The commit already happened; the next beat tick finds the work all the same.
            log.warning("could not wake the workers (%s); beat will pick it up", reason)

    return wake


def _add_health(app: FastAPI) -> None:
    @app.get("/ping", tags=["health"])
    async def ping() -> dict[str, str]:
        return {"message": "pong"}

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", tags=["health"])
    async def ready(request: Request) -> Response:
        settings: Settings = request.app.state.settings
        checks = {"database": "ok"}

        def database() -> None:
            with request.app.state.session_factory() as session:
                session.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(database)
        except Exception as exc:
            log.warning("readiness: database unreachable: %s", exc)
            checks["database"] = "unreachable"
        if settings.broker_url:
            checks["broker"] = await run_in_threadpool(
                _broker_reachable, settings.broker_url, settings.broker_check_timeout_seconds
            )
        healthy = all(v == "ok" for v in checks.values())
        return json_response(
            {"status": "ok" if healthy else "unavailable", **checks}, 200 if healthy else 503
        )

    if app.state.settings.metrics_port is not None:
        return  # served on its own port (MetricsServer), never on the API's

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        body, content_type = await run_in_threadpool(
            render_metrics, request.app.state.disbursement_states
        )
        return Response(content=body, media_type=content_type)


def _broker_reachable(url: str, timeout: float) -> str:
    """One connection attempt with a timeout; the broker's own client, whatever its kind."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout, transport_options={"max_retries": 0}) as c:
            # kombu takes a float timeout; its stub (celery-types) says int.
            c.ensure_connection(max_retries=1, timeout=timeout)  # type: ignore[arg-type]
    except Exception as exc:
        log.warning("readiness: broker unreachable: %s", exc)
        return "unreachable"
    return "ok"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BridgeError)
    async def bridge_error(_request: Request, exc: BridgeError) -> Response:
        return refusal(exc, {})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for error in exc.errors()[:10]:
            where = ".".join(str(p) for p in error.get("loc", ())) or "request"
            parts.append(f"{where}: {error.get('msg')}")
        return refusal(InvalidRequest(ErrorCode.INVALID_REQUEST, "; ".join(parts)), {})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        error = BridgeError(ErrorCode.INVALID_REQUEST, str(exc.detail))
        error.http_status = exc.status_code
        return refusal(error, {})

    async def database_error(_request: Request, exc: Exception) -> Response:
        # The database away (stopped, restarting): a 503 rjct with Retry-After, not a 500.
        # Anything else (an IntegrityError that got this far, a programming error) stays a 500.
        if not is_database_outage(exc):
            raise exc
        return database_unavailable(exc, {})

    # DBAPIError covers OperationalError, InterfaceError and a disconnect of any other kind.
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(PoolTimeout, database_error)


__all__ = ["create_app", "validation_message"]
