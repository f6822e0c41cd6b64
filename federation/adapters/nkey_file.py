"""A NATS nkey user seed kept in a file (a mounted Secret): this cluster's NATS login by key.

Watched for rotation by ``login_file.LoginFile``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nkeys


def create_user_seed(path: Path) -> str:
    """Write a new nkey user seed (mode 0600); return its public key (``U...``)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed + b"\n")
    return public_key(path)


def public_key(path: Path) -> str:
    """The public key of the user seed in ``path``; raises ``ValueError`` on anything else."""
    try:
        pair = nkeys.from_seed(bytearray(path.read_bytes().strip()))
        key = bytes(pair.public_key).decode()
    except (nkeys.NkeysError, ValueError, IndexError) as exc:
        raise ValueError(f"{path}: not an nkey seed ({type(exc).__name__})") from None
    if not key.startswith("U"):
        raise ValueError(f"{path}: an nkey seed, but not a user's")
    return key
