"""From what a user asked of ``federation demo`` to its options; a ValueError says why not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from federation.kit.sim.demo import DemoOptions
from federation.kit.sim.layouts import cluster_names
from federation.kit.sim.running import Chaos
from federation.kit.sim.traffic import Burst
from federation.kit.sim.traffic_rig import TrafficOptions


@dataclass(frozen=True, kw_only=True)
class DemoRequest:
    clusters: int
    pools: int
    data_dir: Path | None = None
    trace_file: Path | None = None
    kill_cluster: str | None = None
    kill_at: float | None = None
    revive_at: float | None = None
    secure: bool = False
    spoof: bool = False
    traffic: bool | None = None  # None: on when HAProxy is installed
    burst_cluster: str | None = None
    burst_at: float = 0.0  # the CLI's flags give these (their defaults live there)
    burst_for: float = 0.0
    burst_factor: float = 1.0
    skews: tuple[str, ...] = ()  # CLUSTER=SECONDS
    weights_mode: str = "capacity"


def parse_skews(values: tuple[str, ...], names: list[str]) -> dict[str, float]:
    skews: dict[str, float] = {}
    for value in values:
        cluster, sep, seconds = value.partition("=")
        try:
            skew = float(seconds)
        except ValueError:
            skew = float("nan")
        if not sep or cluster not in names or skew != skew or abs(skew) > 86_400:
            raise ValueError(f"--skew takes CLUSTER=SECONDS with one of {', '.join(names)}")
        skews[cluster] = skew
    return skews


def plan_demo(r: DemoRequest, *, has_haproxy: bool) -> tuple[DemoOptions, Chaos | None]:
    names = cluster_names(r.clusters)
    chaos = None
    if r.kill_cluster is not None or r.kill_at is not None or r.revive_at is not None:
        if r.kill_cluster not in names or r.kill_at is None:
            raise ValueError(f"--kill needs one of {', '.join(names)} and --at SECONDS")
        if r.revive_at is not None and r.revive_at <= r.kill_at:
            raise ValueError("--revive-at must come after --at")
        chaos = Chaos(r.kill_cluster, r.kill_at, r.revive_at)
    if r.spoof and not r.secure:
        raise ValueError("--spoof needs --secure")
    if r.spoof and r.clusters < 2:
        raise ValueError("--spoof needs at least 2 clusters")
    traffic = r.traffic
    if traffic is None:  # on by default where it can run; asked for by --burst
        traffic = has_haproxy or r.burst_cluster is not None
    if traffic and not has_haproxy:
        raise ValueError(
            "the traffic demo (--traffic, --burst) needs HAProxy >= 2.5 on PATH "
            "(Debian/Ubuntu: apt-get install haproxy); --no-traffic runs without it"
        )
    if r.burst_cluster is not None and (not traffic or r.burst_cluster not in names):
        raise ValueError(f"--burst needs the traffic demo and one of {', '.join(names)}")
    traffic_options = None
    if traffic:
        burst = Burst(r.burst_cluster or names[0], r.burst_at, r.burst_for, r.burst_factor)
        traffic_options = TrafficOptions(burst=burst if r.burst_factor != 1 else None)
    options = DemoOptions(
        clusters=r.clusters,
        pools=r.pools,
        data_dir=r.data_dir,
        trace_file=r.trace_file,
        secure=r.secure,
        traffic=traffic_options,
        skews=parse_skews(r.skews, names),
        weights_mode=r.weights_mode,
    )
    return options, chaos
