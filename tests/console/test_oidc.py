"""Console sign-in through an OpenID Connect provider (a fake one on 127.0.0.1): the
authorization-code flow with PKCE, state and nonce; roles and programs from the claims; ID
tokens with a wrong nonce, issuer, audience or signing key refused, as are a mismatched state,
a person with no console role, and a provider's user named like a local one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from console_support import make_user, sign_in
from fastapi.testclient import TestClient
from oidc_provider import CLIENT_ID, FakeProvider, running_provider
from sqlalchemy import select

from g2p_bridge.api.app import create_app
from g2p_bridge.console.users import OIDC_PASSWORD_HASH
from g2p_bridge.db import transaction
from g2p_bridge.models import AuditEvent, ConsoleUser
from g2p_bridge.settings import Settings

ROLE_MAP = {"g2p-viewer": "viewer", "g2p-operator": "operator", "g2p-approver": "approver"}


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with running_provider() as running:
        running.claims = {
            "preferred_username": "ana",
            "roles": ["g2p-operator", "g2p-approver", "unrelated"],
            "programs": ["P1", "P2"],
        }
        yield running


def _client(settings: Settings, session_factory: Any, provider: FakeProvider,
            **overrides: Any) -> TestClient:  # fmt: skip
    configured = settings.model_copy(
        update={
            "console_oidc_client_id": CLIENT_ID,
            "console_oidc_issuer": provider.url,
            "console_oidc_role_map": ROLE_MAP,
            **overrides,
        }
    )
    app = create_app(configured, session_factory, wake=lambda *a: None)
    return TestClient(app, base_url="https://testserver")


@pytest.fixture
def client(settings: Settings, session_factory, provider: FakeProvider) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with _client(settings, session_factory, provider) as http:
        yield http


def _through_provider(client: TestClient) -> httpx.Response:
    """Start, let the provider sign the person in, come back: the callback's answer."""
    start = client.get("/console/oidc/start", follow_redirects=False)
    assert start.status_code == 303, start.text
    at_provider = httpx.get(start.headers["location"], follow_redirects=False, timeout=10)
    assert at_provider.status_code == 302
    back = urlsplit(at_provider.headers["location"])
    assert back.netloc == "testserver"
    return client.get(f"{back.path}?{back.query}", follow_redirects=False)


def test_a_person_signs_in_through_the_provider(
    client: TestClient,
    provider: FakeProvider,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    login = client.get("/console/login")
    assert 'data-testid="oidc-sign-in"' in login.text
    answer = _through_provider(client)
    assert answer.status_code == 200, answer.text
    assert 'http-equiv="refresh"' in answer.text

    asked = provider.authorize_requests[0]
    assert asked["response_type"] == "code" and asked["client_id"] == CLIENT_ID
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["redirect_uri"] == "https://testserver/console/oidc/callback"
    assert asked["state"] and asked["nonce"] and asked["state"] != asked["nonce"]
    assert "openid" in asked["scope"].split()
    # The verifier went to the token endpoint (the provider checked it against the challenge).
    assert provider.token_requests[0]["code_verifier"]

    dashboard = client.get("/console")
    assert dashboard.status_code == 200
    # Operator and approver granted: the strongest, approver, is the console role.
    assert 'data-testid="whoami">ana (approver)' in dashboard.text
    with transaction(session_factory) as session:
        user = session.get(ConsoleUser, "ana")
        assert user is not None
        assert user.password_hash == OIDC_PASSWORD_HASH
        assert (user.role, user.programs) == ("approver", "P1 P2")
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "console.login")
        ).one()
        assert event.outcome == "ok" and event.actor == "ana" and "oidc" in (event.detail or "")

    # The provider is the source of truth: a role taken away there is gone at the next sign-in.
    provider.claims["roles"] = ["g2p-viewer"]
    fresh = TestClient(client.app, base_url="https://testserver")
    assert _through_provider(fresh).status_code == 200
    assert 'data-testid="whoami">ana (viewer)' in fresh.get("/console").text
    # And no password signs an OpenID Connect user in through the local form.
    assert sign_in(TestClient(client.app, base_url="https://testserver"), "ana", "!oidc") == 401


