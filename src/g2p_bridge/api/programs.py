"""Benefit program configuration endpoints (administrators only): the reference's create, plus
read, update, list."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from g2p_bridge.api.access import guarded
from g2p_bridge.api.handling import handle, settings_of
from g2p_bridge.api.security import principal_of
from g2p_bridge.api.wire import (
    check_strings,
    json_response,
    parse_json,
    read_body,
    request_body,
    success_header,
    validate,
)
from g2p_bridge.core import audit, programs
from g2p_bridge.schemas import ProgramPayload, ProgramRequest, ProgramResponse

router = APIRouter(tags=["programs"])
_program_request = TypeAdapter(ProgramRequest)
_program_payload = TypeAdapter(ProgramPayload)


def _dump(payload: ProgramPayload) -> dict[str, object]:
    return payload.model_dump(mode="json", exclude_none=True)


@router.post(
    "/create_benefit_program_configuration",
    response_model=ProgramResponse,
    openapi_extra=request_body(ProgramRequest),
)
async def create_benefit_program_configuration(request: Request) -> Response:
    def work(session: Session, req: ProgramRequest) -> ProgramResponse:
        program = programs.create_program(session, req.message)
        payload = programs.program_payload(program)
        audit.record(
            session, "program.create", "program", program.mnemonic, detail={"after": _dump(payload)}
        )
        return ProgramResponse(header=success_header(req.header, 1), message=payload)

    response, _ = await handle(
        request,
        _program_request,
        work,
        replayable=True,
        roles=("admin",),
        max_bytes=settings_of(request).max_program_request_bytes,
    )
    return response


@router.get("/programs", response_model=list[ProgramPayload])
async def list_programs(request: Request) -> Response:
    def run(session: Session) -> list[dict[str, object]]:
        principal_of(request).require_role("admin")
        return [
            programs.program_payload(p).model_dump(mode="json")
            for p in programs.list_programs(session)
        ]

    return await guarded(request, "programs", run, json_response)


@router.get("/programs/{mnemonic}", response_model=ProgramPayload)
async def get_program(request: Request, mnemonic: str) -> Response:
    def run(session: Session) -> ProgramPayload:
        principal_of(request).require_role("admin")
        return programs.program_payload(programs.get_program(session, mnemonic))

    return await guarded(request, "programs/read", run, json_response)


@router.put(
    "/programs/{mnemonic}",
    response_model=ProgramPayload,
    openapi_extra=request_body(ProgramPayload),
)
async def update_program(request: Request, mnemonic: str) -> Response:
    settings = settings_of(request)
    data = parse_json(await read_body(request, settings.max_program_request_bytes))
    check_strings(data, settings.max_string_length)
    payload = validate(data, _program_payload)

    def run(session: Session) -> ProgramPayload:
        principal_of(request).require_role("admin")
        before = _dump(programs.program_payload(programs.get_program(session, mnemonic)))
        after = programs.program_payload(programs.update_program(session, mnemonic, payload))
        audit.record(
            session,
            "program.update",
            "program",
            mnemonic,
            detail={"before": before, "after": _dump(after)},
        )
        return after

    return await guarded(request, "programs/update", run, json_response)
