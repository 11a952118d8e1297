"""Console sign-in through the organisation's OpenID Connect provider: the authorization-code
flow with PKCE (S256), a ``state`` and a ``nonce`` per attempt.

``/console/oidc/start`` sends the browser to the provider with a fresh state, nonce and code
challenge; their values (and the PKCE verifier) travel in a short-lived HttpOnly cookie, which
only this site can set, so a callback is accepted only in the browser that started it (login
CSRF). ``/console/oidc/callback`` checks the state, trades the code for tokens at the token
endpoint (with the verifier), and verifies the ID token: signed by a key of the provider's
JWKS with an asymmetric algorithm, issued by the configured issuer, for this client (``aud``,
and ``azp`` when there are several audiences), not expired, carrying this attempt's nonce.
Its claims give the user name, the console role (the roles claim mapped through
``console_oidc_role_map``; the strongest wins) and the programs (the API's ``programs`` claim).
The endpoints come from the issuer's discovery document, fetched once and cached."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from jwt import PyJWKClient
from sqlalchemy.orm import Session

from g2p_bridge.console import users
from g2p_bridge.console.routes import (
    _SECURITY_HEADERS,
    Refused,
    _cookie_secure,
    _page,
    _read,
    _settings,
    set_session_cookie,
)
from g2p_bridge.core import audit
from g2p_bridge.schemas import SAFE_ID_PATTERN
from g2p_bridge.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console/oidc", include_in_schema=False)
FLOW_COOKIE = "g2p_console_oidc"
FLOW_SECONDS = 600
DISCOVERY_SECONDS = 3600
# Asymmetric only: an HMAC "key" would be the client secret, which the provider does not sign
# ID tokens with in any deployment this is meant for.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
_USERNAME = re.compile(SAFE_ID_PATTERN)


class OidcRefused(Exception):
    """The sign-in cannot be trusted; the reason goes to the audit trail, not the browser."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks: PyJWKClient


