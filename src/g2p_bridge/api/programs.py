"""Benefit program configuration endpoints: the reference's create, plus read, update, list."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from g2p_bridge.api.handling import handle, session_factory
from g2p_bridge.api.wire import (
    json_response,
    parse_json,
    read_body,
    request_body,
    success_header,
    validate,
)
from g2p_bridge.core import programs
from g2p_bridge.db import transaction
from g2p_bridge.schemas import ProgramPayload, ProgramRequest, ProgramResponse

router = APIRouter(tags=["programs"])
_program_request = TypeAdapter(ProgramRequest)
_program_payload = TypeAdapter(ProgramPayload)


@router.post(
    "/create_benefit_program_configuration",
    response_model=ProgramResponse,
    openapi_extra=request_body(ProgramRequest),
)
async def create_benefit_program_configuration(request: Request) -> Response:
    def work(session: Session, req: ProgramRequest) -> ProgramResponse:
        program = programs.create_program(session, req.message)
        return ProgramResponse(
            header=success_header(req.header, 1), message=programs.program_payload(program)
        )

    response, _ = await handle(request, _program_request, work, replayable=True)
    return response


@router.get("/programs", response_model=list[ProgramPayload])
async def list_programs(request: Request) -> Response:
    def run() -> list[dict[str, object]]:
        with transaction(session_factory(request)) as session:
            return [
                programs.program_payload(p).model_dump(mode="json")
                for p in programs.list_programs(session)
            ]

    return json_response(await run_in_threadpool(run))


@router.get("/programs/{mnemonic}", response_model=ProgramPayload)
async def get_program(request: Request, mnemonic: str) -> Response:
    def run() -> ProgramPayload:
        with transaction(session_factory(request)) as session:
            return programs.program_payload(programs.get_program(session, mnemonic))

    return json_response(await run_in_threadpool(run))


@router.put(
    "/programs/{mnemonic}",
    response_model=ProgramPayload,
    openapi_extra=request_body(ProgramPayload),
)
async def update_program(request: Request, mnemonic: str) -> Response:
    payload = validate(parse_json(await read_body(request, 1 << 16)), _program_payload)

    def run() -> ProgramPayload:
        with transaction(session_factory(request)) as session:
            return programs.program_payload(programs.update_program(session, mnemonic, payload))

    return json_response(await run_in_threadpool(run))
