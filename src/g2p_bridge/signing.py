"""The bridge's own signature on the callbacks it sends: a detached JWS (RFC 7515 appendix F)
over the exact body bytes, EdDSA with an Ed25519 key; the public key set is what
``/.well-known/jwks.json`` serves so a PBMS can verify without sharing any secret with us."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from g2p_bridge.db import sqlite_path
from g2p_bridge.settings import Settings

KEY_FILE_NAME = "g2p_bridge.callback-key.pem"
SIGNATURE_HEADER = "X-JWS-Signature"


class SigningConfigurationError(RuntimeError):
    """No usable callback signing key is configured."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = _b64url(raw)
    # RFC 7638 thumbprint: the required members, sorted, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}


class CallbackSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.jwk = public_jwk(private_key.public_key())

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk]}

    def sign(self, body: bytes) -> str:
        """``<protected header>..<signature>``: the payload part left empty, it is the body."""
        token = jwt.api_jws.encode(
            body,
            self._key,
            algorithm="EdDSA",
            headers={"kid": self.kid, "typ": "JOSE", "cty": "application/json"},
            is_payload_detached=True,
        )
        return str(token)


def verify(signature: str, body: bytes, jwks: dict[str, Any]) -> bool:
    """What a PBMS does with a callback (the demo's receiver and the tests use it)."""
    try:
        header = jwt.get_unverified_header(signature)
        key = next(k for k in jwks["keys"] if k.get("kid") == header.get("kid"))
        public = jwt.PyJWK(key).key
        jwt.api_jws.decode_complete(
            signature, key=public, algorithms=["EdDSA"], detached_payload=body
        )
    except (jwt.PyJWTError, StopIteration, KeyError, TypeError, ValueError):
        return False
    return True


def key_file_path(settings: Settings) -> Path | None:
    if settings.callback_signing_key_file:
        return Path(settings.callback_signing_key_file)
    database = sqlite_path(settings.database_url) if settings.is_sqlite else None
    return database.with_name(KEY_FILE_NAME) if database is not None else None


def _read_pem(pem: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise SigningConfigurationError(f"{where} holds no readable PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningConfigurationError(f"{where} must hold an Ed25519 key")
    return key


def _embedded_key(path: Path) -> Ed25519PrivateKey:
    """Reads the key file, creating it (mode 0600, exclusively) the first time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_pem(path.read_bytes(), str(path))
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return key


def load_signer(settings: Settings) -> CallbackSigner:
    if settings.callback_signing_key is not None:
        pem = settings.callback_signing_key.get_secret_value().encode()
        return CallbackSigner(_read_pem(pem, "G2P_BRIDGE_CALLBACK_SIGNING_KEY"))
    path = key_file_path(settings)
    if path is None:
        raise SigningConfigurationError(
            "no callback signing key: set G2P_BRIDGE_CALLBACK_SIGNING_KEY (an Ed25519 PKCS#8 "
            "PEM) or G2P_BRIDGE_CALLBACK_SIGNING_KEY_FILE"
        )
    return CallbackSigner(_embedded_key(path))


def generate_private_pem() -> str:
    """A new key for ``G2P_BRIDGE_CALLBACK_SIGNING_KEY`` (``g2p-bridge callbacks new-key``)."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
