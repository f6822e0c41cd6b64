"""observability/: alert rules that promtool accepts and that use metrics the agent exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "observability"
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (.ci/run installs prometheus)")
def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(ROOT / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 rules found" in result.stdout


def test_rules_only_use_metrics_the_agent_exports() -> None:
    from federation.adapters import metrics

    source = Path(metrics.__file__).read_text()
    exported = set(re.findall(r'"(federation_[a-z_]+)"', source))
    rules = (ROOT / "prometheus" / "alerts.yml").read_text()
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", m)
        for m in re.findall(r"\b(federation_[a-z_]+)", rules)
    }
    assert used, "no metric used"
    assert used <= exported, used - exported
