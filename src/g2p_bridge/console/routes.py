"""The console's routes. Each is thin: who may call it (a signed-in session, the role, the
program grant), one domain call, the page.

Security, in one place: sessions are HttpOnly cookies (Secure outside the embedded default,
SameSite=Strict); every POST carries the session's CSRF token and, when the browser sends an
Origin, must come from this host; every page checks the session server-side; templates are
autoescaped (statement narratives and names are attacker-controlled text) and served with a
Content-Security-Policy that allows no inline script; sign-in is rate limited per client
address and per account (users.py)."""

from __future__ import annotations

import csv
import hmac
import io
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.console import users
from g2p_bridge.console.users import ConsoleIdentity
from g2p_bridge.core import approvals, audit, operations, overview
from g2p_bridge.core.errors import BridgeError
from g2p_bridge.db import transaction
from g2p_bridge.models import BankBatch, DisbursementEnvelope, ReconError
from g2p_bridge.models.base import utcnow
from g2p_bridge.money import format_amount
from g2p_bridge.settings import Settings

T = TypeVar("T")
HERE = Path(__file__).parent
COOKIE = "g2p_console"
LOGIN_COOKIE = "g2p_console_login"
ROLE_HOME = "/console"

router = APIRouter(prefix="/console", include_in_schema=False)

