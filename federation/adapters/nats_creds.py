"""NATS operator mode: a cluster's ``.creds`` file (user JWT + nkey seed), read and written.

Production NATS (and managed NATS) runs in operator mode: an operator signs accounts, an account
(or one of its signing keys) signs users, and a user logs in with a ``.creds`` file holding its
JWT and its nkey seed. nats-py reads the file at every connection; the JWT carries the user's
permissions, so the server itself refuses what the user may not do.

``cluster_user`` issues a cluster's user with exactly the permissions ``nats_auth`` grants a
cluster (its own subjects, streams and consumer), signed with an account signing key, so an
operator need not hand-craft JWTs (``federation keygen --nats-creds``). The JWTs are made and
read with the ``nats-jwt`` and ``nkeys`` packages.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import nkeys
from nats_jwt.nkeys_ext import create_user_pair
from nats_jwt.v2.user_claims import UserClaims

from federation.adapters.nats_auth import cluster_permissions

_BLOCK = re.compile(r"-{3,}BEGIN ([A-Z ]+)-{3,}\s*\n(.+?)\n\s*-{3,}END \1-{3,}", re.S)
_CREDS = """\
-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------

*************************************************************
"""


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT (not verified: the server verifies; this reads what it says)."""
    try:
        payload = token.split(".")[1]
        doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error) as exc:
        raise ValueError(f"not a JWT ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JWT (claims are not an object)")
    return doc


def read_creds(path: Path) -> tuple[str, str]:
    """The user JWT and seed in a ``.creds`` file; raises ``ValueError`` on anything else."""
    blocks = {name.strip(): body.strip() for name, body in _BLOCK.findall(path.read_text())}
    token, seed = blocks.get("NATS USER JWT"), blocks.get("USER NKEY SEED")
    if not token or not seed:
        raise ValueError(f"{path}: not a NATS .creds file (a user JWT and a user nkey seed)")
    return token, seed


def creds_identity(path: Path) -> str:
    """The user (public key) a ``.creds`` file logs in as, after checking that its seed is that
    user's and that its JWT is a user JWT that has not expired."""
    token, seed = read_creds(path)
    claims = jwt_claims(token)
    if (claims.get("nats") or {}).get("type") != "user":
        raise ValueError(f"{path}: the JWT is not a user JWT")
    try:
        key = bytes(nkeys.from_seed(bytearray(seed.encode())).public_key).decode()
    except (nkeys.NkeysError, ValueError, IndexError) as exc:
        raise ValueError(f"{path}: the seed is not an nkey seed ({type(exc).__name__})") from None
    if key != claims.get("sub"):
        raise ValueError(f"{path}: the seed is not the JWT's user ({key} != {claims.get('sub')})")
    expires = claims.get("exp")
    if isinstance(expires, int | float) and expires <= time.time():
        raise ValueError(f"{path}: the user JWT expired")
    # The JWT's own id: a re-issued JWT for the same key (new rights, new expiry) is a change.
    return f"{key}/{claims.get('jti', '')}"


def write_creds(path: Path, token: str, seed: str) -> None:
    """Write a ``.creds`` file (mode 0600, never over an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_CREDS.format(jwt=token, seed=seed))


def cluster_user(
    signing_seed: bytes,
    clusterset: str,
    cluster: str,
    *,
    account: str | None = None,
    expires_in: float | None = None,
) -> tuple[str, str]:
    """A new user for ``cluster`` with exactly a cluster's permissions: (user JWT, user seed).

    ``signing_seed`` is the account's own seed or one of its signing keys; with a signing key,
    ``account`` (the account's public key) names the account the user belongs to.
    """
    try:
        signer = nkeys.from_seed(bytearray(signing_seed.strip()))
        signer_key = bytes(signer.public_key).decode()
    except (nkeys.NkeysError, ValueError, IndexError) as exc:
        raise ValueError(f"the account signing key is not an nkey seed ({exc})") from None
    if not signer_key.startswith("A"):
        raise ValueError("the signing key is not an account key (it must start with SA)")
    if account is not None and not (account.startswith("A") and len(account) == 56):
        raise ValueError(f"{account!r} is not an account public key")
    user = create_user_pair()
    claims = UserClaims(bytes(user.public_key).decode(), cluster)
    rights = cluster_permissions(clusterset, cluster)
    claims.nats.pub.allow = list(rights["publish"]["allow"])
    claims.nats.sub.allow = list(rights["subscribe"]["allow"])
    if account is not None and account != signer_key:
        claims.nats.issuer_account = account
    if expires_in is not None:
        claims.exp = int(time.time() + expires_in)
    token = claims.encode(signer)
    return token, bytes(user.seed).decode()
