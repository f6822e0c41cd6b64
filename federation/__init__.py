"""federation: hub-less multi-cluster InferencePools over NATS JetStream."""

__version__ = "0.1.0"
