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
