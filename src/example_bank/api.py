"""HTTP API of the Example Bank, compatible with the OpenG2P Example Bank contract.

Bank-contract endpoints (``/check_funds``, ``/block_funds``, ``/release_funds``,
``/initiate_payment``, ``/generate_account_statement``) always answer with their contract
body; a refusal has ``status: "failure"`` and an ``error_message``, with HTTP 200 for
business outcomes (insufficient funds, releasing more than a block holds) and 4xx when the
request names unknown or mismatched things.
Malformed input gets FastAPI's 422. Amounts go out as JSON strings and are accepted as
strings or numbers; request bodies are parsed with ``Decimal`` for numbers (``_DecimalRoute``),
so ``100.10`` is never rounded through a float.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from example_bank import services
from example_bank.db import make_engine, make_session_factory, migrate
from example_bank.embedded import InProcessProcessor
from example_bank.models import INTERNAL_TYPES, Account, LedgerEntry
from example_bank.processing import write_statements
from example_bank.settings import BankSettings
from example_bank.sftp import SftpEndpoint

log = logging.getLogger(__name__)

MAX_AMOUNT = Decimal(10) ** 18
CENT = Decimal("0.01")


def parse_amount(value: Any) -> Decimal:
    """Exact amount from a JSON string or number (at most 2 decimal places)."""
    if isinstance(value, bool):
        raise ValueError("amount must be a decimal string or number")
    if isinstance(value, float):
        # Bodies are parsed with exact decimals, so a float here means a caller lost precision.
        raise ValueError("amounts must be decimal strings or numbers, never floats")
    if isinstance(value, int):
        value = Decimal(value)
    elif isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal amount: {value!r}") from None
    if not isinstance(value, Decimal):
        raise ValueError("amount must be a decimal string or number")
    if not value.is_finite():
        raise ValueError("amount must be finite")
    if abs(value) >= MAX_AMOUNT:
        raise ValueError("amount is too large")
    if value != value.quantize(CENT):
        raise ValueError("amount has more than 2 decimal places")
    return value.quantize(CENT)


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("amount must be positive")
    return value


def _currency(value: str) -> str:
    value = value.strip().upper()
    if len(value) != 3 or not value.isalpha():
        raise ValueError("currency must be a 3-letter ISO 4217 code")
    return value


Amount = Annotated[Decimal, BeforeValidator(parse_amount)]
PositiveAmount = Annotated[Decimal, BeforeValidator(parse_amount), AfterValidator(_positive)]
Currency = Annotated[str, AfterValidator(_currency)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=100)]
# Payment references are written into statements; only characters no statement format gives a
# meaning to are taken (the writer escapes anything else all the same).
Reference = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class CheckFundsRequest(_In):
    account_number: NonEmpty
    account_currency: Currency
    total_funds_needed: PositiveAmount


class CheckFundsResponse(BaseModel):
    status: Literal["success", "failure"]
    account_number: str
    has_sufficient_funds: bool
    error_message: str | None = None


class BlockFundsRequest(_In):
    account_number: NonEmpty
    currency: Currency
    amount: PositiveAmount
    idempotency_key: str | None = Field(default=None, max_length=200)


class BlockFundsResponse(BaseModel):
    status: Literal["success", "failure"]
    block_reference_no: str | None = None
    error_message: str | None = None


class ReleaseFundsRequest(_In):
    account_number: NonEmpty
    block_reference_no: NonEmpty
    currency: Currency
    amount: PositiveAmount
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)]


class ReleaseFundsResponse(BaseModel):
    status: Literal["success", "failure"]
    release_reference_no: str | None = None
    released_amount: Decimal | None = None
    remaining_amount: Decimal | None = None
    error_message: str | None = None


class PaymentInstruction(_In):
    payment_reference_number: Reference
    remitting_account: NonEmpty
    remitting_account_currency: Currency
    payment_amount: PositiveAmount
    funds_blocked_reference_number: NonEmpty
    beneficiary_name: str | None = Field(default=None, max_length=200)
    beneficiary_account: str | None = Field(default=None, max_length=64)
    beneficiary_account_currency: Currency | None = None
    beneficiary_account_type: str | None = Field(default=None, max_length=32)
    beneficiary_bank_code: str | None = Field(default=None, max_length=64)
    beneficiary_branch_code: str | None = Field(default=None, max_length=64)
    beneficiary_mobile_wallet_provider: str | None = Field(default=None, max_length=64)
    beneficiary_phone_no: str | None = Field(default=None, max_length=32)
    beneficiary_email: str | None = Field(default=None, max_length=200)
    beneficiary_email_wallet_provider: str | None = Field(default=None, max_length=64)
    narrative_1: str | None = Field(default=None, max_length=200)
    narrative_2: str | None = Field(default=None, max_length=200)
    narrative_3: str | None = Field(default=None, max_length=200)
    narrative_4: str | None = Field(default=None, max_length=200)
    narrative_5: str | None = Field(default=None, max_length=200)
    narrative_6: str | None = Field(default=None, max_length=200)
    payment_date: str | None = Field(default=None, max_length=40)


class InitiatePaymentResponse(BaseModel):
    status: Literal["success", "failure"]
    error_message: str | None = None
    accepted_count: int = 0
    duplicate_payment_references: list[str] = Field(default_factory=list)
    batch_id: int | None = None


class GenerateStatementRequest(_In):
    program_account_number: NonEmpty


class GenerateStatementResponse(BaseModel):
    status: Literal["success", "failure"]
    account_statement_id: str | None = None
    error_message: str | None = None


class CreateAccountRequest(_In):
    account_number: NonEmpty
    holder_name: Annotated[str, Field(min_length=1, max_length=200)]
    currency: Currency
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=200)
    initial_deposit: Amount | None = None


class DepositRequest(_In):
    amount: PositiveAmount


class AccountView(BaseModel):
    account_number: str
    holder_name: str
    currency: str
    phone: str | None
    email: str | None
    account_type: str
    book_balance: Decimal
    blocked_amount: Decimal
    available_balance: Decimal
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountView:
        return cls(
            account_number=account.account_number,
            holder_name=account.holder_name,
            currency=account.currency,
            phone=account.phone,
            email=account.email,
            account_type=account.account_type,
            book_balance=account.book_balance,
            blocked_amount=account.blocked_amount,
            available_balance=account.book_balance - account.blocked_amount,
            created_at=account.created_at,
        )


class DepositResponse(BaseModel):
    bank_reference: str
    account: AccountView


M = TypeVar("M")


class _DecimalRequest(Request):
    """JSON numbers parsed as exact ``Decimal`` (never a float), for the typed body parameters."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body, parse_float=Decimal)
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError(f"invalid JSON: {exc}", "", 0) from None
        return self._json


