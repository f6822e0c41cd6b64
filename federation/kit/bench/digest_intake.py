"""What taking one peer's load digest in costs, in process: decode and check, then apply.

A digest of 100 pools with 10 entries moved (the common case: most entries only renew), 2,000
of them, best of 7 rounds. No servers: this isolates the per-digest Python cost that the scale
benchmark's agents pay for every peer's digest (BENCHMARKS.md, session 13).

    python -m federation.kit.bench.digest_intake
"""

from __future__ import annotations

import random
import time

from federation import messages
from federation.messages import Event, LoadDigest, PoolLoad
from federation.model.beliefs import Beliefs

POOLS = 100
MOVED = 10
DIGESTS = 2_000
ROUNDS = 7


def _digest(sequence: int, moved: set[int]) -> bytes:
    pools = tuple(
        PoolLoad(
            namespace="llm",
            name=f"c001-p{j}",
            observed_at=sequence / 1e3,
            ready_pods=4,
            kv_cache_utilization=0.4 if j in moved else 0.3,
            saturation=0.4 if j in moved else 0.3,
        )
        for j in range(POOLS)
    )
    digest = LoadDigest(cluster="c001", sequence=sequence, published_at=sequence / 1e3, pools=pools)
    return messages.encode(digest)


def measure(seed: int = 1) -> dict[str, float]:
    """Microseconds per digest: decode and check, and apply (best of the rounds)."""
    rng = random.Random(seed)
    payloads = [_digest(s + 1, set(rng.sample(range(POOLS), MOVED))) for s in range(DIGESTS)]
    decode, apply = [], []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        events: list[Event] = [messages.decode(p) for p in payloads]
        decode.append((time.perf_counter() - began) / DIGESTS * 1e6)
        beliefs = Beliefs()
        began = time.perf_counter()
        for i, event in enumerate(events):
            beliefs.apply(event, float(i))
        apply.append((time.perf_counter() - began) / DIGESTS * 1e6)
    return {"decode_and_check_us": round(min(decode), 1), "apply_us": round(min(apply), 1)}


def main() -> None:
    figures = measure()
    print(
        f"per {POOLS}-pool digest ({MOVED} moved), best of {ROUNDS}: decode and check "
        f"{figures['decode_and_check_us']} us, apply {figures['apply_us']} us"
    )


if __name__ == "__main__":
    main()
