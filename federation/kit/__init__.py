"""The kit: what lets agents run on one machine, beside the product and never imported by it.

An emulated Kubernetes API server, a NATS supercluster launcher (nats-server from the wheel),
link proxies to cut gateways, a rogue publisher, a throw-away PKI, an in-memory bus (a fake of the
bus port, checked by the same contract tests as the real one), the simulation behind
``federation demo`` and the benchmarks. Installed with the ``kit`` extra (``make`` brings it).
"""
