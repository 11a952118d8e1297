"""Statement endpoints: the bank's MT940 upload and the operators' look-up."""

from __future__ import annotations

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from g2p_bridge.api.access import guarded, statement_bank_codes
from g2p_bridge.api.handling import session_factory, settings_of, wake
from g2p_bridge.api.security import principal_of, record_refusal
from g2p_bridge.api.wire import json_response, refusal
from g2p_bridge.core import audit, statements
from g2p_bridge.core.errors import BridgeError, ErrorCode, Forbidden, PayloadTooLarge
from g2p_bridge.db import transaction
from g2p_bridge.models import AccountStatement
from g2p_bridge.schemas import (
    INT32_MAX,
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
    principal = principal_of(request)
    factory = session_factory(request)
    hint = {"action": "upload_mt940"}
    try:
        principal.require_role("bank")
        if statement_file.size is not None and statement_file.size > limit:
            raise PayloadTooLarge(
                ErrorCode.STATEMENT_TOO_LARGE, f"statement is over the {limit}-byte limit"
            )
        content = await statement_file.read(limit + 1)
        filename = (statement_file.filename or "")[:256] or None

        def run() -> str:
            with transaction(factory) as session:
                # Processing is asynchronous; the accounts the file names are checked now.
                principal.require_bank_codes(statement_bank_codes(session, content))
                statement = statements.store_statement(
                    session, content, filename, principal.client_id, limit
                )
                audit.record(
                    session,
                    "statement.upload",
                    "statement",
                    statement.id,
                    detail={"filename": filename, "size_bytes": len(content)},
                )
                return statement.id

        statement_id = await run_in_threadpool(run)
    except Forbidden as error:
        await run_in_threadpool(record_refusal, factory, principal, "upload_mt940", error)
        return refusal(error, hint)
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
    principal = principal_of(request)

    def run(session: Session) -> StatementPayload:
        principal.require_role("bank")
        statement = statements.get_statement(session, statement_id)
        # A bank sees the statements it uploaded; administrators see all.
        if not principal.is_admin and statement.uploaded_by != principal.client_id:
            raise Forbidden(ErrorCode.ACCESS_DENIED, "another client uploaded this statement")
        return statements.statement_payload(session, statement)

    return await guarded(request, "statements/read", run, json_response)


@router.get("/statements", response_model=Page[StatementPayload])
async def list_statements(
    request: Request,
    offset: int = Query(0, ge=0, le=INT32_MAX),
    limit: int = Query(50, ge=1, le=500),
) -> Response:
    principal = principal_of(request)

    def run(session: Session) -> Page[StatementPayload]:
        principal.require_role("bank")
        query = select(AccountStatement)
        if not principal.is_admin:
            query = query.where(AccountStatement.uploaded_by == principal.client_id)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(
            query.order_by(AccountStatement.uploaded_at.desc(), AccountStatement.id)
            .offset(offset)
            .limit(limit)
        )
        items = [statements.statement_payload(session, r, error_limit=0) for r in rows]
        return Page[StatementPayload](items=items, total=total, offset=offset, limit=limit)

    return await guarded(request, "statements", run, json_response)
