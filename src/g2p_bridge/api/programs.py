"""Benefit program configuration endpoints (administrators only): the reference's create, plus
read, update, list."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy.orm import Session

from g2p_bridge.api.g2p_connect import AdminCall, Caller, ProgramRoute, UnitOfWork
from g2p_bridge.api.wire import success_header
from g2p_bridge.core import audit, programs
from g2p_bridge.schemas import ProgramPayload, ProgramRequest, ProgramResponse, ProgramView

router = APIRouter(tags=["programs"], route_class=ProgramRoute)


def _dump(payload: ProgramView) -> dict[str, object]:
    return payload.model_dump(mode="json", exclude_none=True)


@router.post("/create_benefit_program_configuration", response_model=ProgramResponse)
def create_benefit_program_configuration(req: ProgramRequest, call: AdminCall) -> Response:
    def work(session: Session) -> ProgramResponse:
        program = programs.create_program(session, req.message)
        payload = ProgramView.model_validate(program)
        audit.record(
            session, "program.create", "program", program.mnemonic, detail={"after": _dump(payload)}
        )
        return ProgramResponse(header=success_header(req.header, 1), message=payload)

    return call.answer(req, work)


@router.get("/programs", response_model=list[ProgramView])
def list_programs(principal: Caller, session: UnitOfWork) -> list[ProgramView]:
    principal.require_role("admin")
    return [ProgramView.model_validate(p) for p in programs.list_programs(session)]


@router.get("/programs/{mnemonic}", response_model=ProgramView)
def get_program(mnemonic: str, principal: Caller, session: UnitOfWork) -> ProgramView:
    principal.require_role("admin")
    return ProgramView.model_validate(programs.get_program(session, mnemonic))


@router.put("/programs/{mnemonic}", response_model=ProgramView)
def update_program(
    mnemonic: str, payload: ProgramPayload, principal: Caller, session: UnitOfWork
) -> ProgramView:
    principal.require_role("admin")
    before = _dump(ProgramView.model_validate(programs.get_program(session, mnemonic)))
    after = ProgramView.model_validate(programs.update_program(session, mnemonic, payload))
    audit.record(
        session,
        "program.update",
        "program",
        mnemonic,
        detail={"before": before, "after": _dump(after)},
    )
    return after
