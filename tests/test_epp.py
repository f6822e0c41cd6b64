"""The EPP scraper against real HTTP endpoints, healthy and hostile."""

from __future__ import annotations

import asyncio
import math
import socket

import pytest

from federation.adapters.epp import EppScraper, pool_metrics
from federation.kit.sim.epp import CLASSIC, LLM_D, render_metrics
from federation.kit.text_server import TextServer
from federation.model.loads import InvalidMetrics, LoadSample, sample_from_metrics
from federation.model.pools import PoolKey
from tests.model.factories import pool

SAMPLE = LoadSample(
    observed_at=0,
    ready_pods=5,
    kv_cache_utilization=0.4,
    queue_size=1.0,
    running_requests=7.0,
    saturation=0.4,
)


@pytest.fixture
async def served():  # type: ignore[no-untyped-def]
    pages: dict[str, tuple[int, str]] = {}
    server = TextServer(lambda path: pages.get(path, (404, "nope")))
    await server.start()
    scraper = EppScraper(timeout=0.5)
    try:
        yield pages, server, scraper
    finally:
        await scraper.close()
        await server.stop()


@pytest.mark.parametrize("family", [CLASSIC, LLM_D])
async def test_both_metric_families_are_read(served, family: dict) -> None:  # type: ignore[no-untyped-def]
    pages, server, scraper = served
    pages["/m"] = (200, render_metrics("p", SAMPLE, family))
    got = await scraper.sample(pool("p", metrics_url=server.url("/m")))
    assert got.epp_status == "ok"
    assert got.ready_pods == 5
    assert got.kv_cache_utilization == 0.4
    assert got.running_requests == 7.0
    assert math.isclose(got.saturation, 0.4)
    assert not scraper.failures


async def test_only_the_pools_own_series_count(served) -> None:  # type: ignore[no-untyped-def]
    pages, server, scraper = served
    other = LoadSample(observed_at=0, ready_pods=99, kv_cache_utilization=0.9)
    pages["/m"] = (
        200,
        render_metrics("other", other, CLASSIC) + render_metrics("p", SAMPLE, CLASSIC),
    )
    got = await scraper.sample(pool("p", metrics_url=server.url("/m")))
    assert got.ready_pods == 5


@pytest.mark.parametrize(
    ("page", "status", "reason"),
    [
        ((500, "boom"), "unreachable", "http-error"),
        ((503, ""), "no-endpoints", "http-503"),
        ((429, ""), "shedding", "http-429"),
        ((200, "<html>garbage{{{ \x00"), "invalid", "invalid-metrics"),
        ((200, "# nothing here\n"), "invalid", "invalid-metrics"),
        ((200, 'inference_pool_ready_pods{name="p"} NaN\n'), "invalid", "invalid-metrics"),
        ((200, 'inference_pool_ready_pods{name="p"} -3\n'), "invalid", "invalid-metrics"),
        (
            (
                200,
                'inference_pool_ready_pods{name="p"} 3\n'
                'inference_pool_average_kv_cache_utilization{name="p"} 7\n',
            ),
            "invalid",
            "invalid-metrics",
        ),
    ],
)
async def test_faults_give_an_unhealthy_sample_and_a_counter(  # type: ignore[no-untyped-def]
    served, page: tuple[int, str], status: str, reason: str
) -> None:
    pages, server, scraper = served
    pages["/m"] = page
    got = await scraper.sample(pool("p", metrics_url=server.url("/m")))
    assert got.epp_status == status
    assert scraper.failures[reason] == 1


async def test_a_silent_endpoint_times_out(served) -> None:  # type: ignore[no-untyped-def]
    _, _, scraper = served
    # A listening socket that never accepts: the kernel completes the handshake, nobody answers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        got = await scraper.sample(pool("p", metrics_url=f"http://127.0.0.1:{port}/metrics"))
    assert got.epp_status == "unreachable"
    assert scraper.failures["timeout"] == 1


async def test_a_closed_port_and_a_missing_address_are_unreachable(served) -> None:  # type: ignore[no-untyped-def]
    _, _, scraper = served
    free = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = free.sockets[0].getsockname()[1]
    free.close()
    await free.wait_closed()
    got = await scraper.sample(pool("p", metrics_url=f"http://127.0.0.1:{port}/metrics"))
    assert got.epp_status == "unreachable"
    assert (await scraper.sample(pool("p"))).epp_status == "unreachable"
    assert scraper.failures["unreachable"] == 1
    assert scraper.failures["no-endpoint"] == 1


def test_reduction_takes_the_strongest_saturation_signal() -> None:
    got = sample_from_metrics(
        {
            "inference_pool_ready_pods": 4,
            "inference_pool_average_kv_cache_utilization": 0.2,
            "inference_pool_average_queue_size": 4.0,
        },
        observed_at=1,
    )
    assert math.isclose(got.saturation, 0.8)  # queue 4 of the critical 5
    got = sample_from_metrics(
        {"llm_d_epp_ready_endpoints": 4, "inference_extension_flow_control_pool_saturation": 1.0},
        observed_at=1,
    )
    assert (got.saturation, got.epp_status) == (1.0, "shedding")
    got = sample_from_metrics({"inference_pool_ready_pods": 0}, observed_at=1)
    assert got.epp_status == "no-endpoints"


@pytest.mark.parametrize("bad", [{"inference_pool_ready_pods": float("inf")}, {}])
def test_reduction_rejects_impossible_metrics(bad: dict) -> None:
    with pytest.raises(InvalidMetrics):
        sample_from_metrics(bad, observed_at=1)


def test_unlabelled_series_are_taken_as_the_pools() -> None:
    assert pool_metrics("inference_pool_ready_pods 3\n", "p") == {"inference_pool_ready_pods": 3}


def test_pool_key_path_roundtrip() -> None:
    from federation.kit.sim.epp import metrics_path

    assert metrics_path(PoolKey("llm", "a.b")) == "/pools/llm/a.b/metrics"


async def test_counters_are_summed_over_their_series(served) -> None:  # type: ignore[no-untyped-def]
    pages, server, scraper = served
    counted = LoadSample(observed_at=0, ready_pods=2, requests_total=40.0, completions_total=30.0)
    pages["/m"] = (200, render_metrics("p", counted, CLASSIC))
    got = await scraper.sample(pool("p", metrics_url=server.url("/m")))
    assert (got.requests_total, got.completions_total) == (40.0, 30.0)


def test_a_negative_counter_is_invalid() -> None:
    with pytest.raises(InvalidMetrics, match="requests_total"):
        sample_from_metrics(
            {"inference_pool_ready_pods": 1, "inference_objective_request_total": -1},
            observed_at=1,
        )
