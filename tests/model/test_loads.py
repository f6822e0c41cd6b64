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