@pytest.mark.parametrize(
    ("tamper", "foreign_key"),
    [
        ({"nonce": "another-sign-in"}, False),
        ({"iss": "https://idp.example.org"}, False),
        ({"aud": "some-other-client"}, False),
        ({"exp": 1_000_000_000}, False),
        ({}, True),
    ],
    ids=["wrong-nonce", "wrong-issuer", "wrong-audience", "expired", "foreign-key"],
)
def test_an_id_token_that_cannot_be_trusted_signs_no_one_in(
    client: TestClient,
    provider: FakeProvider,
    session_factory,  # type: ignore[no-untyped-def]
    tamper: dict[str, Any],
    foreign_key: bool,
) -> None:
    provider.tamper, provider.foreign_key = tamper, foreign_key
    answer = _through_provider(client)
    assert answer.status_code == 401
    assert "was refused" in answer.text
    assert client.get("/console", follow_redirects=False).headers["location"] == "/console/login"
    with transaction(session_factory) as session:
        assert session.get(ConsoleUser, "ana") is None
        denied = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "console.login", AuditEvent.outcome == "denied"
            )
        ).one()
        assert "ID token" in (denied.detail or "")


def test_a_callback_with_another_state_is_refused_before_the_code_is_used(
    client: TestClient, provider: FakeProvider
) -> None:
    start = client.get("/console/oidc/start", follow_redirects=False)
    at_provider = httpx.get(start.headers["location"], follow_redirects=False, timeout=10)
    back = urlsplit(at_provider.headers["location"])
    code = parse_qs(back.query)["code"][0]
    forged = client.get(
        "/console/oidc/callback", params={"code": code, "state": "forged"}, follow_redirects=False
    )
    assert forged.status_code == 401
    # Another browser (no flow cookie) cannot use a code either.
    stranger = TestClient(client.app, base_url="https://testserver")
    assert stranger.get(f"{back.path}?{back.query}").status_code == 401
    assert provider.token_requests == []


@pytest.mark.parametrize(
    "claims",
    [
        {"roles": ["unrelated"]},
        {"roles": ["g2p-operator"], "programs": []},
        {"preferred_username": "ana/../admin"},
        {"preferred_username": "olive"},  # a local user's name
    ],
    ids=["no-console-role", "no-program", "unsafe-name", "local-name"],
)
def test_people_the_console_cannot_take(
    client: TestClient,
    provider: FakeProvider,
    session_factory,  # type: ignore[no-untyped-def]
    claims: dict[str, Any],
) -> None:
    make_user(session_factory, "olive", "operator", ["P1"])
    provider.claims.update(claims)
    assert _through_provider(client).status_code == 401
    with transaction(session_factory) as session:
        olive = session.get(ConsoleUser, "olive")
        assert olive is not None and olive.password_hash.startswith("$argon2id$")
        assert olive.role == "operator"
        assert session.get(ConsoleUser, "ana") is None


def test_local_passwords_can_be_switched_off(
    settings: Settings,
    session_factory,
    provider: FakeProvider,  # type: ignore[no-untyped-def]
) -> None:
    make_user(session_factory, "olive", "operator", ["P1"])
    with _client(settings, session_factory, provider, console_local_sign_in=False) as http:
        page = http.get("/console/login")
        assert 'name="password"' not in page.text
        assert 'data-testid="oidc-sign-in"' in page.text
        refused = http.post(
            "/console/login", data={"username": "olive", "password": "x", "nonce": "n"}
        )
        assert refused.status_code == 403


def test_without_a_provider_the_routes_are_not_there(app_client: TestClient) -> None:
    assert app_client.get("/console/oidc/start").status_code == 404
    assert 'data-testid="oidc-sign-in"' not in app_client.get("/console/login").text
