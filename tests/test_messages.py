import msgspec
import orjson
import pytest

from federation import messages
from federation.messages import InvalidEvent
from tests.model.factories import beat, digest, entry, export, load


@pytest.mark.parametrize("event", [export(), export(withdrawn=True), load(), beat()])
def test_round_trip(event: messages.Event) -> None:
    assert messages.decode(messages.encode(event)) == event


def test_unknown_fields_from_a_newer_minor_version_are_ignored() -> None:
    payload = orjson.loads(messages.encode(load()))
    payload["gpu_kind"] = "H100"
    assert messages.decode(orjson.dumps(payload)) == load()


def test_missing_defaulted_fields_take_defaults() -> None:
    payload = {"type": "beat", "cluster": "a", "sequence": 3, "published_at": 1.0}
    assert messages.decode(orjson.dumps(payload)) == beat(sequence=3, published_at=1.0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "malformed"),
        (b"", "malformed"),
        (b'{"type": "export.v9", "cluster": "a"}', "unknown-type"),
        (b'{"type": "beat", "cluster": "a"}', "schema"),
        (b'{"type": "beat", "cluster": "a", "sequence": "x", "published_at": 1}', "schema"),
        (b'{"type": "beat", "cluster": "A_B", "sequence": 1, "published_at": 1}', "schema"),
        (b"[1, 2, 3]", "schema"),
        (b" " * (messages.MAX_EVENT_BYTES + 1), "oversized"),
    ],
)
def test_bad_payloads_raise_with_a_countable_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        messages.decode(payload)
    assert info.value.reason == reason


def test_hostile_names_are_rejected() -> None:
    for name in ("a.>", "*", "a b", "-x", "x" * 300):
        payload = orjson.loads(messages.encode(load()))
        payload["name"] = name
        with pytest.raises(InvalidEvent):
            messages.decode(orjson.dumps(payload))


def test_subjects_are_versioned_and_escape_dots_in_pool_names() -> None:
    assert (
        messages.export_subject("cs", "a", "llm", "llama.v3") == "fed.v1.cs.export.a.llm.llama~v3"
    )
    assert messages.untoken("llama~v3") == "llama.v3"
    assert messages.subject_for("cs", beat()) == "fed.v1.cs.beat.a"
    assert messages.subject_for("cs", load()) == "fed.v1.cs.load.a.llm.pool"


def test_own_subjects_cover_exactly_the_clusters_events() -> None:
    subjects = messages.own_subjects("cs", "a")
    assert subjects == [
        "fed.v1.cs.export.a.>", "fed.v1.cs.load.a.>", "fed.v1.cs.digest.a", "fed.v1.cs.beat.a",
    ]  # fmt: skip


def test_msg_ids_differ_per_sequence_and_subject() -> None:
    events = (load(), load(sequence=2), load(name="q"), export(), digest(), digest(sequence=2))
    assert len({messages.msg_id(e) for e in events}) == 6


def test_structs_follow_the_evolution_rules() -> None:
    for cls in messages.EVENT_TYPES:
        config = cls.__struct_config__
        assert config.frozen
        assert config.tag_field == "type"
        assert not config.forbid_unknown_fields
        with pytest.raises(TypeError):
            cls("a")  # keyword-only: adding a field can never shift a positional argument
        assert isinstance(msgspec.json.schema(cls), dict)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ready_pods", -1),
        ("saturation", 1.5),
        ("kv_cache_utilization", -0.1),
        ("queue_size", -3.0),
        ("sequence", -5),
    ],
)
def test_values_no_epp_can_produce_are_rejected(field: str, value: float) -> None:
    payload = orjson.loads(messages.encode(load()))
    payload[field] = value
    with pytest.raises(InvalidEvent) as info:
        messages.decode(orjson.dumps(payload))
    assert info.value.reason == "schema"


def test_a_load_report_of_the_previous_version_decodes_without_rates() -> None:
    """Mixed fleets: a report from an agent before the rate plan has no rates, and weighs by
    the saturation policy's fallback (tests/model/test_spill_plan.py)."""
    old = orjson.dumps({
        "type": "load", "cluster": "a", "namespace": "llm", "name": "p", "sequence": 1,
        "observed_at": 1.0, "published_at": 1.0, "ready_pods": 2, "saturation": 0.5,
    })  # fmt: skip
    report = messages.decode(old)
    assert isinstance(report, messages.LoadReport)
    assert (report.arrival_rate, report.completion_rate, report.capacity_rate) == (None,) * 3
    with pytest.raises(InvalidEvent, match="schema"):
        messages.decode(old.replace(b'"ready_pods"', b'"arrival_rate":-1,"ready_pods"'))


