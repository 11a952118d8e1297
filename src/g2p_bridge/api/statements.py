"""Statement endpoints: the bank's MT940 upload and the operators' look-up."""

from __future__ import annotations

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import func, select

from g2p_bridge.api.handling import session_factory, settings_of, wake
from g2p_bridge.api.wire import json_response, refusal
from g2p_bridge.core import statements
from g2p_bridge.core.errors import BridgeError, ErrorCode, PayloadTooLarge
from g2p_bridge.db import transaction
from g2p_bridge.models import AccountStatement
from g2p_bridge.schemas import (
    AccountStatementResponse,
    Page,
    ResponseHeader,
    StatementPayload,
    Status,
)

router = APIRouter(tags=["statements"])


@router.post("/upload_mt940", response_model=AccountStatementResponse)
async def upload_mt940(request: Request, statement_file: UploadFile = File(...)) -> Response:
    limit = settings_of(request).max_statement_bytes
    hint = {"action": "upload_mt940"}
    try:
        if statement_file.size is not None and statement_file.size > limit:
            raise PayloadTooLarge(
                ErrorCode.STATEMENT_TOO_LARGE, f"statement is over the {limit}-byte limit"
            )
        content = await statement_file.read(limit + 1)

        def run() -> str:
            with transaction(session_factory(request)) as session:
                return statements.store_statement(
                    session, content, statement_file.filename, None, limit
                ).id

        statement_id = await run_in_threadpool(run)
    except BridgeError as error:
        return refusal(error, hint)
    wake(request, "statement_uploaded", statement_id)
    return json_response(
        AccountStatementResponse(
            header=ResponseHeader(message_id="", action="upload_mt940", status=Status.SUCCESS),
            message={"statement_id": statement_id},
            statement_id=statement_id,
        )
    )


@router.get("/statements/{statement_id}", response_model=StatementPayload)
async def get_statement(request: Request, statement_id: str) -> Response:
    def run() -> StatementPayload:
        with transaction(session_factory(request)) as session:
            statement = statements.get_statement(session, statement_id)
            return statements.statement_payload(session, statement)

    return json_response(await run_in_threadpool(run))


@router.get("/statements", response_model=Page[StatementPayload])
async def list_statements(
    request: Request, offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)
) -> Response:
    def run() -> Page[StatementPayload]:
        with transaction(session_factory(request)) as session:
            total = session.scalar(select(func.count()).select_from(AccountStatement)) or 0
            rows = session.scalars(
                select(AccountStatement)
                .order_by(AccountStatement.uploaded_at.desc(), AccountStatement.id)
                .offset(offset)
                .limit(limit)
            )
            items = [statements.statement_payload(session, r, error_limit=0) for r in rows]
        return Page[StatementPayload](items=items, total=total, offset=offset, limit=limit)

    return json_response(await run_in_threadpool(run))
