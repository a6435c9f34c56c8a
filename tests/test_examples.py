"""The numbered examples run (so they never rot)."""

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = ["01_dataset_api.py"]


@pytest.mark.parametrize("script", FAST)
def test_example_runs(script, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [script])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert "eigenvalues" in capsys.readouterr().out
