"""Stores on disk served for reading: a copy of a JetStream store behind an embedded nats-server
(``federation replay --data-dir``)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from federation.kit.children import die_with_parent
from federation.kit.nats_servers import free_port, server_binary


@contextlib.asynccontextmanager
async def serve_store_copy(store: Path) -> AsyncIterator[str]:
    """Serve a copy of the JetStream store ``store`` on loopback; yield its client URL."""
    if not (store / "jetstream").is_dir():
        raise FileNotFoundError(f"{store} is not a JetStream store (no jetstream/ inside)")
    with tempfile.TemporaryDirectory(prefix="federation-replay-") as tmp:
        copy = Path(tmp) / "store"
        shutil.copytree(store, copy)
        port, monitor = free_port(), free_port()
        conf = Path(tmp) / "nats.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{port}"\nhttp: "127.0.0.1:{monitor}"\n'
            f'jetstream {{ store_dir: "{copy}" }}\n'
        )
        proc = await asyncio.create_subprocess_exec(
            server_binary(), "-c", str(conf),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        try:
            await _wait_healthy(f"http://127.0.0.1:{monitor}", proc)
            yield f"nats://127.0.0.1:{port}"
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


async def _wait_healthy(base: str, proc: asyncio.subprocess.Process, within: float = 30.0) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(within):
        while True:
            if proc.returncode is not None:
                raise RuntimeError("the embedded nats-server exited while opening the store")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz?js-enabled-only=true") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
