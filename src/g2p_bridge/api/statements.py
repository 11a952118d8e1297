"""Statement endpoints: the bank's MT940 upload and the operators' look-up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from g2p_bridge.api import upload, views
from g2p_bridge.api.g2p_connect import AfterCommit, Caller, G2PRoute, UnitOfWork, wake
from g2p_bridge.api.wire import json_response
from g2p_bridge.core import audit, statements
from g2p_bridge.core.errors import ErrorCode, Forbidden
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

router = APIRouter(tags=["statements"], route_class=G2PRoute)


@router.post(
    "/upload_mt940", response_model=AccountStatementResponse, openapi_extra=upload.OPENAPI_BODY
)
async def upload_mt940(request: Request, principal: Caller) -> Response:
    # No body parameter: the router's authentication has run and no byte of the body has been
    # read. The role is checked before reading it, then it is read bounded (api/upload.py).
    request.state.g2p_hint = {"action": "upload_mt940"}
    limit = request.app.state.settings.max_statement_bytes
    principal.require_role("bank")
    if not principal.is_admin and not principal.bank_codes:
        # It could be granted no account at all: not worth reading its file.
        raise Forbidden(
            ErrorCode.ACCESS_DENIED, f"client {principal.client_id!r} holds no bank codes"
        )
    received = await upload.read_statement_upload(request, limit)
    factory = request.app.state.session_factory

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
    wake(request, "statement_uploaded", statement_id)
    return json_response(
        AccountStatementResponse(
            header=ResponseHeader(message_id="", action="upload_mt940", status=Status.SUCCESS),
            message={"statement_id": statement_id},
            statement_id=statement_id,
        )
    )


Reason = Annotated[str | None, Query(max_length=512, description="recorded with the action")]


class StatementAction:
    """An administrator's action on one statement: what park, retry and reprocess take and
    answer. core/statements.py says what each does and audits it, in the action's transaction."""

    def __init__(
        self,
        statement_id: str,
        principal: Caller,
        session: UnitOfWork,
        after_commit: AfterCommit,
        reason: Reason = None,
    ) -> None:
        self.statement_id, self.principal, self.session = statement_id, principal, session
        self.after_commit, self.reason = after_commit, reason

    def apply(
        self, action: Callable[[Session, str, str | None], object], *, queues: bool
    ) -> StatementPayload:
        """Administrators only; ``queues``: the statement waits for the workers again."""
        self.principal.require_role("admin")
        action(self.session, self.statement_id, self.reason)
        if queues:
            self.after_commit.wake("statement_uploaded", self.statement_id)
        self.session.flush()
        statement = statements.get_statement(self.session, self.statement_id)
        return views.statement_view(self.session, statement)


Action = Annotated[StatementAction, Depends()]


@router.post(
    "/statements/{statement_id}/park",
    response_model=StatementPayload,
    summary="Park a waiting statement in ERROR (admin)",
)
def park_statement(action: Action) -> StatementPayload:
    return action.apply(statements.park_statement, queues=False)


@router.post(
    "/statements/{statement_id}/retry",
    response_model=StatementPayload,
    summary="Queue a statement in ERROR again (admin)",
)
def retry_statement(action: Action) -> StatementPayload:
    return action.apply(statements.retry_statement, queues=True)


@router.post(
    "/statements/{statement_id}/reprocess",
    response_model=StatementPayload,
    summary="Apply a PROCESSED or ERROR statement again (admin)",
)
def reprocess_statement(action: Action) -> StatementPayload:
    return action.apply(statements.reprocess_statement, queues=True)


@router.get("/statements/{statement_id}", response_model=StatementPayload)
def get_statement(statement_id: str, principal: Caller, session: UnitOfWork) -> StatementPayload:
    principal.require_role("bank")
    statement = statements.get_statement(session, statement_id)
    # A bank sees the statements it uploaded; administrators see all.
    if not principal.is_admin and statement.uploaded_by != principal.client_id:
        raise Forbidden(ErrorCode.ACCESS_DENIED, "another client uploaded this statement")
    return views.statement_view(session, statement)


@router.get("/statements", response_model=Page[StatementPayload])
def list_statements(
    principal: Caller,
    session: UnitOfWork,
    offset: int = Query(0, ge=0, le=INT32_MAX),
    limit: int = Query(50, ge=1, le=500),
) -> Page[StatementPayload]:
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
    items = [views.statement_view(session, r, error_limit=0) for r in rows]
    return Page[StatementPayload](items=items, total=total, offset=offset, limit=limit)
