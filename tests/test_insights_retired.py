"""Under Captum 0.9 (no captum.insights) the insights command explains how to get Insights."""

from __future__ import annotations

import importlib.util

import pytest

from captum_sscam.apps.cli import main
from captum_sscam.apps.insights import InsightsUnavailableError, register

if importlib.util.find_spec("captum.insights") is not None:
    pytest.skip(
        "captum.insights is importable here (Captum 0.8): tests/test_insights_dashboard.py "
        "covers this environment",
        allow_module_level=True,
    )


def test_register_raises_a_clear_error() -> None:
    with pytest.raises(InsightsUnavailableError, match=r"removed in Captum 0\.9\.0") as error:
        register(lambda model: model.layer4)
    assert "pip install 'captum-sscam[insights]'" in str(error.value)


def test_insights_command_explains_and_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["insights", "--port", "8123"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("captum-sscam insights: error: Captum Insights cannot be imported")
    assert "Captum Insights exists in Captum 0.8.x only (it was removed in Captum 0.9.0)" in stderr
    assert ".venv-insights/bin/pip install 'captum-sscam[insights]'" in stderr
