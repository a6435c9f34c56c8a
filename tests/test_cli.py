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


def test_import_error_in_a_data_subcommand_surfaces_as_itself(monkeypatch, capsys):
    """A sub-command module that fails to import reports that ImportError, not argparse's "invalid choice"."""
    import importlib

    import pytest

    real = importlib.import_module

    def broken_catalogue(name, *args, **kwargs):
        if name == "zoo.cli.cmd_catalogue":
            raise ImportError("cannot import name 'gto' from 'pyscf' (planted by the test)")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", broken_catalogue)
    with pytest.raises(ImportError, match="planted by the test"):
        main(["data", "build", "a-hfo2"])
    assert "invalid choice" not in capsys.readouterr().err


def test_missing_dependency_of_a_data_subcommand_is_named(tmp_path, monkeypatch):
    """A real module whose own import fails (a missing dependency) surfaces with the dependency's name."""
    import pytest

    from zoo.cli import cmd_data

    (tmp_path / "zoo_test_cmd_needs_dep.py").write_text(
        "import zoo_test_dependency_that_is_not_installed\n\ndef add_data_parsers(dsub):\n    dsub.add_parser('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cmd_data, "DATA_COMMAND_MODULES", [*cmd_data.DATA_COMMAND_MODULES, "zoo_test_cmd_needs_dep"])
    with pytest.raises(ModuleNotFoundError, match="zoo_test_dependency_that_is_not_installed") as exc:
        main(["data", "x"])
    assert exc.value.name == "zoo_test_dependency_that_is_not_installed"


def test_absent_data_subcommand_module_is_skipped(toy_dataset, monkeypatch, capsys):
    """Only a sub-command module missing from the build is skipped; the others still work."""
    from zoo.cli import cmd_data

    monkeypatch.setattr(cmd_data, "DATA_COMMAND_MODULES", [*cmd_data.DATA_COMMAND_MODULES, "zoo.cli.cmd_not_in_this_build"])
    assert main(["data", "info", str(toy_dataset)]) == 0
    assert "toy-hfo2" in capsys.readouterr().out


def test_models_shows_the_cpu_presets_depth(capsys):
    """MP layers come from the model built with its cpu preset (escn: num_layers 1), not the class attribute."""
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert rows["escn"][2] == "1" and rows["trivial"][2] == "0"
    assert rows["sk"][2] == "1"  # cpu preset: crystal_field true -> one hop of neighbours
