"""results/REPORT.md is rendered from the committed JSON through the hand-written template
(experiments/report_template.md): regenerating it changes nothing, every placeholder is filled,
and the genuine-models table quotes results/genuine/summary.json. No training."""

from __future__ import annotations

import json
import re

import pytest

from experiments import common, report, report_genuine
from experiments.report_render import TEMPLATE, placeholders, render, sections

RESULTS = common.ROOT / "results"


@pytest.fixture(scope="module")
def text() -> str:
    return report.build(RESULTS, ".", False, report.read_note(RESULTS))


def test_regenerating_the_report_from_the_committed_json_changes_nothing(text):
    assert text == (RESULTS / "REPORT.md").read_text()


def test_every_placeholder_is_filled_and_none_is_unknown(text):
    secs = sections(TEMPLATE.read_text())
    assert {"head", "converged", "genuine", "reference", "main_job"} <= set(secs)
    assert "$" not in text  # no ${name} left unfilled (the template holds no literal '$')
    values = {name: dict.fromkeys(placeholders(body), "x") for name, body in secs.items()}
    assert "${" not in render(values)
    one = next(n for n, b in secs.items() if placeholders(b))
    short = {**values, one: dict(list(values[one].items())[1:])}
    with pytest.raises(ValueError, match=f"section '{one}': placeholders not filled"):
        render(short)
    with pytest.raises(ValueError, match="values not in the template .'bogus'"):
        render({**values, one: {**values[one], "bogus": "x"}})
    with pytest.raises(ValueError, match=r"sections without values \['genuine'\]"):
        render({k: v for k, v in values.items() if k != "genuine"})
    with pytest.raises(ValueError, match="a '\\$' that is not"):
        placeholders("costs $ 5")


def _genuine_rows(text: str) -> dict[tuple[str, str], list[float]]:
    sec = text[text.index("## Genuine models"):text.index("## The earlier")]
    rows = {}
    for line in sec.splitlines():
        m = re.match(r"\| (\w+) \| genuine [^|]+\| (.*) \|$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")]
            rows[m.group(1), len(rows)] = [float(c) for c in cells]
    return rows


def test_the_genuine_table_quotes_the_genuine_summary(text):
    summ = json.loads((RESULTS / "genuine" / "summary.json").read_text())
    rows = list(_genuine_rows(text).items())
    assert len(rows) == len(summ) > 0
    for ((regime, _), got), s in zip(rows, summ):
        assert regime == s["regime"]
        want = [s["test_mae"], *s["test_order_mae"], s["effective_order"],
                s["ref_effective_order"]]
        assert got == [round(x, 1) for x in want], s["model"]
    have = {f"{s['regime']}/{s['model']}" for s in summ}
    line = next(x for x in text.splitlines() if x.startswith("Cells not shipped yet:"))
    for reg in report_genuine.REGIMES:
        for m in ("pet", "mace", "soap_bpnn"):
            assert (f"{reg}/{m}" in line) == (f"{reg}/{m}" not in have)


def test_the_genuine_figure_is_byte_stable(tmp_path):
    rows = report_genuine.pairs(RESULTS)
    report_genuine.draw(rows, tmp_path / "a.png")
    report_genuine.draw(rows, tmp_path / "b.png")
    a = (tmp_path / "a.png").read_bytes()
    assert a == (tmp_path / "b.png").read_bytes()
    assert b"matplotlib" not in a  # no version stamp in the metadata


def test_the_genuine_section_renders_whatever_cells_exist(tmp_path):
    """A model evaluated after summary.json was written (its own summary.json only) is shown,
    a cell without a Flax counterpart shows its genuine row alone, the rest are listed."""
    summ = json.loads((RESULTS / "genuine" / "summary.json").read_text())
    pet = next(s for s in summ if (s["regime"], s["model"]) == ("low", "pet"))
    late = {**next(s for s in summ if s["model"] == "mace"), "regime": "high"}
    (tmp_path / "genuine" / "high" / "mace").mkdir(parents=True)
    (tmp_path / "genuine" / "summary.json").write_text(json.dumps([pet]))
    (tmp_path / "genuine" / "high" / "mace" / "summary.json").write_text(json.dumps(late))
    v = report_genuine.section(tmp_path)  # no converged.json: no Flax rows
    assert v["genuine_table"].count("| genuine ") == 2 and "Flax" not in v["genuine_table"]
    assert "| high | genuine MACE (mace-torch) | 24.4 |" in v["genuine_table"]
    assert v["genuine_missing"] == "low/mace, low/soap_bpnn, high/pet, high/soap_bpnn"
    assert report_genuine.section(tmp_path / "none") is None
