"""G2P Connect on FastAPI's own extension points: every route of the API is a ``G2PRoute``.

A route with a JSON body gets, before FastAPI sees the body: the caller authenticated, the body
read under a byte cap (413 on ``Content-Length`` and on the stream), a bulk slot for the routes
that ask for one (``BulkRoute``, taken once the body has arrived), and the body parsed by
``G2PConnectRequest.json`` (numbers as exact ``Decimal``, strings checked for control characters
and length). FastAPI then validates it against the route's typed body parameter; its validation
errors become the reference's ``rjct`` with per-field codes. ``G2PCall.answer`` runs the route's
work in one transaction with replay by (sender, route, message id), commits, wakes the workers
and answers. One exception handler renders every ``BridgeError`` (and a database outage) as a
G2P Connect refusal, auditing authorization refusals."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from decimal import Decimal
from typing import Annotated, Any, Protocol, TypeVar

import orjson
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from g2p_bridge.api.security import authenticate, record_refusal
from g2p_bridge.api.wire import (
    check_strings,
    echo_items,
    header_hint,
    parse_json,
    refusal,
    refusal_of,
)
from g2p_bridge.auth import Principal
from g2p_bridge.core.errors import (
    BridgeError,
    Conflict,
    ErrorCode,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
)
from g2p_bridge.db import is_database_outage, transaction
from g2p_bridge.models import ProcessedRequest
from g2p_bridge.observability import request_id_var
from g2p_bridge.schemas import RequestHeader
from g2p_bridge.settings import Settings

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)
E = TypeVar("E", bound=Callable[..., Any])
# A route's lean path (see ``lean``): the answer, or None to take the full path.
LeanHandler = Callable[[Request, Any], Awaitable[Response | None]]


class G2PMessage(Protocol):
    """A validated G2P Connect request: the schema's model, or a lean path's tuple."""

    @property
    def header(self) -> RequestHeader: ...
    @property
    def message(self) -> Any: ...


def lean(handler: LeanHandler) -> Callable[[E], E]:
    """Gives a route a lean path: ``handler(request, data)`` runs once the body is parsed, in
    place of the string guard, FastAPI's validation and the endpoint; when it answers None the
    request takes that full path after all. The route's typed body parameter still makes its
    OpenAPI document. (Put it under the route's decorator: the route reads it when made.)"""

    def attach(endpoint: E) -> E:
        setattr(endpoint, "g2p_lean", handler)  # noqa: B010
        return endpoint

    return attach


class G2PConnectRequest(Request):
    """A request whose body is read at most ``limit`` bytes and parsed the G2P Connect way."""

    limit = 0

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.limit:
                raise _too_large(self.limit)
            chunks = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > self.limit:
                    raise _too_large(self.limit)
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(ErrorCode.REQUEST_TOO_LARGE, f"request body over {limit} bytes")


def _as_json(scope: Scope) -> Scope:
    """A G2P Connect body is JSON whatever ``Content-Type`` says (or if it says nothing), so
    FastAPI is told so and always asks ``json()`` for it."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def audit_action(path: str, methods: Iterable[str]) -> str:
    """The name a route's refusals are audited under: its path without parameters, and
    ``read``/``update`` for a route on one item (``/programs/{mnemonic}``: ``programs/read``)."""
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    if path.endswith("}"):
        parts.append("update" if "PUT" in methods else "read")
    return "/".join(parts)


class G2PRoute(APIRoute):
    """The route class of every router of the API (see the module docstring)."""

    bulk = False
    limit_setting = "max_request_bytes"

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        action = audit_action(self.path, self.methods or ())
        lean_handler: LeanHandler | None = getattr(self.endpoint, "g2p_lean", None)
        if self.body_field is None:

            async def without_body(request: Request) -> Response:
                request.state.g2p_action = action
                return await handle(request)

            return without_body

        async def with_body(request: Request) -> Response:
            request.state.g2p_action = action
            # Who calls, before a byte of the body is read.
            await authenticate(request)
            settings: Settings = request.app.state.settings
            g2p = G2PConnectRequest(_as_json(request.scope), request.receive)
            g2p.limit = getattr(settings, self.limit_setting)
            await g2p.body()
            if self.bulk:
                async with request.app.state.bulk_slots:
                    return await _validated(handle, g2p, settings, lean_handler)
            return await _validated(handle, g2p, settings, lean_handler)

        return with_body


class BulkRoute(G2PRoute):
    """A route whose requests may be large: parsed and run holding one of the process's bulk
    slots (``max_concurrent_bulk_requests``), taken once the body has arrived."""

    bulk = True


class ProgramRoute(G2PRoute):
    limit_setting = "max_program_request_bytes"


async def _validated(
    handle: Callable[[Request], Coroutine[Any, Any, Response]],
    request: G2PConnectRequest,
    settings: Settings,
    lean_handler: LeanHandler | None = None,
) -> Response:
    data = await request.json()
    state = request.state
    state.g2p_data = data
    state.g2p_hint = header_hint(data)
    state.g2p_echo = lambda error: echo_items(data, error)
    if lean_handler is not None:
        answer = await lean_handler(request, data)
        if answer is not None:
            return answer
    check_strings(data, settings.max_string_length)
    try:
        return await handle(request)
    except RequestValidationError as exc:
        # FastAPI validated the body against the typed parameter: the same refusal as ours.
        errors = [{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in exc.errors()]
        raise refusal_of(errors) from exc


class G2PCall:
    """One G2P Connect request being answered, by callers of ``roles``."""

    def __init__(self, request: Request, roles: tuple[str, ...]) -> None:
        self.request = request
        self.roles = roles
        self.settings: Settings = request.app.state.settings
        self.principal: Principal = request.state.principal

    @classmethod
    def of(cls, *roles: str) -> Callable[[Request], G2PCall]:
        def dependency(request: Request) -> G2PCall:
            return cls(request, roles)

        return dependency

    def answer(
        self,
        g2p_request: G2PMessage,
        work: Callable[[Session], BaseModel | bytes],
        *,
        programs: Callable[[Session], set[str]] | None = None,
        replayable: bool = True,
        wake: str | None = None,
        echo: Callable[[BridgeError], list[Any] | None] | None = None,
    ) -> Response:
        """Checks the header (count, sender, role), then in one transaction: the ``programs``
        the request touches against the caller's grants, the replay of an earlier request
        with this message id, ``work`` (its answer, or the answer's JSON); commits, wakes the
        workers with ``wake`` and answers. ``echo``: the items of a refused list message, for
        a request whose message is not the schema's models (a lean path's)."""
        state = self.request.state
        check_total_count(g2p_request)
        header = g2p_request.header
        state.g2p_hint = {
            "message_id": header.message_id,
            "action": header.action,
            "sender_id": header.sender_id,
        }
        if header.sender_id != self.principal.client_id:
            raise Forbidden(
                ErrorCode.SENDER_MISMATCH,
                f"header sender_id {header.sender_id!r} is not the authenticated "
                f"client {self.principal.client_id!r}",
            )
        self.principal.require_role(*self.roles)
        state.g2p_echo = echo or (lambda error: echo_validated(g2p_request, error))
        action = self.request.url.path.strip("/")
        key = (header.sender_id, action, header.message_id)
        digest = request_digest(action, state.g2p_data)
        factory: sessionmaker[Session] = self.request.app.state.session_factory

        def run() -> bytes:
            with transaction(factory) as session:
                if programs is not None:
                    self.principal.require_programs(programs(session))
                if not replayable:
                    return _encoded(work(session))
                stored = session.get(ProcessedRequest, key)
                if stored is not None:
                    return replayed_answer(stored, digest)
                # Claimed before the work: a concurrent copy of this request waits on this
                # row's key until we commit, then answers with what we stored (below).
                claim = ProcessedRequest(
                    sender_id=key[0],
                    action=key[1],
                    message_id=key[2],
                    request_sha256=digest,
                    response=b"",
                )
                session.add(claim)
                session.flush()
                answer = _encoded(work(session))
                claim.response = answer
            return answer

        try:
            answer = run()
        except IntegrityError:
            # Two copies of one request raced; the loser answers with what the winner stored.
            answer = run()
        if wake is not None:
            self.request.app.state.wake(wake)
        return Response(content=answer, media_type="application/json")


def _encoded(answer: BaseModel | bytes) -> bytes:
    return answer if isinstance(answer, bytes) else answer.model_dump_json().encode()


def echo_validated(g2p_request: G2PMessage, error: BridgeError) -> list[Any] | None:
    """A list message refused by the domain: its items, each with its own codes."""
    items = g2p_request.message
    if isinstance(error, Forbidden) or not isinstance(items, list):
        return None
    if not all(isinstance(item, BaseModel) for item in items):
        return None
    return [
        item.model_copy(
            update={"response_error_codes": error.item_errors.get(str(i), [])}
        ).model_dump(mode="json", exclude_none=True)
        for i, item in enumerate(items)
    ]


PbmsCall = Annotated[G2PCall, Depends(G2PCall.of("pbms"))]
AdminCall = Annotated[G2PCall, Depends(G2PCall.of("admin"))]


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def _unit_of_work(request: Request) -> Iterator[Session]:
    with transaction(request.app.state.session_factory) as session:
        yield session


# An operator route's caller (authenticated by the router) and its transaction, committed when
# the route returns and before it answers; rolled back when it raises.
Caller = Annotated[Principal, Depends(_principal)]
UnitOfWork = Annotated[Session, Depends(_unit_of_work, scope="function")]


class _AfterCommit:
    """Work for after the route's transaction committed: FastAPI's background tasks run once
    the answer is out, and only for an answer the route returned (not for a refusal)."""

    def __init__(self, request: Request, tasks: BackgroundTasks) -> None:
        self.request = request
        self.tasks = tasks

    def wake(self, reason: str, *args: str) -> None:
        self.tasks.add_task(wake, self.request, reason, *args)


AfterCommit = Annotated[_AfterCommit, Depends(_AfterCommit)]


def wake(request: Request, reason: str, *args: str) -> None:
    """Tells the workers there is new work, after the commit that made it visible."""
    request.app.state.wake(reason, *args)


def check_total_count(g2p_request: G2PMessage) -> None:
    """The header's count is the message's: the number of items of a list message; 1 for a
    single message (0 is tolerated there, as some G2P Connect senders leave it unset)."""
    declared = g2p_request.header.total_count
    message = g2p_request.message
    if isinstance(message, list):
        if declared != len(message):
            raise InvalidRequest(
                ErrorCode.INVALID_TOTAL_COUNT,
                f"header.total_count is {declared} but the message holds {len(message)} items",
            )
    elif declared not in (0, 1):
        raise InvalidRequest(
            ErrorCode.INVALID_TOTAL_COUNT,
            f"header.total_count is {declared} but the message is a single item",
        )


def request_digest(action: str, data: Any) -> str:
    """What makes two requests under one message id the same request: the route and the
    message. The header is left out: a client that resends stamps a new ``message_ts``."""
    message = data.get("message") if isinstance(data, dict) else None
    return hashlib.sha256(canonical_json([action, message])).hexdigest()


def canonical_json(value: Any) -> bytes:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    default=str)`` in UTF-8, the digest's form since the first release (digests stored then
    must still match), written by orjson: the same bytes for what ``wire.parse_json`` gives
    (tests/bridge/test_lean_ingest.py), at a fifth of the cost. What orjson does not take (an
    integer over 64 bits, a lone surrogate, deep nesting) is written by json itself."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=_as_text)
    except TypeError:  # orjson.JSONEncodeError is one
        canonical = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        return canonical.encode()


def _as_text(value: Any) -> str:
    # json's default=str; orjson asks only for what it cannot write itself (a Decimal here).
    if not isinstance(value, Decimal):
        raise TypeError(f"{type(value).__name__} is not JSON")
    return str(value)


def replayed_answer(stored: ProcessedRequest, digest: str) -> bytes:
    """The first answer again, for the same request; a different request under a message id
    this sender already used for this action is refused, and nothing of it is stored."""
    if stored.request_sha256 is not None and stored.request_sha256 != digest:
        raise Conflict(
            ErrorCode.MESSAGE_ID_DUPLICATE,
            f"message_id {stored.message_id!r} was already used by this sender for a different "
            f"{stored.action} request; send a new request with a new message_id",
        )
    return stored.response


def database_unavailable(exc: Exception, hint: dict[str, Any]) -> Response:
    """The 503 ``rjct`` for a request that met the database away; the client sends the same
    request (same ``message_id``) again after ``Retry-After`` seconds. Logs only the kind of
    failure: the exception's text can hold the statement's parameters (personal data)."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    log.warning(
        "database unavailable (%s%s%s); answered 503 to request %s",
        type(exc).__name__,
        f" / {type(orig).__name__}" if orig is not None else "",
        f", sqlstate {sqlstate}" if sqlstate else "",
        request_id_var.get() or "-",
    )
    error = ServiceUnavailable(
        ErrorCode.SERVICE_UNAVAILABLE,
        "the database is unavailable; send the same request again in a few seconds",
    )
    return refusal(error, hint)


