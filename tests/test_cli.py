"""The ``jbo`` command line: help texts, train/decompose round trip, label delegation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jbo.cli import build_parser, main


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["decompose", "--help"]])
def test_help_explains_itself(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: jbo" in text
    if argv == ["--help"]:
        assert all(cmd in text for cmd in ("train", "decompose", "label", "examples"))
    if argv[0] == "train":
        assert "--lam" in text and "--makeup" in text and "up_to:M" in text


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "decompose" in capsys.readouterr().out


def test_label_delegates_to_the_data_tool(monkeypatch):
    import jbo.data.__main__ as data_main
    seen = {}
    monkeypatch.setattr(data_main, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    assert main(["label", "summary", "--db", "x.db"]) == 0
    assert seen["argv"] == ["summary", "--db", "x.db"]


def test_console_script_help_runs():
    proc = subprocess.run([sys.executable, "-m", "jbo.cli", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "train" in proc.stdout


def test_parser_defaults():
    args = build_parser().parse_args(["train", "--out", "runs/x"])
    assert args.model == "soap_bpnn" and args.lam == 0.0 and args.makeup == "full"


def test_train_then_decompose(tmp_path, capsys):
    from tests.test_train_fixtures import write_toy_db
    db = write_toy_db(tmp_path / "toy.db", train_sizes=(4, 4, 5), heldout_sizes=(5,),
                      forces=False)
    hypers = json.dumps({"max_radial": 2, "max_angular": 1, "hidden": [4]})
    assert main(["train", "--db", str(db), "--hypers", hypers, "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    assert "val MAE" in capsys.readouterr().out
    out = tmp_path / "spec.json"
    assert main(["decompose", str(tmp_path / "run"), "--db", str(db), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and len(rows[0]["per_order_ev"]) == 5
    assert abs(sum(rows[0]["per_order_ev"]) - rows[0]["energy_ev"]) < 5.0
    # the run's model file decomposes to the same numbers as its checkpoint
    out2 = tmp_path / "spec_file.json"
    assert main(["decompose", str(tmp_path / "run" / "model.jbo"), "--db", str(db),
                 "--json", str(out2)]) == 0
    assert json.loads(out2.read_text()) == rows
