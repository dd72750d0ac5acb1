"""The ``jbo`` command line: help texts, options generated from the config dataclasses,
``jbo data`` on the same parser, the train/decompose round trip."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

from jbo.cli import add_train_args, build_parser, main, train_config
from jbo.configargs import flag_of
from jbo.train import RegularizerConfig, TrainConfig


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["decompose", "--help"],
                                  ["data", "--help"]])
def test_help_explains_itself(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: jbo" in text
    if argv == ["--help"]:
        assert all(cmd in text for cmd in ("train", "decompose", "data", "examples"))
    if argv[0] == "data":
        assert all(cmd in text for cmd in ("generate", "label", "pack", "validate", "export"))
    if argv[0] == "train":
        assert "--lam" in text and "--makeup" in text and "up_to:M" in text


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "decompose" in capsys.readouterr().out


def test_data_commands_share_the_one_parser():
    from jbo.data import cli as data_cli
    args = build_parser().parse_args(["data", "summary", "--db", "x.db", "--markdown"])
    assert args.fn is data_cli._cmd_summary and args.db == "x.db" and args.markdown
    with pytest.raises(SystemExit) as exc:  # the old spelling is gone
        build_parser().parse_args(["label", "label", "--db", "x.db"])
    assert exc.value.code == 2


@pytest.mark.parametrize("module,argv,phrase", [("jbo.cli", ["--help"], "train"),
                                                 ("jbo.data", ["summary", "--help"],
                                                  "usage: jbo data summary")])
def test_console_script_and_data_alias_run(module, argv, phrase):
    proc = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and phrase in proc.stdout


def test_parser_defaults():
    args = build_parser().parse_args(["train", "--out", "runs/x"])
    assert args.model == "soap_bpnn" and args.lam == 0.0 and args.makeup == "full"
    assert train_config(args) == TrainConfig(out_dir="runs/x",
                                             regularizer=RegularizerConfig(mode="truncation"))


def test_every_config_field_is_an_option_with_help():
    """The options are the dataclass fields: none missing, none undocumented."""
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    flags = {s for a in parser._actions for s in a.option_strings}
    for cls, prefix, skip in ((TrainConfig, "", {"regularizer"}), (RegularizerConfig, "reg-", ())):
        for f in dataclasses.fields(cls):
            if f.name not in skip:
                assert flag_of(f, prefix) in flags and f.metadata.get("help"), f.name


def test_options_of_every_type_reach_the_config():
    argv = ["train", "--out", "r", "--hypers", '{"max_radial": 4}', "--grad-clip", "none",
            "--max-steps", "7", "--ema", "0.9", "--quiet", "--no-resume", "--shard",
            "--schedule", "constant", "--lam", "0.5", "--order", "3", "--reg-mode", "terms",
            "--reg-weights", "1,0.5", "--reg-batch", "2", "--reg-every", "4"]
    cfg = train_config(build_parser().parse_args(argv))
    assert cfg == TrainConfig(
        out_dir="r", hypers={"max_radial": 4}, grad_clip=None, max_steps=7, ema_decay=0.9,
        progress=False, resume=False, shard=True, schedule="constant",
        regularizer=RegularizerConfig(lam=0.5, order=3, mode="terms", weights=(1.0, 0.5),
                                      batch_size=2, every=4))


@pytest.mark.parametrize("argv,phrase", [(["--reg-mode", "cubic"], "invalid choice"),
                                         (["--epochs", "2.5"], "invalid int value"),
                                         (["--reg-weights", "1,x"], "comma-separated"),
                                         (["--hypers", "[1]"], "JSON object"),
                                         (["--order", "0"], "order must be")])
def test_bad_generated_options_are_one_line_errors(argv, phrase, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", "r", *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and phrase in err and "Traceback" not in err


def test_train_then_decompose(tmp_path, capsys):
    from tests.toy import write_toy_db
    db = write_toy_db(tmp_path / "toy.db", train_sizes=(4, 4, 5), heldout_sizes=(5,),
                      forces=False)
    hypers = json.dumps({"max_radial": 2, "max_angular": 1, "hidden": [4]})
    assert main(["train", "--db", str(db), "--hypers", hypers, "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "val MAE" in printed and "rotational error" not in printed  # invariant by design
    out = tmp_path / "spec.json"
    assert main(["decompose", str(tmp_path / "run"), "--db", str(db), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and len(rows[0]["per_order_ev"]) == 5
    # Σ_k E^(k) is the model's energy of the full cluster, evaluated independently (ASE)
    from ase import Atoms

    from jbo.calculator import JboCalculator
    from jbo.data.records import read_records
    (full,) = [r for r in read_records(db, split="heldout") if r.is_full]
    atoms = Atoms(numbers=full.species, positions=full.positions)
    atoms.calc = JboCalculator(tmp_path / "run")
    assert sum(rows[0]["per_order_ev"]) == pytest.approx(atoms.get_potential_energy(),
                                                         rel=0, abs=1e-8)
    # the run's model file decomposes to the same numbers as its checkpoint
    out2 = tmp_path / "spec_file.json"
    assert main(["decompose", str(tmp_path / "run" / "model.jbo"), "--db", str(db),
                 "--json", str(out2)]) == 0
    assert json.loads(out2.read_text()) == rows


def test_train_pet_with_rotate_reports_its_rotational_error(tmp_path, capsys):
    """A model that is not rotation-invariant by construction (PET) trained with ``--rotate``:
    the run's config records it, and the printed and stored rotational error of the best model
    on the validation clusters is rotational_error of the saved model."""
    from jbo import analysis, models
    from jbo.train.dataset import prepare
    from tests.toy import write_toy_db
    db = write_toy_db(tmp_path / "toy.db", train_sizes=(4, 4, 5), heldout_sizes=(5,),
                      forces=False)
    hypers = json.dumps({"d_model": 8, "num_heads": 2, "ffn_dim": 8, "num_radial": 4,
                         "readout_hidden": 8})
    run = tmp_path / "run"
    assert main(["train", "--db", str(db), "--model", "pet", "--hypers", hypers, "--rotate",
                 "--epochs", "2", "--quiet", "--out", str(run)]) == 0
    printed = capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["rotate"] is True
    trained = models.load(run / "model.jbo")
    stored = trained.meta["metadata"]["val_rotational_error"]
    val = prepare(TrainConfig(db=str(db))).val
    again = analysis.rotational_error(trained, val)
    assert stored["mean_std_mev_per_atom"] == pytest.approx(again["mean_std_mev_per_atom"],
                                                            rel=1e-9)
    assert f"rotational error {stored['mean_std_mev_per_atom']:.3g} meV/atom" in printed
