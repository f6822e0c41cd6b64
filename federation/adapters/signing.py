"""Signed events: each cluster signs what it publishes with its Ed25519 key; peers verify against
a trust bundle before anything is applied.

The signature covers the exact bytes that travel — the subject, a newline, the payload — so
neither can be changed or moved to another subject. It rides in two NATS headers:
``Fed-Key`` (the signer's public key, base64url) and ``Fed-Sig`` (the signature, base64url).

Trust bundle (a file, e.g. mounted from a Kubernetes Secret)::

    {"clusters": {"us-east": ["<base64url public key>", "<next key, during a rotation>"], ...}}

Both the bundle and the signing key are re-read when their file changes (checked at most every
``reload_every`` seconds), so a rotation needs no restart: publish the new public key in every
bundle beside the old one, switch the cluster's key file, then drop the old key from the bundles.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.adapters.watched_files import Watched

log = logging.getLogger(__name__)

KEY_HEADER: Final = "Fed-Key"
SIG_HEADER: Final = "Fed-Sig"
RELOAD_EVERY: Final = 2.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed_bytes(subject: str, payload: bytes) -> bytes:
    return subject.encode() + b"\n" + payload


def public_key_text(key: Ed25519PrivateKey) -> str:
    return b64(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def generate_key(path: Path) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600) to ``path``; return its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_key_text(key)


class FileSigner:
    """Signs with the private key in ``path``; picks up a replaced key file by itself."""

    def __init__(self, path: Path, reload_every: float = RELOAD_EVERY) -> None:
        self._file = Watched(path, reload_every)
        self._key: Ed25519PrivateKey | None = None
        self._public = ""
        self._reload()
        if self._key is None:
            raise ValueError(f"{path}: no Ed25519 private key")

    def _reload(self) -> None:
        if not self._file.changed():
            return
        try:
            key = serialization.load_pem_private_key(self._file.path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            log.error(
                "signing key %s unreadable, keeping the previous one: %s", self._file.path, exc
            )
            return
        if not isinstance(key, Ed25519PrivateKey):
            log.error("signing key %s is not Ed25519; keeping the previous one", self._file.path)
            return
        self._key, self._public = key, public_key_text(key)
        log.info("signing with key %s", self._public)

    @property
    def public_key(self) -> str:
        return self._public

    def sign(self, subject: str, payload: bytes) -> dict[str, str]:
        self._reload()
        assert self._key is not None
        signature = self._key.sign(signed_bytes(subject, payload))
        return {KEY_HEADER: self._public, SIG_HEADER: b64(signature)}


class TrustBundle:
    """Cluster name → trusted public keys, from a JSON file re-read when it changes."""

    def __init__(self, path: Path, reload_every: float = RELOAD_EVERY) -> None:
        self._file = Watched(path, reload_every)
        self._keys: dict[str, tuple[Ed25519PublicKey, str]] = {}  # public key text → (key, owner)
        self._reload()

    def _reload(self) -> None:
        if not self._file.changed():
            return
        try:
            doc = json.loads(self._file.path.read_text())
            keys: dict[str, tuple[Ed25519PublicKey, str]] = {}
            for cluster, texts in doc["clusters"].items():
                for text in texts:
                    keys[text] = (Ed25519PublicKey.from_public_bytes(unb64(text)), cluster)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            log.error(
                "trust bundle %s unusable, keeping the previous one: %s", self._file.path, exc
            )
            return
        self._keys = keys
        log.info("trust bundle: %d keys for %d clusters", len(keys),
                 len({c for _, c in keys.values()}))  # fmt: skip

    def verify(
        self, subject: str, payload: bytes, headers: Mapping[str, str], cluster: str
    ) -> str | None:
        """None when ``cluster`` signed exactly this; else the reason to reject it."""
        self._reload()
        key_text, sig_text = headers.get(KEY_HEADER), headers.get(SIG_HEADER)
        if not key_text or not sig_text:
            return "unsigned"
        known = self._keys.get(key_text)
        if known is None:
            return "unknown-signer"
        key, owner = known
        if owner != cluster:
            return "wrong-signer"
        try:
            key.verify(unb64(sig_text), signed_bytes(subject, payload))
        except (InvalidSignature, ValueError, binascii.Error):
            return "bad-signature"
        return None


def write_bundle(path: Path, keys: Mapping[str, list[str]]) -> None:
    path.write_text(json.dumps({"clusters": dict(keys)}, indent=2) + "\n")
