"""The one way a G2P Connect request is handled: read, validate, run a domain function in one
transaction, answer; replays of a (sender, message_id) get the first answer back."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, TypeAdapter
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.api.security import principal_of, record_refusal
from g2p_bridge.api.wire import (
    check_strings,
    echo_items,
    header_hint,
    parse_json,
    read_body,
    refusal,
    validate,
)
from g2p_bridge.core.errors import (
    BridgeError,
    Conflict,
    ErrorCode,
    Forbidden,
    InvalidRequest,
    ServiceUnavailable,
)
from g2p_bridge.db import is_database_outage, transaction
from g2p_bridge.models import ProcessedRequest
from g2p_bridge.observability import request_id_var
from g2p_bridge.schemas import Request as G2PRequest
from g2p_bridge.settings import Settings

log = logging.getLogger(__name__)

R = TypeVar("R", bound=G2PRequest[Any])


def session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


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


def wake(request: Request, reason: str, *args: str) -> None:
    """Tells the workers there is new work, after the commit that made it visible."""
    request.app.state.wake(reason, *args)


async def handle(
    request: Request,
    adapter: TypeAdapter[R],
    work: Callable[[Session, R], BaseModel],
    *,
    replayable: bool,
    on_refusal: Callable[[BridgeError, R], Any] | None = None,
    roles: tuple[str, ...] = ("pbms",),
    programs_of: Callable[[Session, R], set[str]] | None = None,
    max_bytes: int | None = None,
    bulk: bool = False,
) -> tuple[Response, R | None]:
    """``roles`` may call this at all; ``programs_of`` names the programs the request touches,
    looked up in the request's transaction, which a PBMS client must all be granted. A
    ``bulk`` request, once its body has arrived, waits for one of the process's bulk slots
    before parsing it: a slow sender holds no slot."""
    raw = await read_body(request, max_bytes or settings_of(request).max_request_bytes)
    if bulk:
        async with request.app.state.bulk_slots:
            return await _handle(
                request, raw, adapter, work, replayable, on_refusal, roles, programs_of
            )
    return await _handle(request, raw, adapter, work, replayable, on_refusal, roles, programs_of)


async def _handle(
    request: Request,
    raw: bytes,
    adapter: TypeAdapter[R],
    work: Callable[[Session, R], BaseModel],
    replayable: bool,
    on_refusal: Callable[[BridgeError, R], Any] | None,
    roles: tuple[str, ...],
    programs_of: Callable[[Session, R], set[str]] | None,
) -> tuple[Response, R | None]:
    settings = settings_of(request)
    principal = principal_of(request)
    action = request.url.path.strip("/")
    data = parse_json(raw)
    hint = header_hint(data)
    try:
        check_strings(data, settings.max_string_length)
        g2p_request = validate(data, adapter)
        check_total_count(g2p_request)
    except BridgeError as error:
        return refusal(error, hint, echo_items(data, error)), None
    hint = {
        "message_id": g2p_request.header.message_id,
        "action": g2p_request.header.action,
        "sender_id": g2p_request.header.sender_id,
    }
    factory = session_factory(request)
    try:
        if g2p_request.header.sender_id != principal.client_id:
            raise Forbidden(
                ErrorCode.SENDER_MISMATCH,
                f"header sender_id {g2p_request.header.sender_id!r} is not the authenticated "
                f"client {principal.client_id!r}",
            )
        principal.require_role(*roles)
    except Forbidden as error:
        await run_in_threadpool(record_refusal, factory, principal, action, error)
        return refusal(error, hint), None

    digest = request_digest(action, data)

    def run() -> bytes:
        header = g2p_request.header
        key = (header.sender_id, action, header.message_id)
        with transaction(factory) as session:
            if programs_of is not None:
                principal.require_programs(programs_of(session, g2p_request))
            if not replayable:
                return work(session, g2p_request).model_dump_json().encode()
            stored = session.get(ProcessedRequest, key)
            if stored is not None:
                return replayed_answer(stored, digest)
            # Claimed before the work: a concurrent copy of this request waits on this row's
            # key until we commit, then answers with what we stored (the IntegrityError below).
            claim = ProcessedRequest(
                sender_id=key[0],
                action=key[1],
                message_id=key[2],
                request_sha256=digest,
                response=b"",
            )
            session.add(claim)
            session.flush()
            answer = work(session, g2p_request).model_dump_json().encode()
            claim.response = answer
        return answer

    try:
        try:
            answer = await run_in_threadpool(run)
        except IntegrityError:
            # Two copies of one request raced; the loser answers with what the winner stored.
            answer = await run_in_threadpool(run)
    except Forbidden as error:
        await run_in_threadpool(record_refusal, factory, principal, action, error)
        return refusal(error, hint), None
    except BridgeError as error:
        message = on_refusal(error, g2p_request) if on_refusal else None
        return refusal(error, hint, message), None
    except SQLAlchemyError as exc:
        # Also the second attempt after an IntegrityError, when the database went away between.
        if not is_database_outage(exc):
            raise
        return database_unavailable(exc, hint), None
    return Response(content=answer, media_type="application/json"), g2p_request


def check_total_count(g2p_request: G2PRequest[Any]) -> None:
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
    canonical = json.dumps(
        [action, message], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


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
