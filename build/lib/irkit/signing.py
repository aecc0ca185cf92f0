"""Ed25519 signatures on events, so a forged append by someone without the key is caught.

The hash chain proves that no event changed relative to the head; anyone who can write the file can
still append an event with the public hash function. With a signing key configured (kept outside the
record: a file named by ``signing.key_file`` or an environment variable named by ``signing.key_env``),
every event irkit writes carries ``"sig": {"key": <key id>, "value": <base64 Ed25519 signature of the
event hash>}``. The signature is not part of the hash, but the hash covers ``prev``, so one signature
vouches for the whole history up to its event. ``irkit verify --public-key`` names the first event
that is unsigned or badly signed. The only module that imports ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from irkit.errors import BadInputError, ConfigError


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex of the sha256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    """Signs event hashes with one Ed25519 private key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    def sign(self, event_hash: str) -> dict[str, str]:
        """The ``sig`` field for an event whose hash is ``event_hash``."""
        value = self._private.sign(event_hash.encode())
        return {"key": self.key_id, "value": base64.b64encode(value).decode()}

    def public_text(self) -> str:
        """The public key as base64 of its 32 raw bytes (what ``verify --public-key`` takes)."""
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()


class Verifier:
    """Checks ``sig`` fields against one Ed25519 public key."""

    def __init__(self, public: Ed25519PublicKey) -> None:
        self.public = public
        self.key_id = key_id(public)

    def problem(self, event: Mapping[str, Any]) -> str | None:
        """Why ``event`` is not signed by this key, or None when it is."""
        sig = event.get("sig")
        if not isinstance(sig, Mapping) or not isinstance(sig.get("value"), str):
            return "unsigned"
        if sig.get("key") != self.key_id:
            return f"signed by another key ({str(sig.get('key'))[:16]}, expected {self.key_id})"
        try:
            self.public.verify(base64.b64decode(sig["value"], validate=True), str(event["hash"]).encode())
        except (InvalidSignature, binascii.Error, ValueError):
            return "bad signature"
        return None


def generate() -> tuple[bytes, str]:
    """A new key: (private key PEM, public key as base64 raw bytes)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, Signer(private).public_text()


def write_private_key(path: Path, pem: bytes) -> None:
    """Write a private key readable by its owner only; never overwrites an existing key."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise BadInputError(f"{path}: already exists; refusing to overwrite a signing key") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot write: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())


def _private_from_text(text: bytes, where: str) -> Ed25519PrivateKey:
    text = text.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(text, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ConfigError(f"{where}: not an Ed25519 private key (PEM or base64 of 32 bytes): {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{where}: the key is not an Ed25519 key")
    return key


def load_signer(key_file: str | None, key_env: str | None, environ: Mapping[str, str]) -> Signer | None:
    """The configured signer, or None when no key is configured."""
    if key_env and environ.get(key_env):
        return Signer(_private_from_text(environ[key_env].encode(), f"signing.key_env ({key_env})"))
    if key_file:
        try:
            raw = Path(key_file).expanduser().read_bytes()
        except OSError as exc:
            raise ConfigError(f"signing.key_file: cannot read {key_file}: {exc.strerror}") from None
        return Signer(_private_from_text(raw, f"signing.key_file ({key_file})"))
    if key_env:
        raise ConfigError(f"signing.key_env: environment variable {key_env} is not set")
    return None


def load_verifier(value: str) -> Verifier:
    """A verifier from ``--public-key``: a file (PEM or base64) or the base64 text itself."""
    if not value or not value.strip():
        raise BadInputError("--public-key: empty value")
    p = Path(value)
    raw: bytes
    try:
        raw = p.read_bytes() if p.is_file() else value.encode()
    except OSError as exc:
        raise BadInputError(f"--public-key: cannot read {value}: {exc.strerror}") from None
    raw = raw.strip()
    try:
        if raw.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw, validate=True))
    except (ValueError, TypeError, binascii.Error):
        raise BadInputError("--public-key: not an Ed25519 public key (PEM or base64 of 32 bytes)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInputError("--public-key: the key is not an Ed25519 key")
    return Verifier(key)
