"""Statement endpoints: the bank's MT940 upload and the operators' look-up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from g2p_bridge.api import upload
from g2p_bridge.api.access import guarded
from g2p_bridge.api.handling import session_factory, settings_of, wake
from g2p_bridge.api.security import principal_of, record_refusal
from g2p_bridge.api.wire import json_response, refusal
from g2p_bridge.core import audit, statements
from g2p_bridge.core.errors import BridgeError, ErrorCode, Forbidden
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


@router.post(
    "/upload_mt940", response_model=AccountStatementResponse, openapi_extra=upload.OPENAPI_BODY
)
async def upload_mt940(request: Request) -> Response:
    # No body parameter: the router's authentication has run and no byte of the body has been
    # read. The role is checked before reading it, then it is read bounded (api/upload.py).
    limit = settings_of(request).max_statement_bytes
    principal = principal_of(request)
    factory = session_factory(request)
    hint = {"action": "upload_mt940"}
    try:
        principal.require_role("bank")
        if not principal.is_admin and not principal.bank_codes:
            # It could be granted no account at all: not worth reading its file.
            raise Forbidden(
                ErrorCode.ACCESS_DENIED, f"client {principal.client_id!r} holds no bank codes"
            )
        received = await upload.read_statement_upload(request, limit)

        def run() -> str:
            with transaction(factory) as session:
                # Processing is asynchronous; the accounts the file names are checked now, and
                # again before anything of it is applied.
                statement = statements.store_statement(
                    session, received.content, received.filename, principal, limit
                )
                audit.record(
                    session,
                    "statement.upload",
                    "statement",
                    statement.id,
                    detail={
                        "filename": received.filename,
                        "size_bytes": len(received.content),
                        "accounts": statement.account_number,
                    },
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


def _operator_route(action: str, apply: Callable[[Session, str, str | None], None]) -> Any:
    """An administrator's action on one statement (core/statements.py says what each does);
    audited there, in the action's transaction."""

    async def route(
        request: Request,
        statement_id: str,
        reason: str | None = Query(None, max_length=512, description="recorded with the action"),
    ) -> Response:
        principal = principal_of(request)

        def run(session: Session) -> StatementPayload:
            principal.require_role("admin")
            apply(session, statement_id, reason)
            session.flush()
            return statements.statement_payload(
                session, statements.get_statement(session, statement_id)
            )

        response = await guarded(request, f"statements/{action}", run, json_response)
        if response.status_code == 200 and action != "park":
            wake(request, "statement_uploaded", statement_id)
        return response

    route.__name__ = f"{action}_statement"
    return route


router.add_api_route(
    "/statements/{statement_id}/park",
    _operator_route("park", statements.park_statement),
    methods=["POST"],
    response_model=StatementPayload,
    summary="Park a waiting statement in ERROR (admin)",
)
router.add_api_route(
    "/statements/{statement_id}/retry",
    _operator_route("retry", statements.retry_statement),
    methods=["POST"],
    response_model=StatementPayload,
    summary="Queue a statement in ERROR again (admin)",
)
router.add_api_route(
    "/statements/{statement_id}/reprocess",
    _operator_route("reprocess", statements.reprocess_statement),
    methods=["POST"],
    response_model=StatementPayload,
    summary="Apply a PROCESSED or ERROR statement again (admin)",
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
