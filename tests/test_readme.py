"""The README's API example runs as written."""

import pathlib
import re


def test_readme_engine_example_runs(capsys):
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README lost its python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    r = namespace["r"]
    assert abs(float(r.per_order[3:].sum())) < 1e-10  # pair + triple potential: nothing above 3
    assert abs(float(r.truncated[-1] - r.total)) < 1e-10
    assert namespace["g"].shape == (5, 3)


def test_readme_table_is_the_committed_main_job_summary():
    """The README's main-job table is generated from results/train_body_order_reg/summary.json
    (``python -m experiments.train_body_order_reg --readme``), not typed by hand."""
    import json

    from experiments.train_body_order_reg import TABLE_END, TABLE_START, readme_table

    root = pathlib.Path(__file__).parents[1]
    text = (root / "README.md").read_text()
    block = text[text.index(TABLE_START) + len(TABLE_START):text.index(TABLE_END)].strip()
    summary = json.loads((root / "results/train_body_order_reg/summary.json").read_text())
    assert block == readme_table(summary)
