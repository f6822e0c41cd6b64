from federation.model.loads import LoadSample, worth_publishing

S = LoadSample(observed_at=0.0, ready_pods=4, saturation=0.5, kv_cache_utilization=0.5)


def _worth(prev: LoadSample | None, cur: LoadSample, last: float | None = 0.0) -> bool:
    return worth_publishing(
        prev, cur, last_published_at=last, now=1.0, threshold=0.05, keepalive=3.0
    )


def test_first_sample_is_published() -> None:
    assert _worth(None, S, None)


def test_small_changes_wait_for_the_keepalive() -> None:
    small = LoadSample(observed_at=1.0, ready_pods=4, saturation=0.52, kv_cache_utilization=0.5)
    assert not _worth(S, small)
    assert worth_publishing(S, small, last_published_at=0.0, now=3.0, threshold=0.05, keepalive=3.0)


def test_material_changes_publish_at_once() -> None:
    assert _worth(S, LoadSample(observed_at=1.0, ready_pods=4, saturation=0.6))
    assert _worth(
        S, LoadSample(observed_at=1.0, ready_pods=3, saturation=0.5, kv_cache_utilization=0.5)
    )
    assert _worth(
        S,
        LoadSample(
            observed_at=1.0,
            ready_pods=4,
            saturation=0.5,
            kv_cache_utilization=0.5,
            epp_status="shedding",
        ),
    )


def test_backend_load_ages_from_observation() -> None:
    assert S.as_backend_load(now=2.5).age == 2.5


def test_every_field_the_weights_read_is_compared() -> None:
    # Under a fuller KV cache a queue moves no saturation, yet the plan weighs it as backlog;
    # completions feed the capacity estimate. A digest repeats an entry that is not worth
    # publishing for as long as other pools' moves send digests, so neither may be ignored.
    full = LoadSample(observed_at=0.0, ready_pods=4, saturation=0.95, kv_cache_utilization=0.95)
    queued = LoadSample(observed_at=1.0, ready_pods=4, saturation=0.95,
                        kv_cache_utilization=0.95, queue_size=1.0)  # fmt: skip
    assert _worth(full, queued)
    rated = LoadSample(observed_at=0.0, ready_pods=4, saturation=0.5, arrival_rate=8.0,
                       completion_rate=8.0, capacity_rate=10.0)  # fmt: skip
    slower = LoadSample(observed_at=1.0, ready_pods=4, saturation=0.5, arrival_rate=8.0,
                        completion_rate=6.0, capacity_rate=10.0)  # fmt: skip
    assert _worth(rated, slower)
    jitter = LoadSample(observed_at=1.0, ready_pods=4, saturation=0.5, arrival_rate=8.1,
                        completion_rate=7.9, capacity_rate=10.0, queue_size=0.1)  # fmt: skip
    assert not _worth(rated, jitter)