class _DecimalRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handle(_DecimalRequest(request.scope, request.receive))

        return route


# A body without a Content-Type is read as JSON, as before the typed bodies.
router = APIRouter(route_class=_DecimalRoute, strict_content_type=False)


def _transaction(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session, session.begin():
        yield session


def _factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def _settings(request: Request) -> BankSettings:
    settings: BankSettings = request.app.state.settings
    return settings


# The route's transaction: committed when the route returns, before it answers.
Tx = Annotated[Session, Depends(_transaction, scope="function")]
# For routes that run their own transactions (retried on a unique race, or rolled back on a
# refusal that is still answered with the contract's body).
Factory = Annotated[sessionmaker[Session], Depends(_factory)]
Settings = Annotated[BankSettings, Depends(_settings)]


def _json(status_code: int, model: BaseModel) -> JSONResponse:
    return JSONResponse(status_code=status_code, content=model.model_dump(mode="json"))


def create_app(
    settings: BankSettings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    start_processor: bool | None = None,
    migrate_db: bool = False,
) -> FastAPI:
    """Build the API.

    ``start_processor`` (default: when ``broker_url`` is unset) runs the in-process
    processor thread for the app's lifetime; ``migrate_db`` upgrades the schema at
    startup.
    """
    settings = settings or BankSettings()
    engine = None
    if session_factory is None:
        engine = make_engine(settings.database_url)
        session_factory = make_session_factory(engine)
    factory = session_factory
    if start_processor is None:
        start_processor = settings.broker_url is None
    processor = InProcessProcessor(settings, factory) if start_processor else None
    sftp = SftpEndpoint(settings, factory) if settings.sftp_port is not None else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if migrate_db:
            migrate(settings.database_url)
        if processor is not None:
            processor.start()
        if sftp is not None:
            sftp.start()
        try:
            yield
        finally:
            if sftp is not None:
                sftp.stop()
            if processor is not None:
                processor.stop()
            if engine is not None:
                engine.dispose()

    app = FastAPI(title="Example Bank", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.session_factory = factory
    app.state.processor = processor
    app.state.sftp = sftp
    app.state.enqueue_batch = None
    if settings.broker_url:
        # Imported here, at start-up, not on the first payment batch: Celery and its broker
        # client took a third of a second to import, inside that batch's request.
        from example_bank.worker import enqueue_batch

        app.state.enqueue_batch = enqueue_batch
    app.include_router(router)
    app.add_exception_handler(services.BankError, _admin_refusal)  # type: ignore[arg-type]
    if settings.fault_mode is not None:
        from example_bank import faults

        faults.install(app, settings)
    return app


async def _admin_refusal(_request: Request, exc: services.BankError) -> JSONResponse:
    """A service refusal on an admin endpoint: ``{"detail": ...}`` with its status. (The
    bank-contract endpoints answer their contract's failure body themselves.)"""
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.message})


