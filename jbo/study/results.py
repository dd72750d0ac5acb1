"""Typed results of a study cell, read from its stored JSON (old files included).

* :class:`StopReason`: why training stopped, as a kind (``converged`` | ``schedule`` |
  ``budget``), the limit that fired and its numbers, parsed from (and rendering back exactly)
  the free text :func:`jbo.train.train` returns as ``stop_reason``.
* :class:`CellResult`: a stored cell (:func:`jbo.study.fixed.run_cell`,
  :func:`jbo.study.converged.run_converged`) with its :class:`~jbo.study.Cell`, test sets as
  (model, reference) :class:`jbo.analysis.Spectra` and training record. Energies eV; MAEs
  meV/atom.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal, Mapping

from jbo import analysis
from jbo.study.cell import Cell

__all__ = ["StopReason", "StopKind", "StopLimit", "TestSet", "CellResult"]

StopKind = Literal["converged", "schedule", "budget"]
#: what fired: the patience rule, a resumed run already converged, a constant schedule's epochs,
#: a decaying schedule's end (with or without validation data), the step or wall-time budget
StopLimit = Literal["patience", "resumed", "epochs", "schedule", "schedule_no_val", "max_steps",
                    "max_seconds"]

_NUM = r"[-+0-9.einfa]+"
# (limit, kind, the text jbo.train writes: a format string whose fields are parsed back)
_FORMS: tuple[tuple[StopLimit, StopKind, str], ...] = (
    ("patience", "converged", "converged: validation MAE did not improve by more than "
     "{min_improvement_pct:g}% in {patience} evaluations (best {best:.4g} meV/atom)"),
    ("resumed", "converged", "converged before the resumed step"),
    ("max_steps", "budget", "budget: max_steps={max_steps} reached"),
    ("epochs", "schedule", "budget: {epochs} epochs done"),
    ("schedule_no_val", "schedule", "schedule finished ({schedule} over {epochs} epochs); no "
     "validation data (val_fraction=0 or one training parent): the final parameters are kept"),
    ("schedule", "schedule", "schedule finished ({schedule} over {epochs} epochs): best "
     "validation MAE {best:.4g} meV/atom, {bad_evals} of {evals} evaluations since one "
     "improved it by more than {min_improvement_pct:g}%"),
    ("max_seconds", "budget", "budget: max_seconds={max_seconds:g} reached at step {step}"),
)
_INTS = ("patience", "max_steps", "epochs", "bad_evals", "evals", "step")
_FLOATS = ("min_improvement_pct", "best", "max_seconds")


def _pattern(form: str) -> re.Pattern:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)(:[^}]*)?\}", form):
        out += re.escape(form[pos:m.start()])
        name = m.group(1)
        out += f"(?P<{name}>\\w+)" if name == "schedule" else f"(?P<{name}>{_NUM})"
        pos = m.end()
    return re.compile(out + re.escape(form[pos:]) + r"\Z")


_PATTERNS = [(limit, kind, form, _pattern(form)) for limit, kind, form in _FORMS]


@dataclasses.dataclass(frozen=True)
class StopReason:
    """Why a training run stopped: ``kind`` (what it means for the result: ``converged`` by the
    patience rule, ``schedule`` ran to its end, ``budget`` cut it short), ``limit`` (which rule
    fired) and the numbers of its text (None where the text has none). ``best``: the best
    validation MAE (meV/atom); ``min_improvement_pct``: the rule's threshold in percent."""

    kind: StopKind
    limit: StopLimit
    best: float | None = None
    patience: int | None = None
    min_improvement_pct: float | None = None
    epochs: int | None = None
    schedule: str | None = None
    bad_evals: int | None = None
    evals: int | None = None
    max_steps: int | None = None
    max_seconds: float | None = None
    step: int | None = None

    @classmethod
    def parse(cls, text: str) -> "StopReason":
        """The stop reason of ``text`` (``TrainResult.stop_reason``, or a stored cell's)."""
        for limit, kind, _, pat in _PATTERNS:
            m = pat.match(text)
            if m:
                nums = {k: int(v) if k in _INTS else float(v) if k in _FLOATS else v
                        for k, v in m.groupdict().items()}
                return cls(kind, limit, **nums)
        raise ValueError(f"unknown stop reason {text!r}: jbo.study.results._FORMS lists the "
                         "texts jbo.train writes; add the new one there")

    def text(self) -> str:
        """The text :meth:`parse` read (``parse(s).text() == s``)."""
        form = next(f for limit, _, f, _ in _PATTERNS if limit == self.limit)
        return form.format(**{k: v for k, v in dataclasses.asdict(self).items()
                              if v is not None})

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "StopReason":
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class TestSet:
    """One test set of a cell: the model's and the reference's spectra on its clusters."""

    model: analysis.Spectra
    ref: analysis.Spectra

    @classmethod
    def from_json(cls, t: Mapping[str, Any]) -> "TestSet":
        return cls(analysis.Spectra.from_json(t), analysis.Spectra.from_json(t, "ref_"))

    def total_mae(self) -> float:
        """Total-energy MAE (meV/atom); NaN for an empty set."""
        return analysis.total_mae(self.model, self.ref) if len(self.model) else float("nan")


@dataclasses.dataclass(frozen=True)
class CellResult:
    """A stored cell, typed. ``stop``: the stored ``stop`` (cells written since it exists),
    else parsed from the stored text ``stop_reason``; None for fixed cells (they train a fixed
    number of steps and record no reason). ``raw``: the stored dict (every other number)."""

    key: str
    cell: Cell
    tests: dict[str, TestSet]
    seconds: float                   # compute of the cell where it was run (s)
    train_seconds: float
    steps: int
    n_train_rows: int
    stop: StopReason | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CellResult":
        """Read a stored cell (either protocol; files written before this type existed)."""
        return cls(key=d["key"], cell=Cell.from_json(d["cell"]),
                   tests={k: TestSet.from_json(v) for k, v in d["tests"].items()},
                   seconds=float(d["seconds"]), train_seconds=float(d["train_seconds"]),
                   steps=int(d["steps"]), n_train_rows=int(d["n_train_rows"]),
                   stop=StopReason.from_json(d["stop"]) if "stop" in d
                   else StopReason.parse(d["stop_reason"]) if "stop_reason" in d else None,
                   raw=d)
