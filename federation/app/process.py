"""The production agent process: settings → the one assembly (``app.assembly``) → a bounded run.

``federation agent`` runs this in each cluster (deploy/ ships it as a Deployment). SIGTERM or
SIGINT stops the agent within ``shutdown_timeout``: tasks are cancelled, the NATS connection is
drained and closed, the HTTP port and the Kubernetes client are closed. Nothing is withdrawn on
the way out: exports stay on the bus and imports stay in the cluster, so a restart (a rollout, a
node drain) is invisible to peers as long as it is shorter than the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from federation.adapters.epp import EppScraper
from federation.adapters.kube import Kube, api_client
from federation.adapters.login_file import LoginFile
from federation.adapters.nats_creds import creds_identity
from federation.adapters.nkey_file import public_key
from federation.adapters.password_file import PasswordFile
from federation.adapters.signing import FileSigner, TrustBundle
from federation.adapters.tls import ReloadingTls
from federation.adapters.tracing import setup_tracing
from federation.app.assembly import AgentParts, HttpPort, build_agent, nats_bus
from federation.runtime.ports import Service
from federation.runtime.stopping import stop_task
from federation.settings import ProcessOptions, Settings, SettingsError

log = logging.getLogger(__name__)


def preflight(options: ProcessOptions) -> None:
    """What can be checked before starting: an unreadable nkey seed or creds is a usage error."""
    if options.nats_nkey:
        try:
            public_key(options.nats_nkey)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"--nats-nkey: {exc}") from None
    if options.nats_creds:
        try:
            creds_identity(options.nats_creds)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"--nats-creds: {exc}") from None


async def run_agent(settings: Settings, options: ProcessOptions) -> int:
    """Run until SIGTERM/SIGINT; return the exit code (0 on a clean, bounded stop)."""
    tracing = setup_tracing(f"federation-agent/{settings.cluster}", options.trace_file)
    if options.insecure:
        log.warning(
            "agent %s runs INSECURE (--insecure): without %s; any client that can publish on "
            "the bus can speak for any cluster",
            settings.cluster, " and ".join(options.missing_security()) or "nothing",
        )  # fmt: skip
    connect: dict[str, object] = {}
    services: dict[str, Service] = {}
    if options.nats_user:
        connect["user"] = options.nats_user
    if options.nats_nkey:
        connect["nkeys_seed"] = str(options.nats_nkey)
    if options.nats_creds:
        connect["user_credentials"] = str(options.nats_creds)
    if options.nats_ca:
        tls = ReloadingTls(options.nats_ca, options.nats_cert, options.nats_key)
        connect["tls"] = tls.context
        services["tls-reload"] = tls
    bus = nats_bus(settings, connect)
    if options.nats_password_file:
        services["password-reload"] = PasswordFile(options.nats_password_file, bus.set_password)
    if options.nats_nkey:
        services["nkey-reload"] = LoginFile(
            options.nats_nkey, public_key, bus.renew_connection, what="nkey"
        )
    if options.nats_creds:
        services["creds-reload"] = LoginFile(
            options.nats_creds, creds_identity, bus.renew_connection, what="creds"
        )
    scraper = EppScraper()
    built = build_agent(
        settings,
        AgentParts(
            kube=Kube(await api_client(url=options.kube_url, kubeconfig=options.kubeconfig)),
            namespaces=options.namespaces,
            loads=scraper,
            bus=bus,
            services=services,
            signer=FileSigner(options.signing_key) if options.signing_key else None,
            verifier=TrustBundle(options.trust_bundle) if options.trust_bundle else None,
            tracer=tracing.get_tracer("federation") if tracing is not None else None,
            http=HttpPort(host=options.http_host, port=options.http_port),
            insecure=options.insecure,
        ),
    )
    agent = built.agent
    await built.start_http()
    assert built.http is not None
    log.info(
        "agent %s serving HTTP on %s:%d; feeds: %s",
        settings.cluster, options.http_host, built.http.port, ", ".join(built.feeds),
    )  # fmt: skip

    task = asyncio.create_task(agent.run(), name=f"agent-{settings.cluster}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task.done():  # the agent ended by itself: always an error
            code = 1
            log.error("agent %s stopped: %r", settings.cluster, task.exception())
        else:
            started = time.monotonic()
            log.info("agent %s: stopping (signal)", settings.cluster)
            if not await stop_task(task, within=options.shutdown_timeout):
                log.error(
                    "agent %s did not stop within %.0fs", settings.cluster, options.shutdown_timeout
                )
                code = 1
            log.info("agent %s stopped in %.2fs", settings.cluster, time.monotonic() - started)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await scraper.close()
        await built.close()
        if tracing is not None:
            tracing.shutdown()
    return code
