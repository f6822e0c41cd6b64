"""The command line: `federation weights` (offline what-if) and the checks on `demo`'s flags."""

import io
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from federation.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "loads.json"


def test_the_readme_example() -> None:
    result = CliRunner().invoke(main, ["weights", "--loads", str(EXAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.output)
    assert doc["here"] == "local"
    assert {k: v["weight"] for k, v in doc["weights"].items()} == {
        "ap-south": 0,
        "eu-west": 314_647,
        "local": 628_391,
        "us-east": 56_962,
    }
    assert doc["weights"]["ap-south"]["reason"].endswith("shedding: no spare")
    assert "over level 0.73: spills 37%" in doc["weights"]["local"]["reason"]
    assert "spare 2.1 req/s (x0.50" in doc["weights"]["us-east"]["reason"]


def test_an_unknown_epp_status_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "l.json"
    f.write_bytes(orjson.dumps({"backends": {"local": {"ready_pods": 2, "epp_status": "on-fire"}}}))
    result = CliRunner().invoke(main, ["weights", "--loads", str(f)])
    assert result.exit_code == 2
    assert "on-fire" in result.output


def test_the_queue_counts_in_saturation_without_rates(tmp_path: Path) -> None:
    """Without rates (the saturation policy): queue / 5 is saturation, as the README says."""
    f = tmp_path / "l.json"
    backends = {"local": {"ready_pods": 4, "queue_size": 4.5}, "b": {"ready_pods": 4}}
    f.write_bytes(orjson.dumps({"backends": backends}))
    result = CliRunner().invoke(main, ["weights", "--loads", str(f), "--json"])
    assert result.exit_code == 0, result.output
    weights = orjson.loads(result.output)["weights"]
    # saturation 0.9 > 0.8: spills (0.9 - 0.8) / 0.2 = 50 %
    assert weights["local"]["weight"] == 500_000
    assert weights["b"]["weight"] == 500_000


def test_the_table_names_every_backend() -> None:
    result = CliRunner().invoke(main, ["weights", "--loads", str(EXAMPLE)], terminal_width=200)
    assert result.exit_code == 0
    for backend in ("ap-south", "eu-west", "local", "us-east"):
        assert backend in result.output


def test_local_cluster_is_preferred_when_named(tmp_path: Path) -> None:
    f = tmp_path / "l.json"
    f.write_bytes(
        orjson.dumps(
            {"backends": {"a": {"ready_pods": 2, "saturation": 0.3}, "b": {"ready_pods": 9}}}
        )
    )
    result = CliRunner().invoke(main, ["weights", "--loads", str(f), "--local", "a", "--json"])
    doc = orjson.loads(result.output)
    assert doc["here"] == "a"
    assert doc["weights"]["a"]["weight"] == 1_000_000


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "malformed"),
        (b'{"backends": {}}', "empty"),
        (b'{"backends": {"a": {"ready_pods": -1}}}', ">= 0"),
        (b'{"backends": {"a": {"ready_pods": 1, "saturation": 3}}}', "<= 1.0"),
        (b'{"backends": {"a": {"ready_pods": 1, "sturation": 0.3}}}', "unknown field"),
        (b"[]", "Expected `object`"),
    ],
)
def test_malformed_input_is_a_clear_error_with_exit_code_2(
    tmp_path: Path, content: bytes, message: str
) -> None:
    f = tmp_path / "bad.json"
    f.write_bytes(content)
    result = CliRunner().invoke(main, ["weights", "--loads", str(f)])
    assert result.exit_code == 2
    assert message.lower() in result.output.lower()


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["weights", "--loads", str(tmp_path / "nope.json")])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["--kill", "eu-west"],
        ["--kill", "mars", "--at", "3"],
        ["--at", "3"],
        ["--kill", "eu-west", "--at", "5", "--revive-at", "4"],
    ],
)
def test_demo_chaos_flags_are_checked_before_anything_starts(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["demo", "--duration", "1", *args])
    assert result.exit_code == 2
    assert "--" in result.output


