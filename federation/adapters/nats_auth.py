"""NATS users for a cluster set: each cluster may publish only its own events and touch only its
own streams and consumer; everything else is refused by the server itself.

What a cluster's agent needs, and nothing more (checked against the bus adapter by the tests):

- publish its events: ``fed.v1.<cs>.export.<c>.>``, ``fed.v1.<cs>.load.<c>.>``,
  ``fed.v1.<cs>.digest.<c>``, ``fed.v1.<cs>.beat.<c>``;
- manage its two streams and its one durable consumer through the JetStream API (and purge its
  outbound stream up to its last sequence when a lost store recreated it empty), pull from that
  consumer and acknowledge its messages;
- receive replies on ``_INBOX.>``;
- hear members' live events on plain NATS (``fed.v1.<cs>.beat.*``, ``fed.v1.<cs>.digest.*``,
  ``fed.v1.<cs>.load.>``): heartbeats and loads reach peers only that way;
- read members' newest heartbeat and digest by direct get at start
  (``$JS.API.DIRECT.GET.<any stream>.fed.v1.<cs>.{beat,digest}.*``: those subjects only, which
  every member hears live anyway).

Sourcing peers' exports into a cluster's inbound stream is done by the servers, so no user needs
any other read access to another cluster's stream. The ``admin`` user (tests, ``federation
replay``) may do anything and is not given to agents.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from federation import messages
from federation.adapters.bus import consumer_name, inbound_stream_of, outbound_stream

ADMIN = "admin"


def cluster_permissions(
    clusterset: str, cluster: str, *, nats_cluster: str = "", shared_inbound: bool = False
) -> dict[str, Any]:
    """What ``cluster``'s agent may do on the bus. With ``shared_inbound`` its inbound stream is
    its NATS cluster's (``nats_cluster``, default: the cluster), which every agent placed there
    may create and update: they share its sources, so they trust each other with them."""
    out = outbound_stream(clusterset, cluster)
    inbound = inbound_stream_of(clusterset, cluster, nats_cluster or cluster, shared_inbound)
    consumer = consumer_name(cluster)
    api = "$JS.API"
    publish = [
        *messages.own_subjects(clusterset, cluster),
        f"{api}.INFO",
        *(
            f"{api}.STREAM.{verb}.{s}"
            for verb in ("INFO", "CREATE", "UPDATE")
            for s in (out, inbound)
        ),
        f"{api}.STREAM.PURGE.{out}",  # a lost store: go on from our last sequence
        f"{api}.CONSUMER.INFO.{inbound}.{consumer}",
        f"{api}.CONSUMER.DELETE.{inbound}.{consumer}",
        f"{api}.CONSUMER.CREATE.{inbound}.{consumer}",
        f"{api}.CONSUMER.CREATE.{inbound}.{consumer}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{inbound}.{consumer}",
        f"{api}.CONSUMER.MSG.NEXT.{inbound}.{consumer}",
        f"$JS.ACK.{inbound}.{consumer}.>",
        *(
            f"{api}.DIRECT.GET.*.{messages.prefix(clusterset)}.{kind}.*"
            for kind in ("beat", "digest")
        ),
    ]
    subscribe = ["_INBOX.>", *messages.live_subjects(clusterset)]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def authorization_block(
    clusterset: str,
    passwords: Mapping[str, str],
    admin_password: str,
    nkeys: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The ``authorization`` block of a nats-server config: one user per cluster (a password,
    or nkey public keys: two while a key is rotated), and admin."""
    users: list[dict[str, Any]] = [
        {
            "user": cluster,
            "password": password,
            "permissions": cluster_permissions(clusterset, cluster),
        }
        for cluster, password in sorted(passwords.items())
    ]
    users += [
        {"nkey": key, "permissions": cluster_permissions(clusterset, cluster)}
        for cluster, keys in sorted((nkeys or {}).items())
        for key in keys
    ]
    users.append({"user": ADMIN, "password": admin_password})
    # nats-server reads JSON inside its config format.
    return "authorization {\n  users: " + json.dumps(users, indent=2) + "\n}\n"
