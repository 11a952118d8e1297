"""The console's payroll-file upload: an operator submits an envelope as a CSV or XLSX file
(core/payroll_files.py), sees every faulty line with its column and reason, and is sent to the
envelope's page once the file was clean, where it waits for a second person's approval.

The form is multipart. Its body is read only after the session and the role were checked, with
python-multipart's streaming parser: the file goes to a spooled temporary file (hashed on the
way, bounded by ``max_payroll_file_bytes``), the few small fields beside it are kept, and
nothing is acted on before the form's CSRF token matched the session's."""

from __future__ import annotations

import hashlib
import tempfile
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import IO, TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from g2p_bridge.api.payroll_files import SPOOL_IN_MEMORY, Spooled, submit_file
from g2p_bridge.console import routes
from g2p_bridge.console.routes import Refused, _page, _read, _redirect, posted, signed_in
from g2p_bridge.console.users import ConsoleIdentity
from g2p_bridge.core import payroll_files
from g2p_bridge.core.errors import BridgeError
from g2p_bridge.models import BenefitProgram
from g2p_bridge.models.enums import DisbursementFrequency

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

router = APIRouter(prefix="/console", include_in_schema=False)
FILE_FIELD = "payroll_file"
TEXT_FIELDS = (
    "csrf_token",
    "program",
    "cycle_code",
    "schedule_date",
    "frequency",
    "expected_count",
    "expected_total",
)
MAX_TEXT_FIELD = 256
MULTIPART_OVERHEAD = 64 * 1024


class _Form:
    """Callbacks of the streaming parser: the file into a spooled temporary file, the known
    small fields into a dict, anything else dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.fields: dict[str, str] = {}
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self.digest = hashlib.sha256()
        self.size = 0
        self.file_name: str | None = None
        self.ended = False
        self._headers: dict[str, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._target: str | None = None
        self._text = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._target = {}, None
        self._text.clear()

    def _header_end(self) -> None:
        name = bytes(self._field).decode("latin-1").strip().lower()
        self._headers[name] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        name = (options.get(b"name") or b"").decode("latin-1")
        if name == FILE_FIELD and self.file_name is None and self.size == 0:
            self._target = FILE_FIELD
            raw = options.get(b"filename") or b""
            self.file_name = raw.decode("utf-8", errors="replace")[:256] or None
        elif name in TEXT_FIELDS and name not in self.fields:
            self._target = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._target == FILE_FIELD:
            self.size += end - start
            if self.size > self.limit:
                raise Refused(413, f"a payroll file is at most {self.limit} bytes")
            self.digest.update(data[start:end])
            self.file.write(data[start:end])
        elif self._target is not None:
            if len(self._text) + (end - start) > MAX_TEXT_FIELD:
                raise Refused(422, f"the form field {self._target} is too long")
            self._text.extend(data[start:end])

    def _part_end(self) -> None:
        if self._target not in (None, FILE_FIELD):
            self.fields[str(self._target)] = bytes(self._text).decode("utf-8", errors="replace")
        self._target = None

    def _end(self) -> None:
        self.ended = True


async def _read_form(request: Request, limit: int) -> _Form:
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise Refused(413, f"a payroll file is at most {limit} bytes")
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise Refused(422, "send the form as multipart/form-data")
    form = _Form(limit)
    try:
        parser = MultipartParser(boundary, form.callbacks())
        async for chunk in request.stream():
            if not form.ended:
                parser.write(chunk)
    except FormParserError:
        form.file.close()
        raise Refused(422, "the form's body is malformed") from None
    except Refused:
        form.file.close()
        raise
    if not form.ended:
        form.file.close()
        raise Refused(422, "the form's body ends early")
    form.file.seek(0)
    return form


def _programs(me: ConsoleIdentity) -> Any:
    def run(session: Any) -> list[str]:
        from sqlalchemy import select

        names = session.scalars(select(BenefitProgram.mnemonic).order_by(BenefitProgram.mnemonic))
        return [n for n in names if me.sees(n)]

    return run


def _form_page(
    request: Request,
    me: ConsoleIdentity,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: list[payroll_files.LineError] | None = None,
    message: str | None = None,
    truncated: bool = False,
) -> Response:
    programs = _read(request, _programs(me))
    return _page(
        request,
        "payroll_file.html",
        me,
        status=status,
        programs=programs,
        frequencies=[f.value for f in DisbursementFrequency],
        values=values or {"schedule_date": routes._today().isoformat(), "frequency": "OnDemand"},
        errors=errors or [],
        message=message,
        truncated=truncated,
    )


@router.get("/payroll-files")
def payroll_form(request: Request) -> Response:
    me = signed_in(request)
    if not me.may("operate"):
        raise Refused(403, f"role {me.role} may not submit payroll files")
    return _form_page(request, me)


def _fields(values: dict[str, str]) -> payroll_files.EnvelopeFields:
    try:
        schedule = date.fromisoformat(values.get("schedule_date", ""))
    except ValueError:
        raise Refused(422, "the schedule date is YYYY-MM-DD") from None
    count_text = values.get("expected_count", "").strip()
    total_text = values.get("expected_total", "").strip()
    if count_text and not (count_text.isascii() and count_text.isdigit()):
        raise Refused(422, "the expected count is a whole number")
    try:
        total = Decimal(total_text) if total_text else None
    except InvalidOperation:
        raise Refused(422, "the expected total is a plain decimal number") from None
    if total is not None and not total.is_finite():
        raise Refused(422, "the expected total is a plain decimal number")
    return payroll_files.EnvelopeFields(
        program=values.get("program", "").strip(),
        cycle_code=values.get("cycle_code", "").strip(),
        schedule_date=schedule,
        frequency=values.get("frequency", "OnDemand").strip() or "OnDemand",
        expected_count=int(count_text) if count_text else None,
        expected_total=total,
    )


@router.post("/payroll-files")
async def payroll_submit(request: Request) -> Response:
    me = await run_in_threadpool(signed_in, request)
    if not me.may("operate"):
        raise Refused(403, f"role {me.role} may not submit payroll files")
    routes._same_origin(request)
    settings = request.app.state.settings
    form = await _read_form(request, settings.max_payroll_file_bytes)
    try:
        values = form.fields
        # The CSRF token and the role once more, now that the form is read.
        await run_in_threadpool(posted, request, values.get("csrf_token", ""), "operate")
        if not me.sees(values.get("program")):
            raise Refused(404, "no such program")
        if form.size == 0:
            return await run_in_threadpool(
                _form_page, request, me, 422, values, None, "Choose a file to submit."
            )
        fields = _fields(values)
        spooled = Spooled(form.file, form.digest.hexdigest(), form.size)
        try:
            submission = await run_in_threadpool(
                submit_file,
                request.app.state.session_factory,
                spooled,
                form.file_name,
                fields,
                me.username,
                settings.max_payroll_file_rows,
            )
        except payroll_files.PayrollFileRefused as refused:
            return await run_in_threadpool(
                _form_page,
                request,
                me,
                422,
                values,
                refused.lines,
                refused.message,
                refused.truncated,
            )
        except BridgeError as error:
            message = f"{error.code.value}: {error.message}"
            return await run_in_threadpool(_form_page, request, me, 422, values, None, message)
    finally:
        form.file.close()
    if not submission.resubmitted:
        request.app.state.wake("disbursements_received")
    suffix = "?resubmitted=1" if submission.resubmitted else "?submitted=1"
    return _redirect(f"/console/envelopes/{submission.envelope_id}{suffix}")


def install(app: Any) -> None:
    app.include_router(router)
