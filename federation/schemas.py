"""Bus schemas: JSON Schema, an AsyncAPI document and example payloads, generated from the code.

``federation schemas`` writes them into ``bus-schemas/<version>/``; a test regenerates them and
fails when the committed files drift, and decodes every committed example (of every version) with
today's decoder, so an old agent's events stay readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import orjson

from federation import messages
from federation.messages import (
    EndpointAddress,
    ExportEvent,
    ExportSet,
    Heartbeat,
    LoadDigest,
    LoadReport,
    ParentGateway,
    PoolLoad,
)

_EXPORT = ExportEvent(
    cluster="us-east",
    namespace="llm",
    name="llama-3-70b",
    generation=1_764_300_000_000_000,
    exported_at=1_764_300_000.0,
    published_at=1_764_300_000.0,
    target_ports=(8000,),
    app_protocol="http",
    model="meta-llama/Llama-3-70B-Instruct",
    epp=EndpointAddress(host="10.0.12.7", port=9002),
    parents=(
        ParentGateway(
            namespace="gateways",
            name="inference-gateway",
            addresses=(EndpointAddress(host="203.0.113.10", port=443),),
        ),
    ),
)

EXAMPLES: dict[str, messages.Event] = {
    "export": _EXPORT,
    "export-withdrawn": ExportEvent(
        cluster="us-east",
        namespace="llm",
        name="llama-3-70b",
        generation=1_764_300_060_000_000,
        exported_at=1_764_300_000.0,
        published_at=1_764_300_060.0,
        withdrawn=True,
    ),
    # Every pool us-east exports, in one event; a pool of us-east it does not list is withdrawn.
    "exports": ExportSet(
        cluster="us-east",
        sequence=1_764_300_000_500_000,
        published_at=1_764_300_000.5,
        exports=(
            _EXPORT,
            ExportEvent(
                cluster="us-east",
                namespace="llm",
                name="qwen-2-72b",
                generation=1_764_300_000_400_000,
                exported_at=1_764_300_000.4,
                published_at=1_764_300_000.4,
                target_ports=(8000,),
                model="Qwen/Qwen2-72B-Instruct",
                epp=EndpointAddress(host="10.0.12.9", port=9002),
            ),
        ),
    ),
    "load": LoadReport(
        cluster="us-east",
        namespace="llm",
        name="llama-3-70b",
        sequence=1_764_300_001_000_000,
        observed_at=1_764_300_000.9,
        published_at=1_764_300_001.0,
        ready_pods=6,
        kv_cache_utilization=0.42,
        queue_size=1.5,
        running_requests=9.0,
        saturation=0.42,
        epp_status="ok",
        arrival_rate=5.8,
        completion_rate=5.6,
        capacity_rate=13.3,
    ),
    "digest": LoadDigest(
        cluster="us-east",
        sequence=1_764_300_001_000_000,
        published_at=1_764_300_001.0,
        pools=(
            PoolLoad(
                namespace="llm",
                name="llama-3-70b",
                observed_at=1_764_300_000.9,
                ready_pods=6,
                kv_cache_utilization=0.42,
                queue_size=1.5,
                running_requests=9.0,
                saturation=0.42,
                arrival_rate=5.8,
                completion_rate=5.6,
                capacity_rate=13.3,
            ),
            PoolLoad(
                namespace="llm",
                name="qwen-2-72b",
                observed_at=1_764_300_000.9,
                epp_status="unreachable",
            ),
        ),
    ),
    "beat": Heartbeat(
        cluster="us-east",
        sequence=1_764_300_002_000_000,
        published_at=1_764_300_002.0,
        exports=3,
        agent_version="0.1.0",
        accepted={"eu-west": 1_764_299_990_000_000, "ap-south": 1_764_299_995_000_000},
        refused={"ap-south": ["llm/qwen-2-72b"]},
        load_digests=True,
        export_sets=True,
    ),
    # An agent from before load digests: no ``load_digests``, so peers also send it reports.
    "beat-before-digests": Heartbeat(
        cluster="eu-west",
        sequence=1_764_300_002_000_000,
        published_at=1_764_300_002.0,
        exports=1,
        agent_version="0.1.0",
    ),
}


def json_schema() -> dict[str, Any]:
    schema = msgspec.json.schema(messages.Event)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"federation bus events, {messages.SUBJECT_VERSION}"
    return schema


def asyncapi() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        messages.EVENT_TYPES, ref_template="#/components/schemas/{name}"
    )
    v = messages.SUBJECT_VERSION

    def channel(address: str, message: str, description: str) -> dict[str, Any]:
        return {
            "address": address,
            "description": description,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "federation bus",
            "version": v,
            "description": "Events exchanged by federation agents over NATS JetStream. Every "
            "event is full state; the newest per subject is the truth. Payloads are JSON; "
            "exports and export sets carry Nats-Msg-Id (de-duplication) and their "
            "publisher's export count "
            "in headers; any event carries W3C traceparent when its publisher traces, and a "
            "signature when it signs. A live event (heartbeat, digest, report) without either "
            "has no headers.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "export": channel(
                f"fed.{v}.{{clusterset}}.export.{{cluster}}.{{namespace}}.{{pool}}",
                "ExportEvent",
                "The whole current export of one pool, or its tombstone. Dots in a pool name "
                "are written as '~' in the subject token.",
            ),
            "exports": channel(
                f"fed.{v}.{{clusterset}}.export.{{cluster}}.{messages.EXPORT_SET_TOKEN}",
                "ExportSet",
                "Every pool the cluster exports, each as its ExportEvent, in one event (sent "
                "whenever one changes): a pool of the cluster it does not list is withdrawn. "
                "Under the cluster's export subjects, so sourced and permitted as they are; "
                "per-pool exports go beside it while a live member reads no sets.",
            ),
            "load": channel(
                f"fed.{v}.{{clusterset}}.load.{{cluster}}.{{namespace}}.{{pool}}",
                "LoadReport",
                "The whole current load of one exported pool: sent by agents before load "
                "digests, beside digests while such an agent is a live member, and for a "
                "cluster's pools beyond one digest's size.",
            ),
            "digest": channel(
                f"fed.{v}.{{clusterset}}.digest.{{cluster}}",
                "LoadDigest",
                "The whole current load of every pool the cluster exports, one event per "
                "cluster (on change, or at the keepalive); a pool it does not list has no "
                "load from it.",
            ),
            "beat": channel(
                f"fed.{v}.{{clusterset}}.beat.{{cluster}}",
                "Heartbeat",
                "A cluster's agent is alive; renews its lease at every peer.",
            ),
        },
        "components": {
            "schemas": components,
            "messages": {
                name: {"name": name, "payload": {"$ref": f"#/components/schemas/{name}"}}
                for name in ("ExportEvent", "ExportSet", "LoadReport", "LoadDigest", "Heartbeat")
            },
        },
    }


def rendered() -> dict[str, bytes]:
    """Every generated file, by path relative to ``bus-schemas/``."""
    v = messages.SUBJECT_VERSION
    opts = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    files = {
        f"{v}/events.schema.json": orjson.dumps(json_schema(), option=opts),
        f"{v}/asyncapi.json": orjson.dumps(asyncapi(), option=opts),
    }
    for name, event in EXAMPLES.items():
        payload = orjson.loads(messages.encode(event))
        files[f"{v}/examples/{name}.json"] = orjson.dumps(payload, option=opts)
    return files


def write(directory: Path) -> list[Path]:
    written = []
    for relative, content in rendered().items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written
