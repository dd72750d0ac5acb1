"""README.md and docs/*.md: every ```python example runs as written, every relative link resolves.

The convention (docs/README.md): a ```python block runs unless its first line is
``# not run: <reason>``; a first line ``# requires: pkg, pkg`` skips it (not fails) when one
of those packages is not installed. Each runnable block is executed in a fresh namespace from
the repository root, so an example may read committed files (``results/...``, ``data/...``).
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import unicodedata

import pytest

ROOT = pathlib.Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", flags=re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def python_blocks(page: pathlib.Path) -> list[str]:
    """The ```python blocks of ``page``, in order."""
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == "python"]


def _directive(block: str, name: str) -> str | None:
    first = block.lstrip("\n").splitlines()[0] if block.strip() else ""
    m = re.match(rf"#\s*{name}:\s*(.*)$", first.strip())
    return m.group(1).strip() if m else None


BLOCKS = [(p, i, b) for p in PAGES for i, b in enumerate(python_blocks(p))]


def test_the_pages_hold_examples():
    assert (ROOT / "docs" / "README.md").exists(), "docs/README.md (the index) is missing"
    first = python_blocks(ROOT / "README.md")[0]
    assert "connected_plan(" in first, "README's first example is the engine's (EXTRA_CHECKS)"
    runnable = [b for _, _, b in BLOCKS if _directive(b, "not run") is None]
    assert len(runnable) >= 6, f"only {len(runnable)} runnable examples found"


@pytest.mark.parametrize("page,index,block", BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}#{i}" for p, i, _ in BLOCKS])
def test_python_example_runs(page, index, block, monkeypatch):
    reason = _directive(block, "not run")
    if reason is not None:
        assert reason, f"{page.name} block {index}: '# not run:' needs a reason"
        pytest.skip(f"marked not run: {reason}")
    needs = _directive(block, "requires")
    for pkg in (needs.split(",") if needs else []):
        if importlib.util.find_spec(pkg.strip()) is None:
            pytest.skip(f"needs {pkg.strip()} (not installed)")
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(block, f"{page.relative_to(ROOT)} (python block {index})", "exec"), namespace)
    for name, marker, check in EXTRA_CHECKS:
        if page.name == name and page.parent == ROOT and marker in block:
            check(namespace)


def _check_engine_example(ns: dict) -> None:
    """README's first example: a pair + triple potential has nothing above order 3, the
    orders sum to the total, and the gradient has the positions' shape."""
    r = ns["r"]
    assert abs(float(r.per_order[3:].sum())) < 1e-10
    assert abs(float(r.truncated[-1] - r.total)) < 1e-10
    assert ns["g"].shape == (5, 3)


# (top-level page, text its block holds, checks on the namespace the block leaves)
EXTRA_CHECKS = [("README.md", "connected_plan(", _check_engine_example)]


def _strip_code(text: str) -> str:
    """``text`` without fenced blocks and inline code (links there are not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens,
    ``-1``, ``-2`` ... for repeats."""
    s = "".join(c for c in heading.strip().lower()
                if c in " -_" or unicodedata.category(c)[0] in "LN")
    s = s.replace(" ", "-")
    n = seen.get(s, 0)
    seen[s] = n + 1
    return s if n == 0 else f"{s}-{n}"


def anchors(page: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1), seen) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


def test_slug_matches_github():
    assert slug("The model zoo (`jbo.models`)", {}) == "the-model-zoo-jbomodels"
    assert slug("Robustness: what was tried, what happens", {}) == \
        "robustness-what-was-tried-what-happens"
    seen: dict[str, int] = {}
    assert [slug("A b", seen), slug("A b", seen)] == ["a-b", "a-b-1"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page):
    bad = []
    for target in LINK.findall(_strip_code(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target} (no file {dest.relative_to(ROOT.resolve())})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not bad, f"{page.relative_to(ROOT)}: broken links: {bad}"


def test_every_docs_page_is_linked_from_the_readme_and_the_index():
    for index in (ROOT / "README.md", ROOT / "docs" / "README.md"):
        linked = {(index.parent / t.partition("#")[0]).resolve()
                  for t in LINK.findall(_strip_code(index.read_text()))}
        missing = [p.name for p in (ROOT / "docs").glob("*.md")
                   if p.resolve() not in linked and p.resolve() != index.resolve()]
        assert not missing, f"{index.relative_to(ROOT)} does not link {missing}"
