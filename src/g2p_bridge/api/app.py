"""The FastAPI application: routers, error handlers, health, and the embedded runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge import __version__
from g2p_bridge.api import (
    approvals,
    audit_events,
    callbacks,
    disbursements,
    envelopes,
    payroll_files,
    programs,
    statements,
)
from g2p_bridge.api.g2p_connect import REFUSALS, add_exception_handlers
from g2p_bridge.api.security import (
    RefuseControlCharactersMiddleware,
    RequestContextMiddleware,
    authenticate,
)
from g2p_bridge.api.wire import json_response
from g2p_bridge.auth import Authenticator
from g2p_bridge.console import mount_console
from g2p_bridge.core.context import Context
from g2p_bridge.db import make_engine, make_session_factory
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
    for module in (
        envelopes,
        disbursements,
        statements,
        programs,
        audit_events,
        approvals,
        payroll_files,
        callbacks,
    ):
        app.include_router(module.router, dependencies=[Depends(authenticate)], responses=REFUSALS)
    app.include_router(callbacks.public_router)
    # The operators' console: its own sign-in (cookie sessions), not the API's bearer tokens.
    mount_console(app)
    app.add_middleware(RefuseControlCharactersMiddleware)
    app.add_middleware(RequestContextMiddleware)
    _add_health(app)
    add_exception_handlers(app)

    return app


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