_SECURITY_HEADERS = {
    # No inline script or style anywhere: an injected <script> would not run even if it
    # slipped past escaping.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignInNeeded(Exception):
    """No valid session: the browser is sent to the sign-in page."""


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- rendering


def _mask(value: str | None) -> str:
    """Enough to recognise in a call with the beneficiary, not enough to reuse."""
    if not value:
        return ""
    if len(value) <= 4:
        return "•" * len(value)
    return value[:1] + "•" * (len(value) - 3) + value[-2:]


def _money(amount: Decimal | None, currency: str) -> str:
    return "" if amount is None else f"{format_amount(Decimal(amount), currency)} {currency}"


def _when(value: datetime | date | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return value.isoformat()


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    env.filters["when"] = _when
    env.filters["mask"] = _mask
    return env


def _page(
    request: Request,
    template: str,
    me: ConsoleIdentity | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    env: Environment = request.app.state.console_templates
    html = env.get_template(template).render(me=me, request_path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_SECURITY_HEADERS)


# --------------------------------------------------------------------------- who is calling


def _factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _read(request: Request, run: Callable[[Session], T]) -> T:
    with transaction(_factory(request)) as session:
        return run(session)


def signed_in(request: Request) -> ConsoleIdentity:
    token = request.cookies.get(COOKIE)
    me = _read(request, lambda s: users.identity(s, token))
    if me is None:
        raise SignInNeeded()
    return me


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Refused(403, "this form was sent from another site")


def posted(request: Request, csrf_token: str, action: str | None = None) -> ConsoleIdentity:
    """A POST: a session, its CSRF token, this site as the origin, and the role's right."""
    me = signed_in(request)
    _same_origin(request)
    if not hmac.compare_digest(csrf_token.encode(), me.csrf_token.encode()):
        raise Refused(403, "the form's CSRF token is missing or wrong; reload the page")
    if action is not None and not me.may(action):
        raise Refused(403, f"role {me.role} may not do this")
    return me


def _visible(me: ConsoleIdentity, program: str | None) -> None:
    if not me.sees(program):
        raise Refused(404, "not found")


# --------------------------------------------------------------------------- sign-in


class _Attempts:
    """Sign-in attempts per client address in a sliding minute, in this process. The per-account
    lock (users.py) holds across processes; this one stops one address trying many names."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen.clear()
            seen = self._seen.setdefault(key, deque())
            while seen and seen[0] < now - self.window:
                seen.popleft()
            if len(seen) >= self.limit:
                return False
            seen.append(now)
            return True


def _cookie_secure(request: Request) -> bool:
    """Secure (sent over HTTPS only) everywhere but the embedded default on one machine, which
    serves plain HTTP on 127.0.0.1."""
    settings = _settings(request)
    return not (settings.embedded and settings.is_sqlite)


def _sign_in_ways(request: Request) -> dict[str, bool]:
    settings = _settings(request)
    return {"oidc": settings.console_oidc_enabled, "local": settings.console_local_sign_in_enabled}


@router.get("/login")
def login_page(request: Request, error: str | None = None) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = _page(
        request, "login.html", None, nonce=nonce, error=error, **_sign_in_ways(request)
    )
    # Login CSRF: the form's nonce must match this cookie, which another site cannot set.
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        httponly=True,
        secure=_cookie_secure(request),
        samesite="strict",
        path="/console",
        max_age=600,
    )
    return response


@router.post("/login")
def login(
    request: Request,
    username: str = Form("", max_length=64),
    password: str = Form("", max_length=1024),
    nonce: str = Form("", max_length=64),
) -> Response:
    _same_origin(request)
    if not _settings(request).console_local_sign_in_enabled:
        raise Refused(403, "sign in with your organisation's account")
    address = request.client.host if request.client else "unknown"
    attempts: _Attempts = request.app.state.console_attempts
    if not attempts.allow(address):
        return _page(
            request,
            "login.html",
            None,
            status=429,
            nonce=nonce,
            error="Too many sign-in attempts; wait a minute.",
            **_sign_in_ways(request),
        )
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(nonce.encode(), cookie.encode()):
        return _redirect("/console/login?error=expired")

    def check(session: Session) -> str | None:
        try:
            user = users.check_password(session, username, password)
        except users.SignInRefused as refused:
            audit.record(
                session,
                "console.login",
                "console_user",
                username[:64] or None,
                outcome="denied",
                actor=username[:64] or "unknown",
                role=None,
                detail={"reason": refused.reason, "address": address},
            )
            return None
        audit.record(
            session,
            "console.login",
            "console_user",
            user.username,
            actor=user.username,
            role=user.role,
            detail={"address": address},
        )
        return users.open_session(session, user)

    token = _read(request, check)
    if token is None:
        return _page(
            request,
            "login.html",
            None,
            status=401,
            nonce=nonce,
            error="Wrong user name or password, or the account is locked for a while.",
            **_sign_in_ways(request),
        )
    response = _redirect(ROLE_HOME)
    set_session_cookie(request, response, token)
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        secure=_cookie_secure(request),
        samesite="strict",
        path="/console",
        max_age=int(users.SESSION_TTL.total_seconds()),
    )


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("")) -> Response:
    posted(request, csrf_token)
    token = request.cookies.get(COOKIE)
    _read(request, lambda s: users.close_session(s, token))
    response = _redirect("/console/login")
    response.delete_cookie(COOKIE, path="/console")
    return response


# --------------------------------------------------------------------------- pages


def _today() -> date:
    return utcnow().date()


@router.get("")
def dashboard(request: Request) -> Response:
    me = signed_in(request)
    board = _read(
        request,
        lambda s: overview.dashboard(
            s, me.program_filter(), _today(), _settings(request).max_attempts
        ),
    )
    partial = request.headers.get("hx-request") == "true"
    return _page(
        request,
        "_dashboard.html" if partial else "dashboard.html",
        me,
        board=board,
        in_flight=overview.IN_FLIGHT,
        today=_today(),
    )


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise Refused(422, "dates are YYYY-MM-DD") from None


def _envelope_cursor(value: str | None) -> tuple[datetime, str] | None:
    if not value:
        return None
    stamp, _, key = value.partition("|")
    try:
        return datetime.fromisoformat(stamp), key
    except ValueError:
        raise Refused(422, "bad page cursor") from None


@router.get("/envelopes")
def envelope_list(
    request: Request,
    program: str | None = None,
    stage: str | None = None,
    schedule_date: str | None = None,
    after: str | None = None,
) -> Response:
    me = signed_in(request)
    if stage and stage not in {s.value for s in overview.Stage}:
        raise Refused(422, "unknown stage")
    day = _date(schedule_date)
    rows, cursor = _read(
        request,
        lambda s: overview.list_envelopes(
            s, me.program_filter(), program or None, stage or None, day, _envelope_cursor(after)
        ),
    )
    return _page(
        request,
        "envelopes.html",
        me,
        rows=rows,
        next_after=f"{cursor[0].isoformat()}|{cursor[1]}" if cursor else None,
        filters={
            "program": program or "",
            "stage": stage or "",
            "schedule_date": schedule_date or "",
        },
        stages=[s.value for s in overview.Stage],
    )


def _envelope_context(
    session: Session, me: ConsoleIdentity, envelope_id: str, max_attempts: int
) -> dict[str, Any]:
    detail = overview.envelope_detail(session, envelope_id)
    if detail is None:
        raise Refused(404, "not found")
    _visible(me, detail.envelope.program_mnemonic)
    return {
        "d": detail,
        "may_decide": me.may("approve")
        and detail.approval is approvals.ApprovalState.AWAITING_APPROVAL
        and me.username not in detail.makers,
        "is_maker": me.username in detail.makers,
        "max_attempts": max_attempts,
    }


@router.get("/envelopes/{envelope_id}")
def envelope_page(request: Request, envelope_id: str) -> Response:
    me = signed_in(request)

    def run(session: Session) -> dict[str, Any]:
        context = _envelope_context(session, me, envelope_id, _settings(request).max_attempts)
        context["timeline"] = audit.query(session, envelope_id=envelope_id, limit=200)
        return context

    context = _read(request, run)
    return _page(request, "envelope.html", me, **context)


@router.get("/envelopes/{envelope_id}/progress")
def envelope_progress(request: Request, envelope_id: str) -> Response:
    """The live part of the envelope page, polled by htmx."""
    me = signed_in(request)
    attempts = _settings(request).max_attempts
    context = _read(request, lambda s: _envelope_context(s, me, envelope_id, attempts))
    return _page(request, "_progress.html", me, **context)


def _act(request: Request, run: Callable[[Session], Any], then: str) -> Response:
    try:
        _read(request, run)
    except BridgeError as error:
        raise Refused(error.http_status, f"{error.code.value}: {error.message}") from error
    return _redirect(then)


def _envelope_program(session: Session, envelope_id: str) -> str | None:
    envelope = session.get(DisbursementEnvelope, envelope_id)
    return envelope.program_mnemonic if envelope is not None else None


@router.post("/envelopes/{envelope_id}/approve")
def approve(
    request: Request, envelope_id: str, csrf_token: str = Form(""), note: str = Form("")
) -> Response:
    return _decide(request, envelope_id, csrf_token, note, approve=True)


@router.post("/envelopes/{envelope_id}/reject")
def reject(
    request: Request, envelope_id: str, csrf_token: str = Form(""), note: str = Form("")
) -> Response:
    return _decide(request, envelope_id, csrf_token, note, approve=False)


def _decide(
    request: Request, envelope_id: str, csrf_token: str, note: str, approve: bool
) -> Response:
    me = posted(request, csrf_token, "approve")

    def run(session: Session) -> None:
        _visible(me, _envelope_program(session, envelope_id))
        approvals.decide(
            session,
            envelope_id,
            me.username,
            me.role,
            approve,
            note or None,
            _settings(request),
        )

    response = _act(request, run, f"/console/envelopes/{envelope_id}")
    request.app.state.wake("envelope_approved")
    return response


@router.post("/bank-batches/{batch_id}/requeue")
def requeue(request: Request, batch_id: str, csrf_token: str = Form("")) -> Response:
    me = posted(request, csrf_token, "operate")
    envelope_id = ""

    def run(session: Session) -> None:
        nonlocal envelope_id
        batch = session.get(BankBatch, batch_id)
        if batch is None:
            raise Refused(404, "not found")
        envelope_id = batch.envelope_id
        _visible(me, _envelope_program(session, envelope_id))
        operations.requeue_bank_batch(
            session, batch_id, me.username, me.role, _settings(request).max_attempts
        )

    try:
        _read(request, run)
    except BridgeError as error:
        raise Refused(error.http_status, f"{error.code.value}: {error.message}") from error
    request.app.state.wake("bank_batch_requeued")
    return _redirect(f"/console/envelopes/{envelope_id}#batches")


@router.get("/disbursements")
def disbursement_search(request: Request, q: str = "") -> Response:
    me = signed_in(request)
    if len(q) > 256:
        raise Refused(422, "a search term has at most 256 characters")
    rows = _read(request, lambda s: overview.search_disbursements(s, me.program_filter(), q))
    return _page(request, "disbursements.html", me, q=q, rows=rows, pii=me.may("see_personal_data"))


@router.get("/disbursements/{disbursement_id}")
def disbursement_page(request: Request, disbursement_id: str) -> Response:
    me = signed_in(request)

    def run(session: Session) -> dict[str, Any]:
        story = overview.disbursement_story(session, disbursement_id)
        if story is None:
            raise Refused(404, "not found")
        _visible(me, story.program)
        return {
            "story": story,
            "timeline": audit.query(session, disbursement_id=disbursement_id, limit=200),
        }

    context = _read(request, run)
    return _page(request, "disbursement.html", me, pii=me.may("see_personal_data"), **context)


@router.get("/failures")
def failure_list(request: Request, after: str | None = None) -> Response:
    me = signed_in(request)
    rows, cursor = _read(request, lambda s: overview.failures(s, me.program_filter(), after))
    return _page(
        request,
        "failures.html",
        me,
        rows=rows,
        next_after=cursor,
        pii=me.may("see_personal_data"),
    )


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A cell a spreadsheet would run as a formula (CSV injection) is written as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _stream_csv(
    request: Request, header: list[str], rows: Callable[[Session], Iterator[list[object]]]
) -> Iterator[bytes]:
    factory = _factory(request)

    def generate() -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        with factory() as session:
            for row in rows(session):
                writer.writerow([_csv_cell(v) for v in row])
                if buffer.tell() > 64 * 1024:
                    yield buffer.getvalue().encode()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue().encode()

    return generate()


def _csv_response(body: Iterator[bytes], name: str) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            **_SECURITY_HEADERS,
        },
    )


def _export(
    request: Request,
    me: ConsoleIdentity,
    header: list[str],
    rows: Callable[[Session], Iterator[list[object]]],
    export: str,
    filename: str,
) -> Response:
    """A CSV download for a role that may export, audited (as ``export``) before it streams."""
    if not me.may("export"):
        raise Refused(403, f"role {me.role} may not export")
    with transaction(_factory(request)) as session:
        audit.record(session, "console.export", "export", export, actor=me.username, role=me.role)
    return _csv_response(_stream_csv(request, header, rows), filename)


@router.get("/failures.csv")
def failures_csv(request: Request) -> Response:
    me = signed_in(request)
    pii = me.may("see_personal_data")

    def rows(session: Session) -> Iterator[list[object]]:
        for d, program, currency in overview.iter_failures(session, me.program_filter()):
            name = d.beneficiary_name if pii else _mask(d.beneficiary_name)
            yield [
                d.id,
                d.envelope_id,
                program,
                d.beneficiary_id,
                name,
                format_amount(d.amount, currency),
                currency,
                d.state,
                d.state_reason,
            ]

    header = [
        "disbursement_id",
        "envelope_id",
        "program",
        "beneficiary_id",
        "beneficiary_name",
        "amount",
        "currency",
        "state",
        "reason",
    ]
    return _export(request, me, header, rows, "failures", "failures.csv")


@router.get("/recon-errors")
def recon_error_list(
    request: Request, open_only: bool = False, after: int | None = None
) -> Response:
    me = signed_in(request)
    rows, cursor = _read(
        request, lambda s: overview.recon_errors(s, me.program_filter(), open_only, after)
    )
    return _page(
        request, "recon_errors.html", me, rows=rows, next_after=cursor, open_only=open_only
    )


@router.get("/recon-errors.csv")
def recon_errors_csv(request: Request) -> Response:
    me = signed_in(request)

    def rows(session: Session) -> Iterator[list[object]]:
        for error, ack, account, program in overview.iter_recon_errors(
            session, me.program_filter()
        ):
            yield [
                error.id,
                error.statement_id,
                account,
                program,
                error.statement_number,
                error.entry_sequence,
                error.entry_date,
                error.error_code,
                error.detail,
                error.disbursement_id,
                error.bank_reference,
                error.amount,
                ack.acknowledged_by if ack else "",
                ack.note if ack else "",
            ]

    header = [
        "id",
        "statement_id",
        "account",
        "program",
        "statement_number",
        "entry_sequence",
        "entry_date",
        "error_code",
        "detail",
        "disbursement_id",
        "bank_reference",
        "amount",
        "acknowledged_by",
        "note",
    ]
    return _export(request, me, header, rows, "recon_errors", "reconciliation-errors.csv")


@router.post("/recon-errors/{error_id}/acknowledge")
def acknowledge(
    request: Request,
    error_id: int,
    csrf_token: str = Form(""),
    note: str = Form("", max_length=operations.NOTE_LIMIT),
) -> Response:
    me = posted(request, csrf_token, "operate")

    def run(session: Session) -> None:
        error = session.get(ReconError, error_id)
        if error is None:
            raise Refused(404, "not found")
        from g2p_bridge.models import AccountStatement

        statement = session.get(AccountStatement, error.statement_id)
        _visible(me, statement.program_mnemonic if statement is not None else None)
        operations.acknowledge_recon_error(session, error_id, me.username, me.role, note)

    return _act(request, run, "/console/recon-errors")


@router.get("/statements")
def statement_list(
    request: Request, account: str | None = None, state: str | None = None, after: str | None = None
) -> Response:
    me = signed_in(request)
    rows, cursor = _read(
        request,
        lambda s: overview.statements(
            s, me.program_filter(), account or None, state or None, _envelope_cursor(after)
        ),
    )
    return _page(
        request,
        "statements.html",
        me,
        rows=rows,
        next_after=f"{cursor[0].isoformat()}|{cursor[1]}" if cursor else None,
        filters={"account": account or "", "state": state or ""},
    )


# --------------------------------------------------------------------------- wiring


def install(app: FastAPI) -> None:
    app.state.console_templates = _environment()
    app.state.console_attempts = _Attempts()
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(SignInNeeded)
    async def sign_in(request: Request, _exc: SignInNeeded) -> Response:
        if request.headers.get("hx-request") == "true":
            # A poll after the session ended: send the whole page to sign-in, not a fragment.
            return Response(status_code=204, headers={"HX-Redirect": "/console/login"})
        return _redirect("/console/login")

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        token = request.cookies.get(COOKIE)
        me = await run_in_threadpool(_read, request, lambda s: users.identity(s, token))
        return _page(request, "error.html", me, status=exc.status, message=exc.message)
