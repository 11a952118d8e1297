"""The one way a G2P Connect request is handled: read, validate, run a domain function in one
transaction, answer; replays of a (sender, message_id) get the first answer back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, TypeAdapter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.api.wire import header_hint, parse_json, read_body, refusal, validate
from g2p_bridge.core.errors import BridgeError
from g2p_bridge.db import transaction
from g2p_bridge.models import ProcessedRequest
from g2p_bridge.schemas import Request as G2PRequest
from g2p_bridge.settings import Settings

R = TypeVar("R", bound=G2PRequest[Any])


def session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


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
) -> tuple[Response, R | None]:
    settings = settings_of(request)
    raw = await read_body(request, settings.max_request_bytes)
    data = parse_json(raw)
    hint = header_hint(data)
    try:
        g2p_request = validate(data, adapter)
    except BridgeError as error:
        return refusal(error, hint), None
    hint = {
        "message_id": g2p_request.header.message_id,
        "action": g2p_request.header.action,
        "sender_id": g2p_request.header.sender_id,
    }
    factory = session_factory(request)

    def run() -> bytes:
        header = g2p_request.header
        key = (header.sender_id, header.message_id)
        with transaction(factory) as session:
            if replayable:
                stored = session.get(ProcessedRequest, key)
                if stored is not None:
                    return stored.response
            answer = work(session, g2p_request).model_dump_json().encode()
            if replayable:
                session.add(
                    ProcessedRequest(
                        sender_id=key[0], message_id=key[1], action=header.action, response=answer
                    )
                )
        return answer

    try:
        try:
            answer = await run_in_threadpool(run)
        except IntegrityError:
            # Two copies of one request raced; the loser answers with what the winner stored.
            answer = await run_in_threadpool(run)
    except BridgeError as error:
        message = on_refusal(error, g2p_request) if on_refusal else None
        return refusal(error, hint, message), None
    return Response(content=answer, media_type="application/json"), g2p_request