async def render_refusal(request: Request, error: BridgeError) -> Response:
    """The one renderer of the domain's refusals: a G2P Connect ``rjct`` echoing what could be
    read of the request's header (and, for a list message, its items with their codes); an
    authorization refusal is audited first, in its own transaction."""
    state = request.state
    action = getattr(state, "g2p_action", "")
    hint = getattr(state, "g2p_hint", None)
    if isinstance(error, Forbidden):
        principal = getattr(state, "principal", None)
        if principal is not None:
            factory = request.app.state.session_factory
            await run_in_threadpool(record_refusal, factory, principal, action, error)
        return refusal(error, hint or {"action": action})
    echo = getattr(state, "g2p_echo", None)
    return refusal(error, hint or {}, echo(error) if echo is not None else None)


async def _database_error(request: Request, exc: Exception) -> Response:
    # The database away (stopped, restarting): a 503 rjct with Retry-After, not a 500.
    # Anything else (an IntegrityError that got this far, a programming error) stays a 500.
    if not is_database_outage(exc):
        raise exc
    return database_unavailable(exc, getattr(request.state, "g2p_hint", None) or {})


async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
    """A path or query parameter FastAPI refused (bodies are refused in ``_validated``)."""
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "request"
        parts.append(f"{where}: {error.get('msg')}")
    return refusal(InvalidRequest(ErrorCode.INVALID_REQUEST, "; ".join(parts)), {})


async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
    error = BridgeError(ErrorCode.INVALID_REQUEST, str(exc.detail))
    error.http_status = exc.status_code
    return refusal(error, {})


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BridgeError, render_refusal)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    # SQLAlchemyError covers OperationalError, InterfaceError, the pool's timeout and a
    # disconnect of any other kind.
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)


_RJCT = {"description": "G2P Connect rjct", "content": {"application/json": {}}}
# Every protected operation answers these too; said in the document for clients and fuzzers.
REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {**_RJCT, "description": "not authenticated"},
    403: {**_RJCT, "description": "not authorized"},
    413: {**_RJCT, "description": "request too large"},
    422: {**_RJCT, "description": "invalid request"},
    503: {**_RJCT, "description": "database unavailable; retry after a while"},
}
