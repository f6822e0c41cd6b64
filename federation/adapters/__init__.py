"""Adapters: the only modules that import third-party I/O libraries (NATS, Kubernetes, HTTP)."""
