"""jbo.configargs on a small dataclass: one option per field, types, defaults, round trip."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from jbo.configargs import add_config_args, config_from_args, option


@dataclasses.dataclass(frozen=True)
class Demo:
    rate: float = option(0.5, help="a rate")
    steps: int | None = option(None, help="a budget")
    kind: Literal["a", "b"] = option("a", help="a choice")
    table: dict = option(default_factory=dict, help="JSON")
    weights: tuple[float, ...] = option((), help="a list")
    verbose: bool = option(False, help="talk")
    cache: bool = option(True, help="no cache")
    quiet_progress: bool = option(True, flag="--quiet", help="no bar")
    out: str | None = option(None, flag="--out", help="folder")


def _parse(argv, **kw):
    p = argparse.ArgumentParser()
    add_config_args(p, Demo, **kw)
    return p, p.parse_args(argv)


def test_defaults_round_trip_to_the_dataclass():
    _, ns = _parse([])
    assert config_from_args(Demo, ns) == Demo()


def test_every_type_parses():
    _, ns = _parse(["--rate", "2", "--steps", "3", "--kind", "b", "--table", '{"x": 1}',
                    "--weights", "1,2.5", "--verbose", "--no-cache", "--quiet", "--out", "o"])
    assert config_from_args(Demo, ns) == Demo(2.0, 3, "b", {"x": 1}, (1.0, 2.5), True, False,
                                              False, "o")
    _, ns = _parse(["--steps", "none"])
    assert config_from_args(Demo, ns).steps is None


def test_include_exclude_defaults_and_overrides():
    p, ns = _parse([], include=("rate", "kind"), defaults={"rate": 0.25})
    assert {a.dest for a in p._actions} == {"help", "rate", "kind"}
    assert config_from_args(Demo, ns, kind="b") == Demo(rate=0.25, kind="b")
    with pytest.raises(ValueError, match="no fields"):
        _parse([], exclude=("nope",))


def test_prefix_names_generated_flags_only():
    p = argparse.ArgumentParser()
    add_config_args(p, Demo, prefix="x-")
    flags = {s for a in p._actions for s in a.option_strings}
    assert {"--x-rate", "--no-x-cache", "--quiet", "--out"} <= flags
    assert config_from_args(Demo, p.parse_args(["--x-rate", "1"]), prefix="x-").rate == 1.0


@pytest.mark.parametrize("argv", [["--kind", "c"], ["--steps", "1.5"], ["--table", "{"],
                                  ["--weights", "a"]])
def test_bad_values_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error: argument" in err and "Traceback" not in err
