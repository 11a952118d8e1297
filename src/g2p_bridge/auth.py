"""Who is calling: bearer JWTs checked against a JWKS URL or one configured key, the claims that
grant roles, programs and bank codes, and the key file of the embedded default."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWKClient

from g2p_bridge.core.errors import ErrorCode, Forbidden, Unauthenticated
from g2p_bridge.db import sqlite_path
from g2p_bridge.models.base import utcnow
from g2p_bridge.settings import Settings

# approver: may approve or reject envelopes held for four-eyes approval (core/approvals.py).
ROLES = ("pbms", "bank", "admin", "approver")
KEY_FILE_NAME = "g2p_bridge.key"
# Asymmetric only from a JWKS: an HMAC "key" taken from a public document would let anyone sign.
_JWKS_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]


class AuthConfigurationError(RuntimeError):
    """The API cannot decide who may call it; it refuses to start rather than run open."""


@dataclass(frozen=True)
class Principal:
    client_id: str
    role: str
    programs: frozenset[str] = field(default_factory=frozenset)
    bank_codes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def require_role(self, *roles: str) -> None:
        if self.role not in roles and not self.is_admin:
            raise Forbidden(
                ErrorCode.ACCESS_DENIED,
                f"role {self.role!r} may not do this; needs {' or '.join(roles)}",
            )

    def require_programs(self, programs: set[str]) -> None:
        """Admins act on every program; PBMS clients only on the programs they were granted."""
        if self.is_admin:
            return
        if self.role != "pbms":
            raise Forbidden(ErrorCode.ACCESS_DENIED, f"role {self.role!r} may not do this")
        outside = sorted(p for p in programs if p not in self.programs)
        if outside:
            raise Forbidden(
                ErrorCode.ACCESS_DENIED,
                f"client {self.client_id!r} is not granted program(s) {', '.join(outside)}",
            )

    def require_bank_codes(self, bank_codes: set[str]) -> None:
        if self.is_admin:
            return
        self.require_role("bank")
        outside = sorted(b for b in bank_codes if b not in self.bank_codes)
        if outside:
            raise Forbidden(
                ErrorCode.ACCESS_DENIED,
                f"client {self.client_id!r} is not granted bank code(s) {', '.join(outside)}",
            )


# Used when authentication is explicitly disabled: every caller is an administrator.
ANONYMOUS_ADMIN = Principal(client_id="anonymous", role="admin")


def key_file_path(settings: Settings) -> Path | None:
    """Where the embedded default keeps its signing key: next to the SQLite database."""
    if settings.auth_key_file:
        return Path(settings.auth_key_file)
    database = sqlite_path(settings.database_url) if settings.is_sqlite else None
    return database.with_name(KEY_FILE_NAME) if database is not None else None


def _embedded_secret(path: Path) -> str:
    """Reads the key file, creating it (mode 0600, exclusively) the first time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise AuthConfigurationError(f"the key file {path} holds no usable key") from None
        return secret
    secret = secrets.token_urlsafe(48)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    return secret


class Authenticator:
    """Verifies tokens. Built once per app from the settings; refuses an open configuration."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.disabled = False
        self._jwks: PyJWKClient | None = None
        self._key: Any = None
        self._algorithms: list[str] = []
        self.signing_key: str | None = None
        if settings.auth_jwks_url:
            self._jwks = PyJWKClient(
                settings.auth_jwks_url,
                cache_keys=True,
                cache_jwk_set=True,
                lifespan=int(max(settings.auth_jwks_cache_seconds, 1)),
                timeout=int(max(settings.auth_jwks_timeout_seconds, 1)),
            )
            self._algorithms = _JWKS_ALGORITHMS
        elif settings.auth_secret_key is not None:
            secret = settings.auth_secret_key.get_secret_value()
            if len(secret) < 32:
                raise AuthConfigurationError(
                    "G2P_BRIDGE_AUTH_SECRET_KEY must be at least 32 characters"
                )
            self._key, self._algorithms, self.signing_key = secret, ["HS256"], secret
        elif settings.auth_public_key:
            self._key, self._algorithms = settings.auth_public_key, ["RS256"]
        elif settings.auth_disabled:
            self.disabled = True
        elif (path := key_file_path(settings)) is not None:
            secret = _embedded_secret(path)
            self._key, self._algorithms, self.signing_key = secret, ["HS256"], secret
        else:
            raise AuthConfigurationError(
                "no token verification key is configured: set G2P_BRIDGE_AUTH_JWKS_URL, "
                "G2P_BRIDGE_AUTH_SECRET_KEY or G2P_BRIDGE_AUTH_PUBLIC_KEY (or, knowingly, "
                "G2P_BRIDGE_AUTH_DISABLED=true)"
            )

    def verify(self, token: str) -> Principal:
        """The token's principal; raises Unauthenticated when it cannot be trusted. May block on
        the first JWKS fetch: call it from a worker thread."""
        try:
            key = (
                self._jwks.get_signing_key_from_jwt(token).key
                if self._jwks is not None
                else self._key
            )
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self.settings.auth_audience,
                issuer=self.settings.auth_issuer,
                leeway=self.settings.auth_leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated(ErrorCode.INVALID_TOKEN, "the token has expired") from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated(
                ErrorCode.INVALID_TOKEN, f"the token's signing key is not known: {exc}"
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(
                ErrorCode.INVALID_TOKEN, f"the token is not valid: {exc}"
            ) from exc
        return principal_from_claims(claims)


def _string_set(claims: dict[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name) or []
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unauthenticated(ErrorCode.INVALID_TOKEN, f"claim {name!r} must be a list of strings")
    return frozenset(value)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    subject, role = claims.get("sub"), claims.get("role")
    if not isinstance(subject, str) or not subject or len(subject) > 128:
        raise Unauthenticated(ErrorCode.INVALID_TOKEN, "claim 'sub' must be the client id")
    if role not in ROLES:
        raise Unauthenticated(
            ErrorCode.INVALID_TOKEN, f"claim 'role' must be one of {', '.join(ROLES)}"
        )
    return Principal(
        client_id=subject,
        role=role,
        programs=_string_set(claims, "programs"),
        bank_codes=_string_set(claims, "bank_codes"),
    )


def issue_token(
    settings: Settings,
    client_id: str,
    role: str = "pbms",
    programs: list[str] | tuple[str, ...] = (),
    bank_codes: list[str] | tuple[str, ...] = (),
    ttl_seconds: int = 3600,
    signing_key: str | None = None,
) -> str:
    """A token the API accepts, signed with the configured secret or the embedded key file.
    Deployments with a JWKS or a public key get their tokens from their identity provider."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = signing_key or Authenticator(settings).signing_key
    if key is None:
        raise AuthConfigurationError(
            "tokens can only be issued here with G2P_BRIDGE_AUTH_SECRET_KEY or the embedded "
            "key file; get them from your identity provider instead"
        )
    now = utcnow()
    claims: dict[str, Any] = {
        "sub": client_id,
        "role": role,
        "iss": settings.auth_issuer,
        "aud": settings.auth_audience,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + ttl_seconds,
    }
    if programs:
        claims["programs"] = list(programs)
    if bank_codes:
        claims["bank_codes"] = list(bank_codes)
    return jwt.encode(claims, key, algorithm="HS256")
