"""The demo's security: per-cluster NATS users with least-privilege permissions, a signing key
per cluster and a trust bundle; and the ``--spoof`` drill that attacks it.

The drill, run once the clusters have converged, uses us-east's valid login:

1. publish an export *as eu-west* on eu-west's subject — the server refuses it (permissions);
2. on us-east's own subject, publish exports for pools that exist nowhere, each with a bad
   credential: unsigned, signed by an unknown key, signed with eu-west's real key (a stolen key of
   another cluster), and a genuine us-east signature over a different payload.

Every agent must reject 2.'s events by reason and no spoofed pool may be imported anywhere.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from federation import messages
from federation.adapters.nats_auth import ADMIN, authorization_block
from federation.adapters.signing import FileSigner, TrustBundle, generate_key, write_bundle
from federation.adapters.tls import ReloadingTls
from federation.kit.pki import Pki, create_pki
from federation.kit.rogue import publish_as
from federation.messages import ExportEvent

SECURITY_REASONS: Final = ("unsigned", "unknown-signer", "wrong-signer", "bad-signature", "expired")
SPOOFED_PREFIX: Final = "spoofed-"


@dataclass
class Security:
    clusterset: str
    passwords: dict[str, str]
    admin_password: str
    keys: dict[str, Path]
    bundle: Path
    pki: Pki
    drill: dict[str, Any] = field(default_factory=dict)
    _tls: dict[str, ReloadingTls] = field(default_factory=dict)

    @classmethod
    def create(cls, clusterset: str, clusters: list[str], folder: Path) -> Security:
        folder.mkdir(parents=True, exist_ok=True)
        keys = {c: folder / f"{c}.key" for c in clusters}
        public = {c: [generate_key(path)] for c, path in keys.items()}
        bundle = folder / "trust-bundle.json"
        write_bundle(bundle, public)
        return cls(
            clusterset,
            {c: secrets.token_urlsafe(16) for c in clusters},
            secrets.token_urlsafe(16),
            keys,
            bundle,
            create_pki(folder / "pki", [*clusters, ADMIN]),
        )

    def server_config(self) -> str:
        """Users with least privilege, and mutual TLS on the client port."""
        users = authorization_block(self.clusterset, self.passwords, self.admin_password)
        return users + self.pki.server_config()

    def tls(self, name: str) -> ReloadingTls:
        """The client TLS of ``name`` (one per name, reloaded in place when its files change)."""
        if name not in self._tls:
            self._tls[name] = self.pki.client(name)
        return self._tls[name]

    def login(self, cluster: str) -> dict[str, Any]:
        """nats-py connect options: the cluster's user, password and client certificate."""
        return {
            "user": cluster,
            "password": self.passwords[cluster],
            "tls": self.tls(cluster).context,
        }

    def admin_login(self) -> dict[str, Any]:
        return {"user": ADMIN, "password": self.admin_password, "tls": self.tls(ADMIN).context}

    def signer(self, cluster: str) -> FileSigner:
        return FileSigner(self.keys[cluster])

    def verifier(self) -> TrustBundle:
        return TrustBundle(self.bundle)


def _spoofed_export(cluster: str, name: str) -> ExportEvent:
    now = time.time()
    return ExportEvent(
        cluster=cluster, namespace="llm", name=name, generation=int(now * 1_000_000),
        exported_at=now, published_at=now, target_ports=(8000,), model=name,
    )  # fmt: skip


async def spoof_drill(security: Security, url: str, attacker: str, victim: str) -> dict[str, Any]:
    """Run the drill with ``attacker``'s login against the servers at ``url``."""
    cs, login = security.clusterset, security.login(attacker)
    as_victim = _spoofed_export(victim, f"{SPOOFED_PREFIX}as-{victim}")
    refused = await publish_as(
        url, login, messages.subject_for(cs, as_victim), messages.encode(as_victim)
    )  # fmt: skip
    forged: dict[str, str | None] = {}
    rogue_key = security.keys[attacker].with_name("rogue.key")
    generate_key(rogue_key)
    cases = {
        "unsigned": None,
        "unknown-signer": FileSigner(rogue_key),
        "wrong-signer": security.signer(victim),
        "bad-signature": security.signer(attacker),
    }
    for case, signer in cases.items():
        event = _spoofed_export(attacker, f"{SPOOFED_PREFIX}{case}")
        subject, payload = messages.subject_for(cs, event), messages.encode(event)
        headers = signer.sign(subject, payload) if signer is not None else {}
        if case == "bad-signature":  # a genuine signature, over something else
            other = messages.encode(_spoofed_export(attacker, "innocent"))
            headers = signer.sign(subject, other) if signer is not None else {}
        forged[case] = await publish_as(url, login, subject, payload, headers)
    security.drill = {
        "attacker_login": attacker,
        "publish_as_other_cluster": {"victim": victim, "refused_by_server": refused},
        "forged_events_stored": sorted(c for c, err in forged.items() if err is None),
    }
    return security.drill
