"""Console test support: users, a signed-in HTTP client, the CSRF token of a page."""

from __future__ import annotations

import re
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.console.users import add_user
from g2p_bridge.core import programs
from g2p_bridge.db import transaction
from g2p_bridge.schemas import ProgramPayload

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_NONCE = re.compile(r'name="nonce" value="([^"]+)"')


def make_user(
    factory: sessionmaker[Session], username: str, role: str, programs_: list[str] | None = None
) -> None:
    with transaction(factory) as session:
        add_user(session, username, role, programs_ if programs_ is not None else ["*"], PASSWORD)


def make_program(
    factory: sessionmaker[Session],
    mnemonic: str,
    account: str,
    threshold: str | None = None,
) -> None:
    with transaction(factory) as session:
        programs.create_program(
            session,
            ProgramPayload(
                program_mnemonic=mnemonic,
                sponsor_bank_code="EXAMPLE",
                sponsor_bank_account_number=account,
                sponsor_bank_account_currency="USD",
                id_mapper_resolution_required=False,
                resolver="inline",
                approval_required=threshold is not None,
                approval_threshold=Decimal(threshold) if threshold is not None else None,
            ),
        )


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> int:
    page = client.get("/console/login")
    nonce = _NONCE.search(page.text)
    assert nonce, page.text
    response = client.post(
        "/console/login",
        data={"username": username, "password": password, "nonce": nonce.group(1)},
        follow_redirects=False,
    )
    return response.status_code


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)
