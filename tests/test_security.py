"""Security: signatures and the trust bundle (rotation without restart), per-cluster NATS
permissions enforced by real servers, and the demo's spoofing drill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federation import messages
from federation.adapters.bus import BusAddress, NatsBus
from federation.adapters.nats_auth import ADMIN, authorization_block
from federation.adapters.signing import (
    KEY_HEADER,
    SIG_HEADER,
    FileSigner,
    TrustBundle,
    generate_key,
    write_bundle,
)
from federation.kit.nats_servers import Supercluster
from federation.kit.rogue import publish_as
from tests.conftest import wait_for as wait_for_async
from tests.model.factories import export

SUBJECT = "fed.v1.cs.export.a.llm.pool"
PAYLOAD = messages.encode(export("a", "pool"))


def touch_later(path: Path) -> None:
    """Make a rewrite visible even within the file system's timestamp resolution."""
    stamp = time.time() + 5
    os.utime(path, (stamp, stamp))


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return {c: tmp_path / f"{c}.key" for c in ("a", "b", "a-next")}


@pytest.fixture
def publics(keys: dict[str, Path]) -> dict[str, str]:
    return {c: generate_key(p) for c, p in keys.items()}


def bundle(tmp_path: Path, clusters: dict[str, list[str]]) -> Path:
    path = tmp_path / "bundle.json"
    write_bundle(path, clusters)
    touch_later(path)
    return path


def test_signatures_verify_and_every_forgery_has_its_reason(
    tmp_path: Path, keys: dict[str, Path], publics: dict[str, str]
) -> None:
    trust = TrustBundle(bundle(tmp_path, {"a": [publics["a"]], "b": [publics["b"]]}))
    signed = FileSigner(keys["a"]).sign(SUBJECT, PAYLOAD)
    assert trust.verify(SUBJECT, PAYLOAD, signed, "a") is None
    assert trust.verify(SUBJECT, PAYLOAD, {}, "a") == "unsigned"
    assert trust.verify(
        SUBJECT, PAYLOAD, FileSigner(keys["a-next"]).sign(SUBJECT, PAYLOAD), "a"
    ) == ("unknown-signer")
    assert trust.verify(SUBJECT, PAYLOAD, FileSigner(keys["b"]).sign(SUBJECT, PAYLOAD), "a") == (
        "wrong-signer"
    )
    assert trust.verify(SUBJECT, PAYLOAD + b" ", signed, "a") == "bad-signature"
    moved = SUBJECT.replace("llm.pool", "llm.other")
    assert trust.verify(moved, PAYLOAD, signed, "a") == "bad-signature"
    garbage = {KEY_HEADER: publics["a"], SIG_HEADER: "!!not base64!!"}
    assert trust.verify(SUBJECT, PAYLOAD, garbage, "a") == "bad-signature"


def test_key_rotation_without_restart(
    tmp_path: Path, keys: dict[str, Path], publics: dict[str, str]
) -> None:
    path = bundle(tmp_path, {"a": [publics["a"]]})
    trust = TrustBundle(path, reload_every=0)
    live_key = tmp_path / "live.key"
    live_key.write_bytes(keys["a"].read_bytes())
    signer = FileSigner(live_key, reload_every=0)
    assert trust.verify(SUBJECT, PAYLOAD, signer.sign(SUBJECT, PAYLOAD), "a") is None

    # 1. every bundle learns the next key beside the current one
    write_bundle(path, {"a": [publics["a"], publics["a-next"]]})
    touch_later(path)
    # 2. the cluster switches its key file: new events carry the new key, and verify
    live_key.write_bytes(keys["a-next"].read_bytes())
    touch_later(live_key)
    rotated = signer.sign(SUBJECT, PAYLOAD)
    assert rotated[KEY_HEADER] == publics["a-next"]
    assert trust.verify(SUBJECT, PAYLOAD, rotated, "a") is None
    old = FileSigner(keys["a"]).sign(SUBJECT, PAYLOAD)
    assert trust.verify(SUBJECT, PAYLOAD, old, "a") is None  # in-flight events still pass
    # 3. the old key leaves the bundles: events signed with it are refused from then on
    write_bundle(path, {"a": [publics["a-next"]]})
    touch_later(path)
    assert trust.verify(SUBJECT, PAYLOAD, old, "a") == "unknown-signer"
    # A broken bundle or key file never leaves the agent without keys: the last good one stays.
    path.write_text("{not json")
    touch_later(path)
    assert trust.verify(SUBJECT, PAYLOAD, rotated, "a") is None
    live_key.write_text("garbage")
    touch_later(live_key)
    assert signer.sign(SUBJECT, PAYLOAD)[KEY_HEADER] == publics["a-next"]


