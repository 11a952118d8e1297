"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against the
bridge served over HTTP with its pipeline running (the embedded runner and a fake sponsor bank).

A payroll day: an envelope that needs four-eyes approval waits, its submitter cannot approve it,
a second person does, and the page follows it live to settled; a disbursement is found and its
story told; failures are exported; a reconciliation error is acknowledged; a batch parked while
the bank was down is re-queued; a viewer cannot act; a form without its CSRF token is refused;
hostile names and narratives render as text. The screenshots in docs/console/ come from here
(``G2P_CONSOLE_SCREENSHOTS=docs/console``)."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import PASSWORD, make_program, make_user
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from bridge_support import FakeBank, dumps, envelope_request, header, mt940
from g2p_bridge.api.app import create_app
from g2p_bridge.auth import issue_token
from g2p_bridge.connectors.banks.base import BankUnavailable, PaymentBatchResult, PaymentInstruction
from g2p_bridge.core.context import Context
from g2p_bridge.db import make_engine, make_session_factory, transaction
from g2p_bridge.demo import _free_socket, _serve
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import BankBatch, Disbursement
from g2p_bridge.models.enums import WorkState
from g2p_bridge.settings import Settings

CHROMIUM = "/usr/bin/chromium"
SECRET = "test-secret-key-for-the-console-browser-0123456789"
HOSTILE_NAME = "<script>window.__owned = 1</script>Amina"
HOSTILE_NARRATIVE = "<img src=x onerror=window.__owned=2>fee"
TIMEOUT = 30_000  # ms: the pipeline on a shared 2-core machine


@dataclass
class SwitchableBank(FakeBank):
    """The fake bank, whose payment gateway can be down while funds checks still answer."""

    payments_down: bool = False

    def initiate_payment(self, payments: list[PaymentInstruction]) -> PaymentBatchResult:
        if self.payments_down:
            raise BankUnavailable("simulated: the bank's payment gateway is down")
        return super().initiate_payment(payments)


@dataclass
class Bridge:
    url: str
    settings: Settings
    factory: Any
    bank: SwitchableBank

    def token(self, client: str, role: str, **claims: Any) -> str:
        return issue_token(self.settings, client, role, **claims)

    def post(self, path: str, body: object, token: str) -> httpx.Response:
        return httpx.post(
            self.url + path,
            content=dumps(body),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            timeout=30,
        )


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls a condition on the bridge's database (not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Bridge]:
    path = tmp_path_factory.mktemp("console") / "bridge.db"
    shutil.copy(sqlite_template, path)
    settings = Settings(
        database_url=f"sqlite:///{path}",
        auth_secret_key=SECRET,
        max_attempts=2,
        retry_backoff_seconds=0,
        beat_interval_seconds=0.1,
        mapper_batch_size=50,
        dispatch_batch_size=50,
    )
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    bank = SwitchableBank()
    context = Context(settings, factory)
    context.use_bank("EXAMPLE", bank)
    runner = EmbeddedRunner(context)
    app = create_app(settings, factory, wake=runner.wake)
    make_program(factory, "PAYDAY", "4000000001", threshold="0")
    make_program(factory, "PLAIN", "4000000002")
    make_user(factory, "pbms-maker", "approver", ["PAYDAY"])
    make_user(factory, "checker", "approver", ["PAYDAY"])
    make_user(factory, "olive", "operator", ["*"])
    make_user(factory, "victor", "viewer", ["*"])
    sock = _free_socket()
    runner.start()
    try:
        with _serve(app, sock) as url:
            yield Bridge(url, settings, factory, bank)
    finally:
        runner.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: scripts/ensure-services.sh installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = os.environ.get("G2P_CONSOLE_SCREENSHOTS")
    return Path(where) if where else tmp_path


