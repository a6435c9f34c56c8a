"""The CLI skeleton: help, models, data info."""

import json
import subprocess
import sys

from zoo.cli.main import main


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("models", "data", "bench", "leaderboard", "predict", "perf", "report"):
        assert cmd in out


def test_models_lists_registry(capsys):
    assert main(["models"]) == 0
    assert "trivial" in capsys.readouterr().out


def test_data_info_text_and_json(toy_dataset, capsys):
    assert main(["data", "info", str(toy_dataset)]) == 0
    out = capsys.readouterr().out
    assert "toy-hfo2" in out and "szv-molopt-sr" in out and "s2" in out
    assert main(["data", "info", str(toy_dataset), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["card"]["splits"]["test"] == ["s2"]
    assert {s["name"]: s["atoms"] for s in obj["structures"]} == {"s0": 24, "s1": 24, "s2": 24}
    assert all(s["edges"] > 0 and s["nnz_h"] > 0 for s in obj["structures"])


def test_bad_path_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "zoo: error:" in err and "missing" in err and "Traceback" not in err


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "zoo.cli.main", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("zoo ")