def _wake(request: Request, batch_id: int | None = None) -> None:
    """Hand committed work to the processor (never before the commit): a payment batch to the
    broker when there is one, else a wake-up of the in-process processor."""
    processor: InProcessProcessor | None = request.app.state.processor
    enqueue_batch: Callable[[int], None] | None = request.app.state.enqueue_batch
    if batch_id is not None and enqueue_batch is not None:
        try:
            enqueue_batch(batch_id)
        except Exception:  # the beat sweep picks the batch up anyway
            log.exception("could not enqueue batch %s; the sweep will process it", batch_id)
    elif processor is not None:
        processor.wake()


@router.get("/health/live")
def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready")
def ready(factory: Factory) -> JSONResponse:
    try:
        with factory() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse(status_code=503, content={"status": "unavailable", "error": str(exc)})
    return JSONResponse(content={"status": "ok"})


@router.post("/check_funds", response_model=CheckFundsResponse)
def check_funds(body: CheckFundsRequest, factory: Factory) -> JSONResponse:
    try:
        with factory() as session, session.begin():
            ok = services.check_funds(
                session, body.account_number, body.account_currency, body.total_funds_needed
            )
    except services.BankError as exc:
        failure = CheckFundsResponse(
            status="failure",
            account_number=body.account_number,
            has_sufficient_funds=False,
            error_message=exc.message,
        )
        return _json(exc.status_code, failure)
    answer = CheckFundsResponse(
        status="success", account_number=body.account_number, has_sufficient_funds=ok
    )
    return _json(200, answer)


@router.post("/block_funds", response_model=BlockFundsResponse)
def block_funds(body: BlockFundsRequest, factory: Factory) -> JSONResponse:
    try:
        result = _with_retry_on_conflict(
            factory,
            lambda s: services.block_funds(
                s, body.account_number, body.currency, body.amount, body.idempotency_key
            ),
        )
    except services.BankError as exc:
        return _json(
            exc.status_code, BlockFundsResponse(status="failure", error_message=exc.message)
        )
    if result.block_reference is None:
        return _json(200, BlockFundsResponse(status="failure", error_message=result.error_message))
    return _json(
        200, BlockFundsResponse(status="success", block_reference_no=result.block_reference)
    )


@router.post("/release_funds", response_model=ReleaseFundsResponse)
def release_funds(body: ReleaseFundsRequest, factory: Factory) -> JSONResponse:
    """Gives part of a block back; a refusal (more than remains) is a 200 failure body, like an
    insufficient balance on ``/block_funds``."""
    try:
        result = _with_retry_on_conflict(
            factory,
            lambda s: services.release_funds(
                s,
                body.account_number,
                body.block_reference_no,
                body.currency,
                body.amount,
                body.idempotency_key,
            ),
        )
    except services.BankError as exc:
        return _json(
            exc.status_code, ReleaseFundsResponse(status="failure", error_message=exc.message)
        )
    if result.release_reference is None:
        answer = ReleaseFundsResponse(
            status="failure",
            remaining_amount=result.remaining,
            error_message=result.error_message,
        )
        return _json(200, answer)
    answer = ReleaseFundsResponse(
        status="success",
        release_reference_no=result.release_reference,
        released_amount=result.released,
        remaining_amount=result.remaining,
    )
    return _json(200, answer)


@router.post("/initiate_payment", response_model=InitiatePaymentResponse)
def initiate_payment(
    body: list[PaymentInstruction], request: Request, factory: Factory
) -> JSONResponse:
    instructions = [p.model_dump() for p in body]
    try:
        result = _with_retry_on_conflict(
            factory, lambda s: services.accept_payments(s, instructions)
        )
    except services.BankError as exc:
        return _json(
            exc.status_code, InitiatePaymentResponse(status="failure", error_message=exc.message)
        )
    if result.batch_id is not None:
        _wake(request, result.batch_id)
    answer = InitiatePaymentResponse(
        status="success",
        accepted_count=result.accepted_count,
        duplicate_payment_references=result.duplicate_payment_references,
        batch_id=result.batch_id,
    )
    return _json(200, answer)


