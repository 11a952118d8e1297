"""Payroll files over the API: ``POST /payroll_files`` takes the file itself as the body (the
CLI's ``g2p-bridge envelopes submit``), the envelope's fields as query parameters. The console's
upload form (console/payroll.py) shares ``spool`` and ``submit_file``."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import IO, Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.api.g2p_connect import Caller, wake
from g2p_bridge.api.wire import json_response
from g2p_bridge.core import payroll_files
from g2p_bridge.core.errors import ErrorCode, PayloadTooLarge
from g2p_bridge.db import transaction
from g2p_bridge.models.base import utcnow
from g2p_bridge.schemas import SAFE_ID_PATTERN, Count, Money

router = APIRouter(tags=["payroll files"])
# Kept in memory up to this, then on disk: a large file never sits whole in memory.
SPOOL_IN_MEMORY = 1024 * 1024


@dataclass
class Spooled:
    file: IO[bytes]
    sha256: str
    size: int


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        ErrorCode.PAYROLL_FILE_TOO_LARGE, f"a payroll file is at most {limit} bytes"
    )


async def spool(chunks: AsyncIterator[bytes], limit: int) -> Spooled:
    """The bytes as they arrive into a temporary file, hashed on the way, at most ``limit``."""
    digest = hashlib.sha256()
    file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (returned)
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            file.close()
            raise too_large(limit)
        digest.update(chunk)
        file.write(chunk)
    file.seek(0)
    return Spooled(file, digest.hexdigest(), size)


def submit_file(
    factory: sessionmaker[Session],
    spooled: Spooled,
    file_name: str | None,
    fields: payroll_files.EnvelopeFields,
    submitter: str,
    max_rows: int,
) -> payroll_files.Submission:
    """One transaction; a second upload of the same bytes that raced this one (the file's key
    taken meanwhile) is answered, on a second try, with the envelope the first one made."""

    def run(session: Session) -> payroll_files.Submission:
        return payroll_files.submit(
            session,
            spooled.file,
            spooled.sha256,
            spooled.size,
            file_name,
            fields,
            submitter,
            utcnow().date(),
            max_rows,
        )

    try:
        with transaction(factory) as session:
            return run(session)
    except IntegrityError:
        with transaction(factory) as session:
            return run(session)


Identifier = Annotated[str, Query(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)]


@router.post(
    "/payroll_files",
    summary="Submit an envelope as a payroll file (CSV or XLSX; docs/console/payroll-files.md)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        }
    },
)
async def submit_payroll_file(
    request: Request,
    principal: Caller,
    program: Identifier,
    cycle_code: Identifier,
    schedule_date: date,
    frequency: Annotated[str, Query(max_length=16)] = "OnDemand",
    envelope_id: Annotated[str | None, Query(max_length=64, pattern=SAFE_ID_PATTERN)] = None,
    expected_count: Annotated[Count | None, Query()] = None,
    expected_total: Annotated[Money | None, Query()] = None,
    file_name: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    # No body parameter: the caller is authenticated and authorized for the program before a
    # byte of the file is read.
    request.state.g2p_hint = {"action": "payroll_files"}
    principal.require_programs({program})
    settings = request.app.state.settings
    limit = settings.max_payroll_file_bytes
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise too_large(limit)
    spooled = await spool(request.stream(), limit)
    fields = payroll_files.EnvelopeFields(
        program=program,
        cycle_code=cycle_code,
        schedule_date=schedule_date,
        frequency=frequency,
        envelope_id=envelope_id,
        expected_count=expected_count,
        expected_total=Decimal(expected_total) if expected_total is not None else None,
    )
    request.state.g2p_echo = _echo_lines
    try:
        submission = await run_in_threadpool(
            submit_file,
            request.app.state.session_factory,
            spooled,
            file_name,
            fields,
            principal.client_id,
            settings.max_payroll_file_rows,
        )
    finally:
        spooled.file.close()
    if not submission.resubmitted:
        wake(request, "disbursements_received")
    return json_response(submission.as_json(), status_code=200 if submission.resubmitted else 201)


def _echo_lines(error: object) -> list[dict[str, object]] | None:
    """A refused file's answer carries every faulty line as the rjct's message."""
    if isinstance(error, payroll_files.PayrollFileRefused):
        return [line.as_json() for line in error.lines]
    return None
