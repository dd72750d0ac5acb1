"""The README's generated result blocks (its examples: tests/test_docs.py)."""

import pathlib


def test_readme_table_is_the_committed_main_job_summary():
    """The README's main-job table is generated from results/train_body_order_reg/summary.json
    (``python -m experiments.train_body_order_reg --readme``), not typed by hand."""
    import json

    from experiments.common import readme_block
    from experiments.train_body_order_reg import README_BLOCK, readme_table

    root = pathlib.Path(__file__).parents[1]
    summary = json.loads((root / "results/train_body_order_reg/summary.json").read_text())
    assert readme_block(README_BLOCK) == readme_table(summary)


def test_readme_converged_table_is_the_committed_study():
    """The README's converged-study table is what ``python -m experiments.report`` writes from
    results/converged/converged.json."""
    import json

    from experiments import report_converged
    from experiments.common import readme_block

    root = pathlib.Path(__file__).parents[1]
    res = json.loads((root / "results/converged/converged.json").read_text())
    assert readme_block(report_converged.README_BLOCK) == report_converged.readme_summary(res)


def test_readme_blocks_refuse_a_readme_without_markers(tmp_path):
    import pytest

    from experiments.common import readme_block, write_readme_block

    p = tmp_path / "README.md"
    p.write_text("a\n<!-- t -->\nold\n<!-- /t -->\nb\n")
    write_readme_block("t", "new", p)
    assert p.read_text() == "a\n<!-- t -->\nnew\n<!-- /t -->\nb\n"
    assert readme_block("t", p) == "new"
    with pytest.raises(ValueError, match="no <!-- u -->"):
        write_readme_block("u", "x", p)
