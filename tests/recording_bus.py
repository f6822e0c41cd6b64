"""A bus that keeps what a publisher sends (its only bus call), as a peer would decode it."""

from __future__ import annotations

from collections.abc import Mapping

from federation import messages
from federation.messages import ExportEvent, ExportSet


class RecordingBus:
    """Keeps what the publisher sends, decoded as a peer would, with its subject checked (and
    an export's de-duplication id: a retried publish must be dropped by the server)."""

    def __init__(self) -> None:
        self.sent: list[messages.Event] = []

    async def publish(
        self, subject: str, payload: bytes, msg_id: str | None, headers: Mapping[str, str]
    ) -> None:
        event = messages.decode(payload)
        assert subject == messages.subject_for("cs", event)
        if isinstance(event, ExportEvent | ExportSet):
            assert msg_id == messages.msg_id(event)
        self.sent.append(event)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.sent]

    def sets(self) -> list[ExportSet]:
        return [e for e in self.sent if isinstance(e, ExportSet)]
