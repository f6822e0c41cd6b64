"""NATS operator mode for tests and demos: an operator, a system account and one account for the
ClusterSet (JetStream enabled, with a signing key), their JWTs preloaded into the servers'
memory resolver; per-cluster users are issued by the product itself (``adapters.nats_creds``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nkeys
from nats_jwt.nkeys_ext import create_account_pair, create_operator_pair
from nats_jwt.v2.account_claims import AccountClaims
from nats_jwt.v2.operator_claims import OperatorClaims

from federation.adapters.nats_creds import cluster_user, write_creds

UNLIMITED = -1


def _pub(pair: nkeys.KeyPair) -> str:
    return bytes(pair.public_key).decode()


@dataclass
class Operator:
    operator: nkeys.KeyPair = field(default_factory=create_operator_pair)
    system: nkeys.KeyPair = field(default_factory=create_account_pair)
    account: nkeys.KeyPair = field(default_factory=create_account_pair)
    signing: nkeys.KeyPair = field(default_factory=create_account_pair)  # the account's

    def _jwts(self) -> tuple[str, str, str]:
        op = OperatorClaims(_pub(self.operator), "federation-test")
        op.nats.system_account = _pub(self.system)
        system = AccountClaims(_pub(self.system), "SYS")
        account = AccountClaims(_pub(self.account), "federation")
        # A list, as nats-server reads it (nats-jwt would write the key set as a map of nulls).
        account.nats.signing_keys = [_pub(self.signing)]
        limits = account.nats.limits
        limits.disk_storage = limits.streams = limits.consumer = UNLIMITED
        return (op.encode(self.operator), system.encode(self.operator),
                account.encode(self.operator))  # fmt: skip

    def server_config(self) -> str:
        """The block a nats-server config needs to run in operator mode (memory resolver)."""
        op, system, account = self._jwts()
        return (
            f"operator: {op}\n"
            f"system_account: {_pub(self.system)}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n  {_pub(self.system)}: {system}\n"
            f"  {_pub(self.account)}: {account}\n}}\n"
        )

    def signing_seed(self, path: Path) -> Path:
        """The account signing key as an operator would hand it over (a seed file)."""
        path.write_bytes(bytes(self.signing.seed) + b"\n")
        path.chmod(0o600)
        return path

    def creds(self, path: Path, clusterset: str, cluster: str) -> Path:
        """A cluster's .creds, issued with the account's signing key."""
        token, seed = cluster_user(
            bytes(self.signing.seed), clusterset, cluster, account=_pub(self.account)
        )
        write_creds(path, token, seed)
        return path

    @property
    def account_key(self) -> str:
        return _pub(self.account)