def test_a_digest_round_trips_and_reads_as_one_report_per_pool() -> None:
    d = digest(pools=(entry("p1", saturation=0.25), entry("p2.v2", epp_status="unreachable")))
    assert messages.subject_for("cs", d) == "fed.v1.cs.digest.a"
    back = messages.decode(messages.encode(d))
    assert back == d
    reports = [messages.report_of(d, p) for p in d.pools]
    assert [(r.name, r.sequence, r.published_at) for r in reports] == [
        ("p1", d.sequence, d.published_at), ("p2.v2", d.sequence, d.published_at),
    ]  # fmt: skip
    assert reports[0].saturation == 0.25
    assert reports[1].epp_status == "unreachable"
    assert messages.entry_content(d.pools[1]) == msgspec.structs.astuple(reports[1])[6:]


def test_a_digest_entry_carries_a_reports_load_fields_in_the_same_order() -> None:
    """Beliefs compare an entry with a held report field by field, by position."""
    report_fields = messages.LoadReport.__struct_fields__
    entry_fields = messages.PoolLoad.__struct_fields__
    assert report_fields[6:] == entry_fields[3:]
    assert report_fields[:6] == ("cluster", "namespace", "name", "sequence", "observed_at",
                                 "published_at")  # fmt: skip
    assert entry_fields[:3] == ("namespace", "name", "observed_at")


@pytest.mark.parametrize(
    ("pools", "why"),
    [
        ((entry("p"), entry("p")), "listed twice"),
        ((entry("Bad_Name"),), "not a DNS subdomain"),
        ((entry("p", namespace="a.b"),), "not a DNS label"),
        (tuple(entry(f"p{i}") for i in range(messages.MAX_DIGEST_POOLS + 1)), "pools >"),
    ],
)
def test_a_digest_with_hostile_entries_is_refused(
    pools: tuple[messages.PoolLoad, ...], why: str
) -> None:
    with pytest.raises(InvalidEvent, match=why) as info:
        messages.decode(messages.encode(digest(pools=pools)))
    assert info.value.reason == "schema"


def test_digest_names_checked_once_are_remembered_boundedly_and_never_admit_a_bad_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pool names that passed are not checked again (a peer lists the same pools in every
    digest); what is remembered is bounded, and a bad name is refused however often it comes."""
    monkeypatch.setattr(messages, "_VALID_POOLS", set())
    monkeypatch.setattr(messages, "_VALID_POOLS_MAX", 3)
    checked: list[str] = []
    check = messages._check_pool_names
    monkeypatch.setattr(
        messages, "_check_pool_names", lambda ns, name: (checked.append(name), check(ns, name))
    )
    for _ in range(3):
        messages.decode(messages.encode(digest(pools=(entry("q"),))))
    assert checked == ["q"]  # checked once, then remembered
    for i in range(5):
        messages.decode(messages.encode(digest(pools=(entry(f"p{i}"), entry("q")))))
        assert len(messages._VALID_POOLS) <= 3
    for _ in range(2):
        with pytest.raises(InvalidEvent, match="not a DNS subdomain"):
            messages.decode(messages.encode(digest(pools=(entry("q"), entry("Bad_Name")))))
    assert ("llm", "Bad_Name") not in messages._VALID_POOLS
    with pytest.raises(InvalidEvent, match="listed twice"):
        messages.decode(messages.encode(digest(pools=(entry("q"), entry("q")))))


def test_export_and_report_names_share_the_bounded_memory_and_a_bad_one_is_always_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent takes each pool's export in once per exporter (10,000 at 100 x 100): the names
    are checked once, as a digest's are, and a bad one is refused every time it comes."""
    monkeypatch.setattr(messages, "_VALID_POOLS", set())
    checked: list[str] = []
    check = messages._check_pool_names
    monkeypatch.setattr(
        messages, "_check_pool_names", lambda ns, name: (checked.append(name), check(ns, name))
    )
    for cluster in ("a", "b", "c"):
        messages.decode(messages.encode(export(cluster, "q")))
    messages.decode(messages.encode(digest(pools=(entry("q"),))))
    assert checked == ["q"]
    for _ in range(2):
        with pytest.raises(InvalidEvent, match="not a DNS subdomain"):
            messages.decode(messages.encode(export("a", "Bad_Name")))
    assert checked == ["q", "Bad_Name", "Bad_Name"]


def test_a_heartbeat_of_the_previous_version_says_it_reads_no_digests() -> None:
    old = orjson.dumps({"type": "beat", "cluster": "a", "sequence": 1, "published_at": 1.0})
    beat_ = messages.decode(old)
    assert isinstance(beat_, messages.Heartbeat)
    assert beat_.load_digests is False
