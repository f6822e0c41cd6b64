"""--shared-inbound outside the bus: its stream's name in settings and in replay."""

from __future__ import annotations

import pytest

from federation.adapters.bus import inbound_stream, shared_inbound_stream
from federation.app.replay import split_name
from federation.settings import Settings, SettingsError


def _settings(**kw: object) -> Settings:
    return Settings(clusterset="cs", cluster="a", members=("a", "b"), nats_url="", **kw)  # type: ignore[arg-type]


def test_a_shared_inbound_stream_needs_a_nats_cluster_that_can_name_it() -> None:
    assert _settings(shared_inbound=True, nats_cluster="region-1").shared_inbound
    with pytest.raises(SettingsError, match="DNS label"):
        _settings(shared_inbound=True, nats_cluster="hub.1")
    assert _settings(nats_cluster="hub_1").nats_cluster == "hub_1"  # own inbound: unchanged


def test_replay_tells_a_shared_inbound_stream_from_a_clusters_own() -> None:
    assert split_name(inbound_stream("cs", "a")) == ("IN", "cs", "a")
    assert split_name(shared_inbound_stream("cs", "region-1")) == ("IN", "cs", "@region-1")
    assert split_name("FED_IN_cs_x_y") is None
