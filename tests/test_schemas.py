"""The committed bus-schemas/ must match the code, and every old example must still decode."""

from pathlib import Path

import pytest

from federation import messages, schemas

ROOT = Path(__file__).resolve().parent.parent / "bus-schemas"


@pytest.mark.parametrize("relative", sorted(schemas.rendered()))
def test_committed_schema_files_match_the_code(relative: str) -> None:
    committed = ROOT / relative
    assert committed.exists(), f"{relative} missing: run `make schemas`"
    assert committed.read_bytes() == schemas.rendered()[relative], (
        f"{relative} drifted from the code: run `make schemas` and review the diff"
    )


def test_every_committed_example_of_every_version_decodes_today() -> None:
    examples = sorted(ROOT.glob("*/examples/*.json"))
    assert examples, "no examples committed"
    for path in examples:
        event = messages.decode(path.read_bytes())
        assert event.cluster