@router.post("/generate_account_statement", response_model=GenerateStatementResponse)
def generate_account_statement(
    body: GenerateStatementRequest, request: Request, factory: Factory, settings: Settings
) -> JSONResponse:
    try:
        with factory() as session, session.begin():
            ids = write_statements(session, body.program_account_number, settings, allow_empty=True)
    except LookupError as exc:
        failure = GenerateStatementResponse(status="failure", error_message=str(exc.args[0]))
        return _json(404, failure)
    _wake(request)
    return _json(200, GenerateStatementResponse(status="success", account_statement_id=str(ids[0])))


@router.post("/ussd", response_class=PlainTextResponse)
def ussd(
    session: Tx,
    sessionId: Annotated[str, Form()] = "",
    serviceCode: Annotated[str, Form()] = "",
    phoneNumber: Annotated[str, Form()] = "",
    networkCode: Annotated[str, Form()] = "",
    text: Annotated[str, Form()] = "",
) -> str:
    return ussd_reply(session, phoneNumber, text)


@router.post("/accounts", status_code=201)
def create_account(body: CreateAccountRequest, session: Tx, settings: Settings) -> AccountView:
    account = services.create_account(
        session,
        account_number=body.account_number,
        holder_name=body.holder_name,
        currency=body.currency,
        bank_code=settings.bank_code,
        phone=body.phone,
        email=body.email,
        initial_deposit=body.initial_deposit,
        narrative_layout=settings.mt940_narrative_layout,
    )
    session.flush()
    session.refresh(account)
    return AccountView.of(account)


@router.post("/accounts/{account_number}/deposit")
def deposit(
    account_number: str, body: DepositRequest, session: Tx, settings: Settings
) -> DepositResponse:
    reference = services.deposit(
        session,
        account_number,
        body.amount,
        bank_code=settings.bank_code,
        narrative_layout=settings.mt940_narrative_layout,
    )
    account = services.get_account(session, account_number)
    return DepositResponse(bank_reference=reference, account=AccountView.of(account))


@router.get("/accounts")
def list_accounts(
    session: Tx,
    include_internal: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AccountView]:
    stmt = select(Account).order_by(Account.account_number).limit(limit).offset(offset)
    if not include_internal:
        stmt = stmt.where(Account.account_type.not_in(INTERNAL_TYPES))
    return [AccountView.of(a) for a in session.scalars(stmt)]


@router.get("/accounts/{account_number}")
def get_account(account_number: str, session: Tx) -> AccountView:
    return AccountView.of(services.get_account(session, account_number))


def _with_retry_on_conflict(
    factory: sessionmaker[Session], work: Callable[[Session], M], attempts: int = 3
) -> M:
    """Run ``work`` in a transaction, retrying when a concurrent request won a unique race.

    Two identical requests racing (same payment references or idempotency key) collide
    on a unique index; on retry the loser sees the winner's rows and answers as a replay.
    """
    from sqlalchemy.exc import IntegrityError

    for attempt in range(attempts):
        try:
            with factory() as session, session.begin():
                return work(session)
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def ussd_reply(session: Session, phone: str, text_input: str) -> str:
    """Africa's Talking style USSD menu: ``CON`` continues the session, ``END`` closes it."""
    normalized = services.normalize_phone(phone)
    accounts = (
        list(
            session.scalars(
                select(Account)
                .where(Account.phone == normalized, Account.account_type.not_in(INTERNAL_TYPES))
                .order_by(Account.account_number)
            )
        )
        if normalized
        else []
    )
    if not accounts:
        return "END No Example Bank account is registered for this phone number."
    choice = text_input.split("*")[0].strip() if text_input else ""
    if choice == "":
        return "CON Welcome to Example Bank\n1. Balance\n2. Last 5 transactions"
    if choice == "1":
        lines = [
            f"{a.account_number}: {a.currency} {a.book_balance} (available "
            f"{a.book_balance - a.blocked_amount})"
            for a in accounts
        ]
        return "END Balance\n" + "\n".join(lines)
    if choice == "2":
        numbers = [a.account_number for a in accounts]
        entries = session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.account_number.in_(numbers))
            .order_by(LedgerEntry.id.desc())
            .limit(5)
        ).all()
        if not entries:
            return "END No transactions yet."
        currency = {a.account_number: a.currency for a in accounts}
        lines = [
            f"{e.entry_date:%d/%m} {e.mark} {currency[e.account_number]} {abs(e.amount)} "
            f"{e.payment_reference or e.bank_reference}"
            for e in entries
        ]
        return "END Last 5 transactions\n" + "\n".join(lines)
    return "END Invalid choice."