@pytest.mark.bus
async def test_servers_enforce_each_clusters_publish_rights(tmp_path: Path) -> None:
    passwords = {"a": "pa", "b": "pb"}
    # Three servers: a JetStream meta group of two needs both for every election (flaky on CI).
    sc = Supercluster(["a", "b", "c"], tmp_path, authorization_block("cs", passwords, "adm"))
    await sc.start()
    try:
        published: set[str] = set()
        for cluster in ("a", "b"):
            bus = NatsBus(
                BusAddress(url=sc.url(cluster), clusterset="cs", cluster=cluster,
                           placement_cluster=cluster, members=("a", "b")),
                connect_options={"user": cluster, "password": passwords[cluster]},
            )  # fmt: skip
            await bus.connect()
            await bus.ensure_streams()
            await bus.start_consuming()  # the agent's whole JetStream path works with its rights
            await bus.watch_live()  # and so does the live path
            beat, digest = f"fed.v1.cs.beat.{cluster}", f"fed.v1.cs.digest.{cluster}"
            assert await bus.publish(beat, b"{}", f"m-{cluster}")
            assert await bus.publish(digest, b"{}", f"d-{cluster}")
            assert await bus.publish(f"fed.v1.cs.export.{cluster}.llm.x", b"{}", f"e-{cluster}")
            if cluster == "a":  # a refusal is told apart from a busy server's late ack:
                # an export waits for its ack (the server's -ERR comes meanwhile), and a live
                # event (its ack not waited for) to a subject refused lately is refused at once.
                other = "fed.v1.cs.export.b.llm.x"
                with pytest.raises(PermissionError, match=r"fed\.v1\.cs\.export\.b"):
                    await bus.publish(other, b"{}", "e-other")
                with pytest.raises(PermissionError, match=r"fed\.v1\.cs\.export\.b"):
                    await bus.publish(other, b"{}", None)
            assert len(await bus.fetch(10, 5.0)) >= 1
            heard: set[str] = set()

            async def both_heard(
                h: set[str] = heard,
                b: NatsBus = bus,
                want: frozenset[str] = frozenset((beat, digest)),
            ) -> bool:
                h.update(d.subject for d in await b.live(0.5))
                return want <= h

            await wait_for_async(both_heard, within=5, what="the live beat and digest")
            # Members' newest beats and digests by direct get (of those that published): allowed.
            published.update((beat, digest))
            assert {d.subject for d in await bus.newest_live()} == published
            await bus.close()

        # With a's valid login: b's subjects, b's streams and other clustersets are refused.
        for subject in ("fed.v1.cs.beat.b", "fed.v1.cs.export.b.llm.x", "fed.v1.other.beat.a",
                        "$JS.API.STREAM.DELETE.FED_OUT_cs_b",
                        # direct gets reach only members' beats and digests
                        "$JS.API.DIRECT.GET.FED_OUT_cs_b.fed.v1.cs.export.b.llm.x",
                        "$JS.API.DIRECT.GET.FED_OUT_cs_b"):  # fmt: skip
            refusal = await publish_as(sc.url("b"), {"user": "a", "password": "pa"}, subject, b"{}")
            assert refusal is not None
            assert "permissions violation" in refusal.lower(), (subject, refusal)
        # The same publish with b's login is stored: the refusal was about rights.
        b_login = {"user": "b", "password": "pb"}
        assert await publish_as(sc.url("b"), b_login, "fed.v1.cs.beat.b", b"{}") is None
        admin = {"user": ADMIN, "password": "adm"}
        assert await publish_as(sc.url("a"), admin, "fed.v1.cs.beat.b", b"{}") is None
    finally:
        sc.stop()


