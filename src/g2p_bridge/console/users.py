"""Console users, passwords and sessions.

Passwords are hashed with argon2id (memory-hard: a stolen table costs a GPU farm per guess).
A failed sign-in counts against the account and, after a few, locks it for a doubling while, so
guessing online is slow whatever the client's address; an unknown name costs the same hash as a
known one, so timing does not tell which names exist. Sessions are random tokens of which only
the SHA-256 is stored, each with its own CSRF token."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from g2p_bridge.models import ConsoleSession, ConsoleUser
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.console import CONSOLE_ROLES

# argon2-cffi's defaults are RFC 9106's second recommendation (argon2id, 64 MiB, t=3).
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
FREE_FAILURES = 5
MAX_LOCK = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=8)
MIN_PASSWORD = 12
ALL_PROGRAMS = "*"


class UserError(ValueError):
    """A user that cannot be created as asked."""


@dataclass(frozen=True)
class ConsoleIdentity:
    """Who is signed in, and what they may see and do."""

    username: str
    role: str
    programs: frozenset[str]
    csrf_token: str

    @property
    def all_programs(self) -> bool:
        return self.role == "admin" or ALL_PROGRAMS in self.programs

    def sees(self, program: str | None) -> bool:
        return self.all_programs or (program is not None and program in self.programs)

    def program_filter(self) -> frozenset[str] | None:
        """None for every program; else the granted ones (possibly none)."""
        return None if self.all_programs else self.programs

    def may(self, action: str) -> bool:
        return self.role in _ALLOWED[action]


# What each role may do beyond looking. Viewers only look; personal data is shown to the roles
# that handle a beneficiary's complaint (operator, admin), masked for the others.
_ALLOWED: dict[str, tuple[str, ...]] = {
    "operate": ("operator", "admin"),
    "approve": ("approver", "admin"),
    "see_personal_data": ("operator", "admin"),
    "export": ("operator", "admin", "approver", "viewer"),
}


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def add_user(
    session: Session, username: str, role: str, programs: list[str], password: str
) -> ConsoleUser:
    if role not in CONSOLE_ROLES:
        raise UserError(f"role must be one of {', '.join(CONSOLE_ROLES)}")
    if (
        not username
        or len(username) > 64
        or not username.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        raise UserError("a username is 1 to 64 of A-Z a-z 0-9 . _ -")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password has at least {MIN_PASSWORD} characters")
    if role != "admin" and not programs:
        raise UserError("give the programs the user may see (--program P, or --program '*')")
    if session.get(ConsoleUser, username) is not None:
        raise UserError(f"user {username!r} exists")
    user = ConsoleUser(
        username=username,
        password_hash=hash_password(password),
        role=role,
        programs=" ".join(sorted(set(programs))),
        disabled=False,
        failed_logins=0,
    )
    session.add(user)
    session.flush()
    return user


# The password hash of a user who signs in through the OpenID Connect provider: no password
# verifies against it (argon2 refuses it as a hash), so the local form never signs them in.
OIDC_PASSWORD_HASH = "!oidc"  # noqa: S105 (a marker no password matches, not a secret)
_ROLE_RANK = {"viewer": 0, "operator": 1, "approver": 2, "admin": 3}


def strongest_role(roles: set[str]) -> str | None:
    """One console role for a person the provider gave several: the highest of them."""
    return max(roles, key=_ROLE_RANK.__getitem__) if roles else None


def upsert_oidc_user(
    session: Session, username: str, role: str, programs: frozenset[str]
) -> ConsoleUser:
    """The console's row for a person the provider vouched for, with the role and programs of
    this sign-in (the provider is the source of truth: a role taken away there is gone here at
    the next sign-in). A local user of the same name is not taken over."""
    user = session.get(ConsoleUser, username, with_for_update=True)
    if user is None:
        user = ConsoleUser(
            username=username,
            password_hash=OIDC_PASSWORD_HASH,
            role=role,
            programs=" ".join(sorted(programs)),
            disabled=False,
            failed_logins=0,
        )
        session.add(user)
    elif user.password_hash != OIDC_PASSWORD_HASH:
        raise SignInRefused("a local user has this name")
    elif user.disabled:
        raise SignInRefused("disabled")
    else:
        user.role, user.programs = role, " ".join(sorted(programs))
    session.flush()
    return user


class SignInRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_password(session: Session, username: str, password: str) -> ConsoleUser:
    """The user, or SignInRefused with a reason for the audit trail (the browser is only told
    that the name or password is wrong, or that the account is locked)."""
    now = utcnow()
    user = session.get(ConsoleUser, username, with_for_update=True) if username else None
    if user is None:
        # The same work as a real check, so timing tells nothing.
        with contextlib.suppress(VerificationError):
            _hasher.verify(_DUMMY_HASH, password)
        raise SignInRefused("unknown user")
    if user.locked_until is not None and user.locked_until > now:
        raise SignInRefused("locked")
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        user.failed_logins += 1
        if user.failed_logins >= FREE_FAILURES:
            lock = timedelta(seconds=30 * 2 ** (user.failed_logins - FREE_FAILURES))
            user.locked_until = now + min(lock, MAX_LOCK)
        raise SignInRefused("wrong password") from None
    if user.disabled:
        raise SignInRefused("disabled")
    user.failed_logins, user.locked_until = 0, None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, user: ConsoleUser) -> str:
    """A new session token for the cookie. Old expired sessions are swept on the way."""
    now = utcnow()
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_sha256=_digest(token),
            username=user.username,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + SESSION_TTL,
        )
    )
    return token


def identity(session: Session, token: str | None) -> ConsoleIdentity | None:
    if not token or len(token) > 128:
        return None
    row = session.execute(
        select(ConsoleSession, ConsoleUser)
        .join(ConsoleUser, ConsoleUser.username == ConsoleSession.username)
        .where(ConsoleSession.token_sha256 == _digest(token))
    ).first()
    if row is None:
        return None
    stored, user = row
    if stored.expires_at < utcnow() or user.disabled:
        return None
    return ConsoleIdentity(
        username=user.username,
        role=user.role,
        programs=frozenset(user.programs.split()),
        csrf_token=stored.csrf_token,
    )


def close_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_sha256 == _digest(token)))