def test_keygen_writes_keys_only_its_owner_reads_and_prints_their_public_keys(
    tmp_path: Path,
) -> None:
    from federation.adapters.nkey_file import public_key

    signing, nkey = tmp_path / "signing.pem", tmp_path / "login.nk"
    made = CliRunner().invoke(main, ["keygen", str(signing)])
    assert made.exit_code == 0, made.output
    made = CliRunner().invoke(main, ["keygen", "--nats-nkey", str(nkey)])
    assert made.exit_code == 0, made.output
    assert made.output.strip() == public_key(nkey)
    assert made.output.startswith("U")
    assert {signing.stat().st_mode & 0o777, nkey.stat().st_mode & 0o777} == {0o600}
    again = CliRunner().invoke(main, ["keygen", "--nats-nkey", str(nkey)])
    assert again.exit_code == 2  # never overwrites a key
    assert "refusing to overwrite" in again.output


def test_agent_refuses_an_unusable_or_doubled_nats_login(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nk"
    bad.write_text("not a seed\n")
    base = ["agent", "--clusterset", "cs", "--cluster", "a", "--members", "a,b",
            "--nats-url", "nats://127.0.0.1:1", "--insecure"]  # fmt: skip
    result = CliRunner().invoke(main, [*base, "--nats-nkey", str(bad)])
    assert result.exit_code == 2
    assert "not an nkey seed" in result.output
    result = CliRunner().invoke(main, [*base, "--nats-nkey", str(bad), "--nats-user", "a"])
    assert result.exit_code == 2
    assert "one of --nats-nkey, --nats-creds or --nats-user" in result.output
    result = CliRunner().invoke(main, [*base, "--nats-creds", str(bad)])
    assert result.exit_code == 2
    assert "not a NATS .creds file" in result.output


def test_keygen_creds_refuses_a_key_that_is_not_an_accounts(tmp_path: Path) -> None:
    from federation.adapters.nkey_file import create_user_seed

    create_user_seed(tmp_path / "user.nk")  # a user's seed cannot sign users
    result = CliRunner().invoke(main, [
        "keygen", str(tmp_path / "a.creds"), "--nats-creds", "--clusterset", "cs",
        "--cluster", "a", "--account-signing-key", str(tmp_path / "user.nk"),
    ])  # fmt: skip
    assert result.exit_code == 2
    assert "not an account key" in result.output
    assert not (tmp_path / "a.creds").exists()
    missing = CliRunner().invoke(main, ["keygen", str(tmp_path / "b.creds"), "--nats-creds"])
    assert missing.exit_code == 2
    assert "needs --clusterset, --cluster and --account-signing-key" in missing.output


def test_status_tables_fit_80_columns_and_show_beat_ages() -> None:
    from rich.console import Console

    from federation.tables import status_view

    backend = {"weight": 600_000, "percent": 60.0, "reason": "spills 40% above 80% saturation",
               "epp": "10.0.0.1:9002", "parents": []}  # fmt: skip
    doc = {
        "cluster": "ap-south",
        "lease_s": 10,
        "link": {"suspect": False, "reason": ""},
        "peers": {
            "us-east": {
                "lease_age_s": 0.4,
                "stale": False,
                "exports": 3,
                "last_beat_sequence": 1796160037819832676,
                "last_beat_age_s": 0.4,
                "missed_events": 0,
                "clock_offset_s": -31.5,
            },
        },
        "imports": {"llm/llama-3-70b": {"backends": {"local": backend, "us-east": backend}}},
        "feeds": {
            "haproxy": {
                "healthy": False,
                "failures": 3,
                "last_ok_age_s": None,
                "last_error": "FileNotFoundError: [Errno 2] No such file " * 3,
            }
        },
    }
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(status_view(doc))
    text = console.export_text()
    assert "0.4s ago" in text
    assert "31.5s behind" in text
    assert "1796160037819832676" not in text  # the raw hybrid sequence means nothing to a reader
    assert max(len(line) for line in text.splitlines()) <= 80


AGENT = ["agent", "--clusterset", "cs", "--cluster", "a", "--members", "a,b",
         "--nats-url", "nats://127.0.0.1:1", "--kube-url", "http://127.0.0.1:1"]  # fmt: skip


def test_the_agent_refuses_to_run_insecure_unless_told(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, AGENT, env={})
    assert result.exit_code == 2
    assert "refusing to run without --signing-key and --trust-bundle" in result.output
    assert "--insecure" in result.output
    key, bundle = tmp_path / "k", tmp_path / "b"
    key.write_text("x")
    bundle.write_text("{}")
    signed = [*AGENT, "--signing-key", str(key), "--trust-bundle", str(bundle)]
    result = CliRunner().invoke(main, signed, env={})
    assert result.exit_code == 2
    assert "--nats-ca (TLS) or --nats-nkey" in result.output  # signed, but a plain login


def test_an_unknown_weights_mode_is_refused() -> None:
    from federation.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="weights mode"):
        Settings(clusterset="c", cluster="a", members=("a",), nats_url="", weights_mode="magic")


