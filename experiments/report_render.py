"""Render ``results/REPORT.md`` from a hand-written template (``experiments/report_template.md``)
and the values the report code computes (tables, figure links, numbers as text).

The template is markdown split into named sections by lines ``<!-- section NAME -->`` (text
before the first such line is section ``head``); placeholders are :class:`string.Template`
``${name}``. A section is rendered when its values are given and left out when they are
``None`` (a study not run). Every placeholder of a rendered section must be given and every
value given must be used: a mismatch is one error naming the section and the names.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template
from typing import Mapping

TEMPLATE = Path(__file__).with_name("report_template.md")
_MARK = re.compile(r"^<!-- section (\w+) -->\n", re.M)


def sections(text: str) -> dict[str, str]:
    """The template's sections in order, ``{name: body}`` (bodies stripped of blank edges)."""
    parts = _MARK.split(text)
    out = {"head": parts[0].strip("\n")}
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in out:
            raise ValueError(f"report template: section {name!r} appears twice; rename one")
        out[name] = body.strip("\n")
    return out


def placeholders(body: str) -> set[str]:
    """The ``${name}`` placeholders of one section (``$$`` is a literal dollar)."""
    t = Template(body)
    if not t.is_valid():
        raise ValueError("report template: a '$' that is not a ${name} placeholder; write $$")
    return set(t.get_identifiers())


def render(values: Mapping[str, Mapping[str, str] | None], text: str | None = None) -> str:
    """The report: each template section with its values, in template order, blank-line joined.

    ``values``: ``{section: {placeholder: text}}``, ``None`` for a section left out; every
    section of the template must be named (a forgotten one is an error, not a silent gap)."""
    secs = sections(TEMPLATE.read_text() if text is None else text)
    unknown = set(values) - set(secs)
    missing = set(secs) - set(values)
    if unknown or missing:
        raise ValueError(f"report template: sections without values {sorted(missing)}, values "
                         f"without a section {sorted(unknown)}; add them to "
                         f"{TEMPLATE.name} or to the report code")
    out = []
    for name, body in secs.items():
        v = values[name]
        if v is None:
            continue
        want = placeholders(body)
        if want != set(v):
            raise ValueError(f"report section {name!r}: placeholders not filled "
                             f"{sorted(want - set(v))}, values not in the template "
                             f"{sorted(set(v) - want)}")
        out.append(Template(body).substitute(v))
    return "\n\n".join(out) + "\n"