class Discovery:
    """The provider's discovery document and JWKS client, fetched once per hour."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._provider: Provider | None = None
        self._fetched = 0.0

    def provider(self) -> Provider:
        with self._lock:
            if self._provider is None or time.monotonic() - self._fetched > DISCOVERY_SECONDS:
                self._provider = self._fetch()
                self._fetched = time.monotonic()
            return self._provider

    def _fetch(self) -> Provider:
        issuer = self.settings.console_oidc_issuer_url
        url = f"{issuer}/.well-known/openid-configuration"
        try:
            response = httpx.get(url, timeout=self.settings.console_oidc_timeout_seconds)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcRefused(f"the provider's discovery document is unavailable: {exc}") from exc
        if not isinstance(document, dict) or document.get("issuer", "").rstrip("/") != issuer:
            raise OidcRefused("the discovery document names another issuer")
        try:
            return Provider(
                issuer=document["issuer"],
                authorization_endpoint=str(document["authorization_endpoint"]),
                token_endpoint=str(document["token_endpoint"]),
                jwks=PyJWKClient(
                    str(document["jwks_uri"]),
                    cache_keys=True,
                    lifespan=DISCOVERY_SECONDS,
                    timeout=int(max(self.settings.console_oidc_timeout_seconds, 1)),
                ),
            )
        except KeyError as exc:
            raise OidcRefused(f"the discovery document has no {exc}") from exc


def _discovery(request: Request) -> Discovery:
    found: Discovery | None = getattr(request.app.state, "console_oidc", None)
    if found is None or not _settings(request).console_oidc_enabled:
        raise Refused(404, "sign-in through an identity provider is not configured")
    return found


def _redirect_url(request: Request) -> str:
    configured = _settings(request).console_oidc_redirect_url
    return configured or str(request.url_for("oidc_callback"))


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _found(location: str) -> Response:
    return Response(status_code=303, headers={"Location": location, **_SECURITY_HEADERS})


@router.get("/start")
def oidc_start(request: Request) -> Response:
    discovery = _discovery(request)
    settings = _settings(request)
    try:
        provider = discovery.provider()
    except OidcRefused as refused:
        log.warning("OpenID Connect sign-in unavailable: %s", refused)
        raise Refused(503, "the identity provider cannot be reached; try again later") from None
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.console_oidc_client_id,
            "redirect_uri": _redirect_url(request),
            "scope": settings.console_oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    separator = "&" if "?" in provider.authorization_endpoint else "?"
    response = _found(f"{provider.authorization_endpoint}{separator}{query}")
    # SameSite=Lax: the provider's redirect back is a cross-site top-level navigation, on
    # which a Strict cookie would not come.
    response.set_cookie(
        FLOW_COOKIE,
        f"{state}.{nonce}.{verifier}",
        httponly=True,
        secure=_cookie_secure(request),
        samesite="lax",
        path="/console/oidc",
        max_age=FLOW_SECONDS,
    )
    return response


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


@dataclass(frozen=True)
class Person:
    username: str
    role: str
    programs: frozenset[str]


def person_from_claims(settings: Settings, claims: dict[str, Any]) -> Person:
    username = claims.get(settings.console_oidc_username_claim) or claims.get("sub")
    if not isinstance(username, str) or len(username) > 64 or not _USERNAME.match(username):
        raise OidcRefused("the user name claim is missing or not a console user name")
    granted = _strings(_claim(claims, settings.console_oidc_roles_claim))
    role = users.strongest_role(
        {settings.console_oidc_role_map[g] for g in granted if g in settings.console_oidc_role_map}
    )
    if role is None:
        raise OidcRefused("the provider grants this person no console role")
    programs = frozenset(_strings(claims.get(settings.console_oidc_programs_claim)))
    if role != "admin" and not programs:
        raise OidcRefused("the provider grants this person no program")
    return Person(username, role, programs)


def verify_id_token(
    settings: Settings, provider: Provider, id_token: str, nonce: str
) -> dict[str, Any]:
    client_id = settings.console_oidc_client_id or ""
    try:
        key = provider.jwks.get_signing_key_from_jwt(id_token).key
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key,
            algorithms=ALGORITHMS,
            audience=client_id,
            issuer=provider.issuer,
            leeway=settings.auth_leeway_seconds,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
        )
    except jwt.PyJWKClientError as exc:
        raise OidcRefused(f"the ID token's signing key is not known: {exc}") from exc
    except jwt.InvalidTokenError as exc:
        raise OidcRefused(f"the ID token is not valid: {exc}") from exc
    if not hmac.compare_digest(str(claims.get("nonce")).encode(), nonce.encode()):
        raise OidcRefused("the ID token's nonce is not this sign-in's")
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise OidcRefused("the ID token was issued to another party (azp)")
    return claims


def _exchange(
    settings: Settings, provider: Provider, code: str, verifier: str, redirect: str
) -> str:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect,
        "client_id": settings.console_oidc_client_id or "",
        "code_verifier": verifier,
    }
    auth = None
    if settings.console_oidc_client_secret is not None:
        auth = (form["client_id"], settings.console_oidc_client_secret.get_secret_value())
    try:
        response = httpx.post(
            provider.token_endpoint,
            data=form,
            auth=auth,
            timeout=settings.console_oidc_timeout_seconds,
            headers={"Accept": "application/json"},
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise OidcRefused(f"the token endpoint did not answer: {exc}") from exc
    if response.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        raise OidcRefused(f"the token endpoint refused the code ({error or response.status_code})")
    id_token = body.get("id_token")
    if not isinstance(id_token, str) or len(id_token) > 16 * 1024:
        raise OidcRefused("the token endpoint gave no ID token")
    return id_token


def _denied(request: Request, reason: str, who: str | None = None) -> Response:
    address = request.client.host if request.client else "unknown"

    def record(session: Session) -> None:
        audit.record(
            session,
            "console.login",
            "console_user",
            who,
            outcome="denied",
            actor=who or "unknown",
            detail={"reason": reason, "address": address, "via": "oidc"},
        )

    _read(request, record)
    log.warning("OpenID Connect sign-in refused: %s", reason)
    response = _page(
        request,
        "login.html",
        None,
        status=401,
        error="The sign-in through your organisation's account was refused.",
        oidc=True,
        local=_settings(request).console_local_sign_in_enabled,
        nonce="",
    )
    response.delete_cookie(FLOW_COOKIE, path="/console/oidc")
    return response


@router.get("/callback", name="oidc_callback")
def oidc_callback(request: Request, code: str = "", state: str = "", error: str = "") -> Response:
    discovery = _discovery(request)
    settings = _settings(request)
    flow = request.cookies.get(FLOW_COOKIE, "")
    parts = flow.split(".")
    if len(parts) != 3 or not state or len(state) > 256:
        return _denied(request, "no sign-in was started in this browser, or it expired")
    expected_state, nonce, verifier = parts
    if not hmac.compare_digest(state.encode(), expected_state.encode()):
        return _denied(request, "the state does not match this browser's sign-in")
    if error:
        return _denied(request, f"the provider answered {error[:64]!r}")
    if not code or len(code) > 4096:
        return _denied(request, "the provider gave no code")
    try:
        provider = discovery.provider()
        id_token = _exchange(settings, provider, code, verifier, _redirect_url(request))
        claims = verify_id_token(settings, provider, id_token, nonce)
        person = person_from_claims(settings, claims)
    except OidcRefused as refused:
        return _denied(request, str(refused))
    address = request.client.host if request.client else "unknown"

    def sign_in(session: Session) -> tuple[str | None, str]:
        try:
            user = users.upsert_oidc_user(session, person.username, person.role, person.programs)
        except users.SignInRefused as refused:
            return None, refused.reason
        audit.record(
            session,
            "console.login",
            "console_user",
            user.username,
            actor=user.username,
            role=user.role,
            detail={
                "address": address,
                "via": "oidc",
                "subject": str(claims.get("sub"))[:128],
                "programs": sorted(person.programs),
            },
        )
        return users.open_session(session, user), ""

    token, reason = _read(request, sign_in)
    if token is None:
        return _denied(request, reason, person.username)
    response = _page(request, "signed_in.html", None)
    set_session_cookie(request, response, token)
    response.delete_cookie(FLOW_COOKIE, path="/console/oidc")
    return response


def install(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    if settings.console_oidc_enabled:
        app.state.console_oidc = Discovery(settings)
    app.include_router(router)