def signed_in(browser: Browser, bridge: Bridge, username: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(base_url=bridge.url, viewport={"width": 1000, "height": 620})
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    page.goto("/console")
    expect(page).to_have_url(f"{bridge.url}/console/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_have_text(f"{username} ({_role(username)})")
    return context, page


def _role(username: str) -> str:
    return {"olive": "operator", "victor": "viewer"}.get(username, "approver")


def screenshot(page: Page, where: Path, name: str) -> None:
    """A PNG quantised to a small palette (flat UI colours survive it, text stays crisp), so
    the README's pictures stay under 40 KB each."""
    target = where / name
    shot = Image.open(io.BytesIO(page.screenshot(scale="css")))
    shot.convert("RGB").quantize(colors=24, method=Image.Quantize.MEDIANCUT).save(
        target, optimize=True
    )
    assert target.stat().st_size < 40_000, f"{target.name}: {target.stat().st_size} bytes"


def submit(bridge: Bridge, envelope_id: str, program: str, items: list[dict[str, Any]]) -> None:
    token = bridge.token("pbms-maker", "pbms", programs=[program])
    total = sum((Decimal(i["disbursement_amount"]) for i in items), Decimal(0))
    body = envelope_request(envelope_id, count=len(items), total=str(total), program=program)
    body["header"]["sender_id"] = "pbms-maker"
    assert bridge.post("/create_disbursement_envelope", body, token).status_code == 200
    request = {"header": {**header("create_disbursements", len(items)), "sender_id": "pbms-maker"},
               "message": items}  # fmt: skip
    response = bridge.post("/create_disbursements", request, token)
    assert response.status_code == 200, response.text


def item(
    envelope_id: str, n: int, amount: str, name: str = "Juma", address: str | None = ""
) -> dict[str, Any]:
    return {
        "disbursement_id": f"{envelope_id}-d{n}",
        "disbursement_envelope_id": envelope_id,
        "beneficiary_id": f"NID-{envelope_id}-{n}",
        "beneficiary_name": name,
        "disbursement_amount": Decimal(amount),
        "narrative": "December transfer",
        "financial_address": f"account:10{n:06d}@NORTHBANK.BR01" if address == "" else address,
    }


def upload_statement(bridge: Bridge, text: str) -> None:
    token = bridge.token("bank-1", "bank", bank_codes=["EXAMPLE"])
    response = httpx.post(
        bridge.url + "/upload_mt940",
        files={"statement_file": ("day.sta", text.encode(), "text/plain")},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def test_a_payroll_day_with_four_eyes(browser: Browser, bridge: Bridge, shots: Path) -> None:
    envelope = "env-payday"
    submit(
        bridge,
        envelope,
        "PAYDAY",
        [
            item(envelope, 1, "120.50", name=HOSTILE_NAME),
            item(envelope, 2, "80.25"),
            # No financial address, and a beneficiary id that is none: it fails, with a reason.
            item(envelope, 3, "40.00", address=None),
        ],
    )

    # The submitter, although an approver, is not offered the decision and cannot force it.
    maker, page = signed_in(browser, bridge, "pbms-maker")
    page.goto(f"/console/envelopes/{envelope}")
    expect(page.get_by_test_id("approval")).to_have_text("AWAITING_APPROVAL")
    expect(page.get_by_test_id("stage")).to_have_text("AWAITING_APPROVAL")
    expect(page.get_by_test_id("maker-note")).to_be_visible()
    expect(page.get_by_test_id("approve")).to_have_count(0)
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value") or ""
    forced = page.request.post(
        f"/console/envelopes/{envelope}/approve", form={"csrf_token": csrf, "note": "mine"}
    )
    assert forced.status == 403 and "a second person must decide" in forced.text()
    screenshot(page, shots, "envelope-awaiting-approval.png")
    maker.close()

    # A second person approves; the page follows the pipeline live (htmx), no reload.
    checker, page = signed_in(browser, bridge, "checker")
    page.goto(f"/console/envelopes/{envelope}")
    page.get_by_label("Note").fill("matches the December MIS report")
    page.get_by_test_id("approve").click()
    expect(page.get_by_test_id("approval")).to_have_text("APPROVED")
    expect(page.get_by_test_id("stage")).to_have_text("PAYING")
    expect(page.get_by_test_id("count-SHIPPED")).to_have_text("2")
    expect(page.get_by_test_id("amount-blocked")).to_have_text("240.75 USD")

    # The bank's statement: both payments booked, and one entry the bridge does not know.
    upload_statement(
        bridge,
        mt940(
            "4000000001",
            [
                ("D", f"{envelope}-d1", Decimal("120.50"), "December transfer"),
                ("D", f"{envelope}-d2", Decimal("80.25"), "December transfer"),
                ("D", "UNKNOWN-REF-1", Decimal("5.00"), HOSTILE_NARRATIVE),
            ],
            number=1,
        ),
    )
    expect(page.get_by_test_id("stage")).to_have_text("SETTLED")
    expect(page.get_by_test_id("amount-paid")).to_have_text("200.75 USD")
    expect(page.get_by_test_id("amount-failed")).to_have_text("40.00 USD")
    expect(page.get_by_test_id("bank-batch-DONE")).to_contain_text("accepted")
    expect(page.get_by_test_id("timeline")).to_contain_text("envelope.approve ok by checker")
    screenshot(page, shots, "envelope-settled.png")
    checker.close()

    operator, page = signed_in(browser, bridge, "olive")
    expect(page.get_by_test_id("alerts")).to_contain_text("reconciliation error")
    expect(page.get_by_test_id("money-today")).to_contain_text("200.75 USD")
    screenshot(page, shots, "dashboard.png")

    # Search by beneficiary id; the story; the hostile name is text, and no script ran.
    page.get_by_role("link", name="Disbursements").click()
    page.get_by_label("Disbursement id, beneficiary id or bank reference").fill(f"NID-{envelope}-1")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=f"{envelope}-d1").click()
    expect(page.get_by_test_id("state")).to_have_text("RECONCILED")
    expect(page.get_by_test_id("beneficiary-name")).to_have_text(HOSTILE_NAME)
    expect(page.get_by_test_id("recon")).to_contain_text("120.50 USD")
    assert page.evaluate("window.__owned") is None
    screenshot(page, shots, "disbursement-story.png")

    # Failures, exported as CSV.
    page.get_by_role("link", name="Failures").click()
    expect(page.get_by_test_id("failures")).to_contain_text(f"{envelope}-d3")
    with page.expect_download() as download:
        page.get_by_test_id("export-failures").click()
    exported = Path(download.value.path()).read_text()
    assert exported.splitlines()[0].startswith("disbursement_id,envelope_id,program")
    assert f"{envelope}-d3,{envelope},PAYDAY" in exported
    assert f"{envelope}-d1" not in exported

    # The unknown entry is a reconciliation error; its narrative is text; acknowledge it.
    page.get_by_role("link", name="Reconciliation errors").click()
    row = page.locator("tr", has_text="UNKNOWN-REF-1")
    expect(row).to_be_visible()
    assert page.evaluate("window.__owned") is None
    row.get_by_label("note").fill("bank charge, booked by finance")
    row.get_by_test_id("acknowledge").click()
    expect(page.locator("tr", has_text="UNKNOWN-REF-1").get_by_test_id("ack")).to_have_text(
        "olive: bank charge, booked by finance"
    )
    screenshot(page, shots, "reconciliation-errors.png")

    # A form posted without its CSRF token is refused, whoever is signed in.
    refused = page.request.post("/console/recon-errors/1/acknowledge", form={"note": "x"})
    assert refused.status == 403 and "CSRF" in refused.text()
    operator.close()


def test_a_parked_batch_is_requeued_and_a_viewer_cannot_act(
    browser: Browser, bridge: Bridge
) -> None:
    envelope = "env-parked"
    bridge.bank.payments_down = True
    submit(bridge, envelope, "PLAIN", [item(envelope, 1, "10.00"), item(envelope, 2, "15.00")])

    def parked() -> bool:
        with transaction(bridge.factory) as session:
            batch = session.query(BankBatch).filter_by(envelope_id=envelope).one_or_none()
            return batch is not None and batch.state == WorkState.FAILED

    wait_until(parked)

    viewer, page = signed_in(browser, bridge, "victor")
    page.goto(f"/console/envelopes/{envelope}")
    expect(page.get_by_test_id("bank-batch-FAILED")).to_be_visible()
    expect(page.get_by_role("button")).to_have_count(1)  # Sign out, nothing else
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value") or ""
    with transaction(bridge.factory) as session:
        batch_id = session.query(BankBatch.id).filter_by(envelope_id=envelope).scalar()
    refused = page.request.post(
        f"/console/bank-batches/{batch_id}/requeue", form={"csrf_token": csrf}
    )
    assert refused.status == 403
    viewer.close()

    # The cause is fixed; the operator re-queues; the batch is sent and the money paid once.
    bridge.bank.payments_down = False
    operator, page = signed_in(browser, bridge, "olive")
    page.goto(f"/console/envelopes/{envelope}")
    expect(page.get_by_test_id("bank-batch-FAILED")).to_contain_text("payment gateway is down")
    page.get_by_test_id("requeue").click()
    expect(page.get_by_test_id("count-SHIPPED")).to_have_text("2")
    expect(page.get_by_test_id("bank-batch-DONE")).to_be_visible()  # live, without a reload
    expect(page.get_by_test_id("timeline")).to_contain_text("bank_batch.requeue ok by olive")
    with transaction(bridge.factory) as session:
        shipped = (
            session.query(Disbursement).filter_by(envelope_id=envelope, state="SHIPPED").count()
        )
    assert shipped == 2
    assert {f"{envelope}-d1", f"{envelope}-d2"} <= set(bridge.bank.payments)
    operator.close()


PAYROLL_HEADER = (
    "beneficiary_id,beneficiary_name,amount,narrative,financial_address,disbursement_id"
)


def test_a_payroll_file_is_checked_line_by_line_then_approved_by_a_second_person(
    browser: Browser, bridge: Bridge, shots: Path
) -> None:
    # PLAIN needs no approval of its own: an envelope from a file needs it all the same.
    make_user(bridge.factory, "pat", "approver", ["PLAIN"])
    lines = [
        "NID-F1,Rehema,35.00,December transfer,account:1000101@NORTHBANK.BR01,file-d1",
        "NID-F2,<script>window.__owned = 3</script>Tumaini,12.345,December transfer,,file-d2",
        "NID-F3,,20.00,December transfer,account:1000103@NORTHBANK.BR01,file-d3",
    ]
    operator, page = signed_in(browser, bridge, "olive")
    page.get_by_role("link", name="Submit a file").click()
    page.get_by_test_id("payroll-program").select_option("PLAIN")
    page.get_by_test_id("payroll-cycle").fill("2026-12")

    def choose(text: str) -> None:
        page.get_by_test_id("payroll-file").set_input_files(
            {"name": "december.csv", "mimeType": "text/csv", "buffer": text.encode()}
        )

    choose("\n".join([PAYROLL_HEADER, *lines]) + "\n")
    page.get_by_test_id("payroll-submit").click()
    errors = page.get_by_test_id("payroll-errors")
    expect(errors.locator("tbody tr")).to_have_count(2)
    expect(errors.locator("tr", has_text="amount")).to_contain_text("3")
    expect(errors.locator("tr", has_text="beneficiary_name")).to_contain_text("4")
    expect(page.get_by_test_id("payroll-message")).to_contain_text("nothing was stored")
    assert page.evaluate("window.__owned") is None
    screenshot(page, shots, "payroll-file-errors.png")
    with transaction(bridge.factory) as session:
        assert session.get(Disbursement, "file-d1") is None

    # Fixed; the form kept its fields, only the file is chosen again.
    expect(page.get_by_test_id("payroll-cycle")).to_have_value("2026-12")
    fixed = [
        lines[0],
        "NID-F2,Tumaini,12.35,December transfer,account:1000102@NORTHBANK.BR01,file-d2",
        "NID-F3,Baraka,20.00,December transfer,account:1000103@NORTHBANK.BR01,file-d3",
    ]
    choose("\n".join([PAYROLL_HEADER, *fixed]) + "\n")
    page.get_by_test_id("payroll-submit").click()
    expect(page.get_by_test_id("approval")).to_have_text("AWAITING_APPROVAL")
    expect(page.get_by_test_id("maker-note")).to_be_visible()
    expect(page.get_by_test_id("approve")).to_have_count(0)
    envelope = page.url.split("/console/envelopes/")[1].split("?")[0]
    operator.close()

    checker, page = signed_in(browser, bridge, "pat")
    page.goto(f"/console/envelopes/{envelope}")
    page.get_by_label("Note").fill("matches the ministry's list")
    page.get_by_test_id("approve").click()
    expect(page.get_by_test_id("approval")).to_have_text("APPROVED")
    expect(page.get_by_test_id("count-SHIPPED")).to_have_text("3")
    expect(page.get_by_test_id("timeline")).to_contain_text("envelope.submit_file ok by olive")
    expect(page.get_by_test_id("timeline")).to_contain_text("envelope.approve ok by pat")
    checker.close()
