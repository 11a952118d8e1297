"""Test-only fault injection for the Example Bank's HTTP API.

The bridge's fault tests (``tests/test_processes_e2e.py``) need a bank that answers slowly, fails
with a 5xx, or drops the connection after it did the work, so they can show each disbursement is
still paid once. ``EXAMPLE_BANK_FAULT_MODE`` turns it on; it is off by default, logs a WARNING
when the API starts, and every injected fault is logged and counted (``GET /faults``).

Which calls get the fault is deterministic: per path, the 1st, (every+1)th, (2*every+1)th... call
until ``fault_calls`` faults were injected; every other call is served normally.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from example_bank.settings import BankSettings

log = logging.getLogger(__name__)

MODES = ("slow", "error-5xx", "close-after-processing")


class FaultPlan:
    """Which calls fail and how; counts what it saw and what it did."""

    def __init__(self, settings: BankSettings) -> None:
        if settings.fault_mode not in MODES:
            raise ValueError(f"fault_mode must be one of {MODES}")
        self.mode: str = settings.fault_mode
        self.paths = frozenset(settings.fault_paths)
        self.calls = settings.fault_calls
        self.every = settings.fault_every
        self.delay = settings.fault_delay_seconds
        self.seen: dict[str, int] = dict.fromkeys(sorted(self.paths), 0)
        self.injected: dict[str, int] = dict.fromkeys(sorted(self.paths), 0)

    def hit(self, path: str) -> bool:
        """Counts a call to ``path``; True when this call gets the fault. Runs on the event
        loop only, so the counters need no lock."""
        number = self.seen[path]
        self.seen[path] = number + 1
        if self.injected[path] >= self.calls or number % self.every:
            return False
        self.injected[path] += 1
        return True

    def report(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "every": self.every,
            "max_faults_per_path": self.calls,
            "delay_seconds": self.delay,
            "calls": dict(self.seen),
            "injected": dict(self.injected),
        }


class FaultInjector:
    """ASGI middleware that applies a :class:`FaultPlan` to POSTs on the planned paths."""

    def __init__(self, app: ASGIApp, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or path not in self.plan.paths
            or not self.plan.hit(path)
        ):
            await self.app(scope, receive, send)
            return
        mode = self.plan.mode
        log.warning("injected fault %s on POST %s", mode, path)
        if mode == "error-5xx":
            # Refused before any work: nothing of the request is stored.
            body = json.dumps(
                {"status": "failure", "error_message": "injected fault: service unavailable"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        # The other two modes do the work (the endpoint commits) and only then misbehave.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        if mode == "slow":
            await asyncio.sleep(self.plan.delay)
            for message in held:
                await send(message)
            return
        await _drop_connection(receive, send)


async def _drop_connection(receive: Receive, send: Send) -> None:
    """Closes the client's connection without a byte of answer.

    ASGI has no message for that, so this reaches for the server's transport (uvicorn's request
    cycle exposes it on its ``receive``). Elsewhere it falls back to what every ASGI server does
    when an app fails after starting its answer: the connection is closed with the status line
    sent and the body missing, which a client cannot read either."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "close"):
        transport.close()
        # Wait for the server to notice, so it does not try to answer on the closed socket.
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"1024")],
        }
    )
    raise ConnectionAbortedError("injected fault: connection dropped after processing")


def install(app: FastAPI, settings: BankSettings) -> FaultPlan:
    """Wraps the app in the fault injector and adds ``GET /faults``."""
    plan = FaultPlan(settings)
    log.warning(
        "FAULT INJECTION IS ON (test only): %s on %s, %d fault(s) per path, one call in %d",
        plan.mode,
        ", ".join(sorted(plan.paths)),
        plan.calls,
        plan.every,
    )
    app.add_middleware(FaultInjector, plan=plan)

    @app.get("/faults", include_in_schema=False)
    def faults() -> dict[str, Any]:
        return plan.report()

    return plan
