import pytest

from federation.model.pools import ExportState, export_decision, is_exported
from tests.model.factories import pool


def test_clusterset_value_exports() -> None:
    assert export_decision(pool(export="ClusterSet")).state is ExportState.EXPORTED


def test_missing_annotation_is_not_requested() -> None:
    assert export_decision(pool(export=None)).state is ExportState.NOT_REQUESTED


@pytest.mark.parametrize("value", ["", "clusterset", "Global", "ClusterSet ", "x" * 10_000])
def test_other_values_are_not_supported_with_a_bounded_message(value: str) -> None:
    decision = export_decision(pool(export=value))
    assert decision.state is ExportState.NOT_SUPPORTED
    assert "ClusterSet" in decision.message
    assert len(decision.message) < 300
    assert not is_exported(pool(export=value))