@pytest.mark.e2e
def test_secure_demo_with_spoofing_drill() -> None:
    """The issue's command: converges like the plain demo, rejects every forgery, imports none."""
    out = subprocess.run(
        [sys.executable, "-m", "federation", "demo", "--secure", "--spoof", "--duration", "20",
         "--json"],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    snapshot = json.loads(out.stdout)
    assert snapshot["converged_after_s"] is not None
    drill = snapshot["spoof_drill"]
    assert "permissions violation" in drill["publish_as_other_cluster"]["refused_by_server"]
    assert drill["forged_events_stored"] == sorted(
        ["unsigned", "unknown-signer", "wrong-signer", "bad-signature"]
    )
    for cluster, state in snapshot["clusters"].items():
        assert snapshot["security"][cluster]["rejected"] == {
            "unsigned": 1, "unknown-signer": 1, "wrong-signer": 1, "bad-signature": 1,
        }  # fmt: skip
        assert not [k for k in state["imports"] if "spoofed" in k], cluster
        assert state["imports"], "the secure demo still federates"


async def _peer_cert(sc: Supercluster, name: str) -> str:
    import aiohttp

    url = f"{sc.specs['a'].monitor_url}/connz?auth=true"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        conns = (await resp.json())["connections"] or []
    (conn,) = [c for c in conns if c.get("name") == name]
    return str(conn["tls_peer_certs"][0]["cert_sha256"])


@pytest.mark.bus
async def test_mutual_tls_and_certificate_rotation_without_restart(tmp_path: Path) -> None:
    import shutil

    import nats

    from federation.adapters.tls import ReloadingTls
    from federation.kit.pki import create_pki, issue, load_ca

    pki = create_pki(tmp_path / "pki", ["a"])
    sc = Supercluster(["a", "b", "c"], tmp_path / "nats", pki.server_config())
    await sc.start()
    try:
        no_cert = ReloadingTls(pki.ca)  # trusts the server, but shows no certificate
        with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal will do; it must refuse
            await nats.connect(sc.url("a"), tls=no_cert.context, allow_reconnect=False,
                               connect_timeout=3, max_reconnect_attempts=0)  # fmt: skip

        live = tmp_path / "live"
        live.mkdir()
        cert, key = pki.clients["a"]
        shutil.copy(cert, live / "a.crt")
        shutil.copy(key, live / "a.key")
        tls = ReloadingTls(pki.ca, live / "a.crt", live / "a.key")
        first = await nats.connect(sc.url("a"), tls=tls.context, name="first")
        before = await _peer_cert(sc, "first")

        ca_key, ca_cert = load_ca(tmp_path / "pki")
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        new_cert, new_key = issue(fresh, "a", ca_key, ca_cert, server=False)
        shutil.copy(new_key, live / "a.key")
        shutil.copy(new_cert, live / "a.crt")
        touch_later(live / "a.crt")
        assert tls.reload_if_changed()
        second = await nats.connect(sc.url("a"), tls=tls.context, name="second")
        after = await _peer_cert(sc, "second")
        assert after != before, "the new connection presents the rotated certificate"
        assert first.is_connected, "the connection made with the old certificate lives on"
        await first.close()
        await second.close()
    finally:
        sc.stop()


@pytest.mark.e2e
async def test_no_secret_reaches_logs_or_traces(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from federation.kit.sim.demo import Demo, DemoOptions
    from federation.kit.sim.layouts import cluster_names
    from federation.kit.sim.security import Security, spoof_drill

    names = cluster_names(2)
    security = Security.create("sec", cluster_names(3), tmp_path / "security")
    sc = Supercluster(cluster_names(3), tmp_path / "nats", security.server_config())
    await sc.start()
    traces = tmp_path / "spans.jsonl"
    options = DemoOptions(clusters=2, pools=3, clusterset="sec", secure=True, trace_file=traces)
    caplog.set_level(logging.DEBUG)
    demo = await Demo.start(options, sc, security)
    await demo.start_agents()
    try:
        assert await demo.wait_converged(within=30) is not None
        await spoof_drill(security, sc.url(names[0]), names[0], names[1])
    finally:
        await demo.stop()
        sc.stop()
    secrets = [*security.passwords.values(), security.admin_password]
    for path in [
        *security.keys.values(),
        *(p for pair in security.pki.clients.values() for p in pair),
    ]:
        if path.suffix == ".key":
            secrets.append(path.read_text().splitlines()[1])  # a line of the private key
    logged = caplog.text
    traced = traces.read_text()
    assert traced
    assert logged
    for secret in secrets:
        assert secret not in logged
        assert secret not in traced


def test_the_shipped_nats_example_grants_what_the_code_grants() -> None:
    """deploy/nats/us-east.conf lists exactly the permissions nats_auth generates."""
    import re

    from federation.adapters.nats_auth import cluster_permissions

    conf = (Path(__file__).resolve().parent.parent / "deploy" / "nats" / "us-east.conf").read_text()
    wanted = cluster_permissions("prod", "us-east")
    for verb in ("publish", "subscribe"):
        block = conf.split(f"{verb}: {{allow: [", 1)[1].split("]}", 1)[0]
        shipped = set(re.findall(r'"([^"]+)"', block))
        assert shipped == set(wanted[verb]["allow"]), verb


@pytest.mark.bus
async def test_password_rotation_without_restart(tmp_path: Path) -> None:
    """The file's new password reaches the live client's options, the servers' reload makes the
    new one valid and the old one invalid, and the agent's own connection carries on: the server
    drops it with 'Authorization Violation', after which nats-py either reconnects with the new
    options or closes the client for good (a race inside nats-py); the bus then opens a new one."""
    from federation.adapters.password_file import PasswordFile

    sc = Supercluster(["a", "b"], tmp_path / "nats", authorization_block("cs", {"a": "old"}, "adm"))
    await sc.start()
    secret = tmp_path / "password"
    secret.write_text("old\n")
    bus = NatsBus(
        BusAddress(url=sc.url("a"), clusterset="cs", cluster="a", placement_cluster="a",
                   members=("a",)),
        connect_options={"user": "a"},
    )  # fmt: skip
    password = PasswordFile(secret, bus.set_password)
    try:
        await bus.connect()
        await bus.ensure_streams()
        assert await bus.publish("fed.v1.cs.beat.a", b"{}", "before")

        secret.write_text("new\n")  # the Secret is updated...
        touch_later(secret)
        assert password.check()
        assert bus._nc is not None
        assert bus._nc.options["password"] == "new"  # ...and the next connection will use it
        sc.reload_config("a", authorization_block("cs", {"a": "new"}, "adm"))  # ...NATS too

        async def new_login_works() -> bool:
            return (
                await publish_as(
                    sc.url("a"), {"user": "a", "password": "new"}, "fed.v1.cs.beat.a", b"{}"
                )
                is None
            )

        await wait_for_async(new_login_works, within=30, what="the new password to be valid")
        refusal = await publish_as(
            sc.url("a"), {"user": "a", "password": "old"}, "fed.v1.cs.beat.a", b"{}"
        )
        assert refusal is not None  # the connection itself is refused
        assert "authorization" in refusal.lower()

        async def live_bus_publishes() -> bool:
            try:
                return await bus.publish("fed.v1.cs.beat.a", b"{}", f"after-{time.monotonic()}")
            except Exception:  # reconnecting, or the closed client not replaced yet
                return False

        await wait_for_async(live_bus_publishes, within=30, what="the live bus to publish again")
        assert bus.connected
        assert bus._nc is not None
        assert bus._nc.options["password"] == "new"
    finally:
        await bus.close()
        sc.stop()


async def live_bus_of_a(sc: Supercluster, login: dict[str, str]) -> NatsBus:
    """Cluster a's bus with this login, connected, consuming and published once."""
    bus = NatsBus(
        BusAddress(url=sc.url("a"), clusterset="cs", cluster="a", placement_cluster="a",
                   members=("a",)),
        connect_options=login,
    )  # fmt: skip
    try:
        await bus.connect()
        await bus.ensure_streams()
        await bus.start_consuming()
        assert await bus.publish("fed.v1.cs.beat.a", b"{}", "before")
    except BaseException:
        await bus.close()
        raise
    return bus


async def assert_a_cannot_speak_for_b(sc: Supercluster, login: dict[str, str]) -> None:
    refusal = await publish_as(sc.url("a"), login, "fed.v1.cs.beat.b", b"{}")
    assert refusal is not None
    assert "permissions violation" in refusal.lower()


@pytest.mark.bus
async def test_nkey_login_rights_and_key_rotation_without_restart(tmp_path: Path) -> None:
    """Log in with an nkey seed; the key's user has only its cluster's rights; a rotation (the
    servers list both keys, the seed file changes, the old key is retired) keeps the live bus
    working with no restart, and a broken seed file keeps the current login."""
    from federation.adapters.login_file import LoginFile
    from federation.adapters.nkey_file import create_user_seed, public_key

    old_pub = create_user_seed(tmp_path / "old.nk")
    new_pub = create_user_seed(tmp_path / "new.nk")
    assert old_pub.startswith("U")
    assert new_pub != old_pub

    def block(*keys: str) -> str:
        return authorization_block("cs", {}, "adm", nkeys={"a": list(keys)})

    sc = Supercluster(["a", "b", "c"], tmp_path / "nats", block(old_pub))
    await sc.start()
    live = tmp_path / "live.nk"
    live.write_bytes((tmp_path / "old.nk").read_bytes())
    old_login = {"nkeys_seed": str(tmp_path / "old.nk")}
    new_login = {"nkeys_seed": str(tmp_path / "new.nk")}
    bus: NatsBus | None = None
    try:
        bus = await live_bus_of_a(sc, {"nkeys_seed": str(live)})
        watcher = LoginFile(live, public_key, bus.renew_connection, what="nkey")
        await assert_a_cannot_speak_for_b(sc, old_login)
        refusal = await publish_as(sc.url("a"), new_login, "fed.v1.cs.beat.a", b"{}")
        assert refusal is not None  # an unknown key logs in nowhere
        assert "authorization" in refusal.lower()

        sc.reload_config("a", block(old_pub, new_pub))  # 1. the servers accept both keys

        async def new_key_works() -> bool:
            return await publish_as(sc.url("a"), new_login, "fed.v1.cs.beat.a", b"{}") is None

        await wait_for_async(new_key_works, within=30, what="the new key to be accepted")
        live.write_bytes((tmp_path / "new.nk").read_bytes())  # 2. the Secret changes
        touch_later(live)
        assert await watcher.check()  # a new client logged in with the new key
        assert watcher.identity == new_pub
        sc.reload_config("a", block(new_pub))  # 3. the old key is retired

        async def old_key_refused() -> bool:
            refused = await publish_as(sc.url("a"), old_login, "fed.v1.cs.beat.a", b"{}")
            return refused is not None and "authorization" in refused.lower()

        await wait_for_async(old_key_refused, within=30, what="the old key to be refused")
        assert await bus.publish("fed.v1.cs.export.a.llm.x", b"{}", "after")  # the bus never left
        assert len(await bus.fetch(10, 5.0)) >= 1
        assert bus.reopened == 1

        live.write_text("garbage\n")  # a broken Secret keeps the current login
        touch_later(live)
        assert not await watcher.check()
        assert watcher.errors == 1
        assert await bus.publish("fed.v1.cs.beat.a", b"{}", "still")
    finally:
        if bus is not None:
            await bus.close()
        sc.stop()


@pytest.mark.bus
async def test_operator_mode_creds_login_rights_and_rotation(tmp_path: Path) -> None:
    """NATS in operator mode (memory resolver): each cluster logs in with a .creds file issued by
    `federation keygen --nats-creds` from the account's signing key; its user JWT carries exactly
    a cluster's rights, so it may not speak for another cluster; a new .creds (a new user, a new
    JWT) is taken up by the live bus without a restart; a broken file keeps the current login."""
    from click.testing import CliRunner

    from federation.adapters.login_file import LoginFile
    from federation.adapters.nats_creds import creds_identity
    from federation.cli import main
    from federation.kit.nats_operator import Operator

    op = Operator()
    sc = Supercluster(["a", "b"], tmp_path / "nats", op.server_config())
    await sc.start()
    bus: NatsBus | None = None
    try:
        signing = op.signing_seed(tmp_path / "account-signing.nk")

        def keygen(path: Path, cluster: str) -> str:
            made = CliRunner().invoke(main, [
                "keygen", str(path), "--nats-creds", "--clusterset", "cs", "--cluster", cluster,
                "--account-signing-key", str(signing), "--account", op.account_key,
            ])  # fmt: skip
            assert made.exit_code == 0, made.output
            return made.output.strip()

        first = keygen(tmp_path / "a-1.creds", "a")
        second = keygen(tmp_path / "a-2.creds", "a")
        assert first.startswith("U")
        assert first != second
        assert (tmp_path / "a-1.creds").stat().st_mode & 0o777 == 0o600
        live = tmp_path / "live.creds"
        live.write_bytes((tmp_path / "a-1.creds").read_bytes())
        bus = await live_bus_of_a(sc, {"user_credentials": str(live)})
        watcher = LoginFile(live, creds_identity, bus.renew_connection, what="creds")
        await assert_a_cannot_speak_for_b(sc, {"user_credentials": str(tmp_path / "a-1.creds")})
        forged = tmp_path / "forged.creds"
        forged.write_text(live.read_text().replace(
            (tmp_path / "a-1.creds").read_text().split("\n")[1][-20:], "A" * 20))  # fmt: skip
        refusal = await publish_as(sc.url("a"), {"user_credentials": str(forged)},
                                   "fed.v1.cs.beat.a", b"{}")  # fmt: skip
        assert refusal is not None  # a JWT whose signature does not hold logs in nowhere

        live.write_bytes((tmp_path / "a-2.creds").read_bytes())  # the Secret is rotated
        touch_later(live)
        assert await watcher.check()
        assert watcher.identity.startswith(second)
        assert await bus.publish("fed.v1.cs.export.a.llm.x", b"{}", "after")
        assert len(await bus.fetch(10, 5.0)) >= 1
        assert bus.reopened == 1

        live.write_text("not a creds file\n")
        touch_later(live)
        assert not await watcher.check()
        assert watcher.errors == 1
        assert await bus.publish("fed.v1.cs.beat.a", b"{}", "still")
    finally:
        if bus is not None:
            await bus.close()
        sc.stop()