def test_a_negative_overflow_ratio_is_refused() -> None:
    from federation.settings import Settings, SettingsError

    result = CliRunner().invoke(main, [*AGENT, "--overflow-ratio", "-1"], env={})
    assert result.exit_code == 2
    assert "--overflow-ratio" in result.output
    with pytest.raises(SettingsError, match="overflow ratio"):
        Settings(clusterset="c", cluster="a", members=("a",), nats_url="", overflow_ratio=-1.0)


def test_the_overflow_from_a_loads_file_and_off_by_its_ratio(tmp_path: Path) -> None:
    """Beyond the set's capacity the smallest takes what the others cannot hold, unless
    ``policy.overflow_ratio`` is 0 (the agent's ``--overflow-ratio 0``)."""

    def backend(pods: int, demand: float, capacity: float) -> dict[str, float]:
        busy = min(1.0, demand / capacity)
        return {"ready_pods": pods, "kv_cache_utilization": busy, "arrival_rate": demand,
                "completion_rate": min(demand, capacity), "capacity_rate": capacity}  # fmt: skip

    doc = {"backends": {"local": backend(12, 116.0, 95.0), "mid": backend(10, 91.0, 78.0),
                        "small": backend(6, 43.0, 47.0)}}  # fmt: skip
    weights = {}
    for ratio in (2.0, 0.0):
        f = tmp_path / f"overload-{ratio}.json"
        f.write_bytes(orjson.dumps({**doc, "policy": {"overflow_ratio": ratio}}))
        result = CliRunner().invoke(main, ["weights", "--loads", str(f), "--json"])
        assert result.exit_code == 0, result.output
        weights[ratio] = orjson.loads(result.output)["weights"]
    assert weights[2.0]["small"]["weight"] > 0
    assert "overflow" in weights[2.0]["small"]["reason"]
    assert weights[0.0]["small"]["weight"] == 0


def test_the_fixed_modes_from_a_loads_file(tmp_path: Path) -> None:
    """``policy.mode`` in the file: the example under static splits evenly over those that can
    serve (ap-south sheds, but can serve), under local-only keeps everything local."""
    example = orjson.loads(EXAMPLE.read_bytes())
    for mode, expected in (
        ("static", {"ap-south": 250_000, "eu-west": 250_000, "local": 250_000, "us-east": 250_000}),
        ("local-only", {"ap-south": 0, "eu-west": 0, "local": 1_000_000, "us-east": 0}),
    ):
        f = tmp_path / f"{mode}.json"
        f.write_bytes(orjson.dumps({**example, "policy": {"mode": mode}}))
        result = CliRunner().invoke(main, ["weights", "--loads", str(f), "--json"])
        assert result.exit_code == 0, result.output
        doc = orjson.loads(result.output)
        assert {k: v["weight"] for k, v in doc["weights"].items()} == expected
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({**example, "policy": {"mode": "magic"}}))
    assert CliRunner().invoke(main, ["weights", "--loads", str(bad)]).exit_code == 2
