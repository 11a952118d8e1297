"""Callbacks to the PBMS over the API: a program's callback URL (administrators), the state of
an envelope's callbacks (administrators, or a client granted its program), the parked ones,
an operator's re-send, and the public key set that verifies every callback's signature."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from g2p_bridge.api.access import envelope_programs
from g2p_bridge.api.g2p_connect import Caller, G2PRoute, UnitOfWork
from g2p_bridge.api.wire import json_response
from g2p_bridge.auth import Principal
from g2p_bridge.core import callbacks
from g2p_bridge.core.errors import ErrorCode, Forbidden
from g2p_bridge.models import CallbackEvent, CallbackStream
from g2p_bridge.schemas import SAFE_ID_PATTERN
from g2p_bridge.signing import SigningConfigurationError, load_signer

router = APIRouter(tags=["callbacks"], route_class=G2PRoute)
# Served without a token: a PBMS fetches it to verify callbacks, it holds only public keys.
public_router = APIRouter(tags=["callbacks"])

EnvelopeId = Annotated[str, Path(max_length=64, pattern=SAFE_ID_PATTERN)]
Mnemonic = Annotated[str, Path(max_length=64, pattern=SAFE_ID_PATTERN)]


class CallbackUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    callback_url: str | None = Field(default=None, max_length=2048)


class CallbackUrlView(BaseModel):
    benefit_program_mnemonic: str
    callback_url: str | None


class Resend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_sequence: int | None = Field(default=None, ge=1, le=2**31 - 1)


class EventView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    event_id: str = Field(validation_alias="id")
    sequence: int
    event_type: str
    result_count: int
    created_at: datetime
    attempts: int
    last_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None


class StreamView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    disbursement_envelope_id: str = Field(validation_alias="id")
    state: str
    last_sequence: int
    delivered_sequence: int
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    summary_written: bool


class StreamStatus(StreamView):
    events: list[EventView] = []


def _stream(stream: CallbackStream, events: list[CallbackEvent] | None = None) -> StreamStatus:
    view = StreamStatus.model_validate(stream)
    view.events = [EventView.model_validate(e) for e in events or []]
    return view


def _may_read(principal: Principal, session: Session, envelope_id: str) -> None:
    if principal.is_admin:
        return
    outside = envelope_programs(session, [envelope_id]) - principal.programs
    if outside:
        raise Forbidden(
            ErrorCode.ACCESS_DENIED,
            f"client {principal.client_id!r} is not granted program(s) {', '.join(outside)}",
        )


@router.put("/programs/{mnemonic}/callback", response_model=CallbackUrlView)
def set_program_callback(
    mnemonic: Mnemonic, body: CallbackUrl, request: Request, principal: Caller, session: UnitOfWork
) -> CallbackUrlView:
    """Sets the program's callback URL; ``{"callback_url": null}`` removes it."""
    principal.require_role("admin")
    settings = request.app.state.settings
    subscription = callbacks.set_callback_url(session, mnemonic, body.callback_url, settings)
    return CallbackUrlView(
        benefit_program_mnemonic=mnemonic,
        callback_url=subscription.url if subscription else None,
    )


@router.get("/callbacks/parked", response_model=list[StreamView])
def parked_callbacks(principal: Caller, session: UnitOfWork) -> list[StreamView]:
    """Envelopes whose callbacks kept failing and wait for an operator's re-send."""
    principal.require_role("admin")
    return [StreamView.model_validate(s) for s in callbacks.parked_streams(session)]


@router.get("/callbacks/{envelope_id}", response_model=StreamStatus)
def callback_status(
    envelope_id: EnvelopeId, principal: Caller, session: UnitOfWork
) -> StreamStatus:
    """The envelope's callbacks: how far delivery got, and the latest hundred events."""
    _may_read(principal, session, envelope_id)
    stream, events = callbacks.stream_status(session, envelope_id)
    return _stream(stream, events)


@router.post("/callbacks/{envelope_id}/resend", response_model=StreamView)
def resend_callbacks(
    envelope_id: EnvelopeId,
    principal: Caller,
    session: UnitOfWork,
    body: Resend | None = None,
) -> StreamView:
    """Makes a parked stream due again (fresh attempts), or with ``from_sequence`` sends the
    callbacks from that one on again."""
    principal.require_role("admin")
    stream = callbacks.resend(session, envelope_id, body.from_sequence if body else None)
    return StreamView.model_validate(stream)


@public_router.get("/.well-known/jwks.json")
def jwks(request: Request) -> Response:
    """The public keys that verify the ``X-JWS-Signature`` of every callback."""
    signer = getattr(request.app.state, "callback_signer", None)
    if signer is None:
        try:
            signer = load_signer(request.app.state.settings)
        except SigningConfigurationError:
            # No signing key configured: this bridge signs nothing, so it publishes no key (a
            # subscribed program's callbacks fail and park, visibly, until a key is set).
            return json_response({"keys": []})
        request.app.state.callback_signer = signer
    return json_response(signer.jwks())
