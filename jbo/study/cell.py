"""A study cell (one training run) and a grid of them.

A :class:`Cell` is frozen and hashable; :meth:`Cell.key` names its cached JSON (and, for the
converged protocol, its shipped model file). Two protocols share the one type:

* ``fixed`` (the body-order study, :mod:`jbo.study.fixed`): a fixed number of steps on the
  training parents of ``regimes`` (None: all), no validation, energies only; ``n_train`` counts
  training *parents* (nested seeded subsets);
* ``converged`` (:mod:`jbo.study.converged`): one regime, energies + forces, validation and the
  convergence rule of :mod:`jbo.train`, a wall-time budget; ``n_train`` counts training
  *structures* (a seeded uniform draw of the makeup's rows).

Fields a protocol does not use stay None (the defaults fill in per protocol), and a key hashes
exactly the fields of its protocol, as the two frameworks that came before did, so the
committed cells under ``results/*/cells/`` keep their keys.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from jbo.study.store import fingerprint

__all__ = ["Cell", "Grid", "Protocol", "STUDY_HYPERS", "CONVERGED_HYPERS", "has_rotate",
           "setting_of", "axis"]

Protocol = Literal["fixed", "converged"]

#: small, fast variants of the zoo models (the fixed protocol trains many of them on CPUs)
STUDY_HYPERS: dict[str, dict[str, Any]] = {
    "soap_bpnn": dict(max_radial=6, max_angular=4, hidden=(32, 32)),
    "linear_ace": dict(correlation=3, max_radial=6, max_angular=3),
    "pet": dict(d_model=16, num_heads=2, ffn_dim=32, num_radial=6, readout_hidden=16),
    "mace": dict(num_channels=8, max_ell=2, hidden_ell=1, correlation=3, num_radial=6,
                 radial_hidden=(16,), readout_hidden=8),
    "nequip": dict(hidden_irreps="8x0e + 4x1o", sh_irreps="1x0e + 1x1o", num_basis=6,
                   radial_hidden=16),
}
#: the converged protocol: the zoo defaults (data constants such as MACE's avg_num_neighbors
#: come from the training rows), except linear ACE at correlation 3 (E^(k) = 0 for k > 4)
CONVERGED_HYPERS: dict[str, dict[str, Any]] = {"linear_ace": dict(correlation=3)}

# Each protocol's fields, in the order its key and stored ``cell`` dict list them, with their
# defaults (the key of a committed cell hashes exactly this dict: never reorder or rename).
_FIXED = dict(model=None, makeup="all", n_train=None, seed=0, steps=2000, lam=0.0, reg_order=2,
              regimes=None, batch_size=32, lr=3e-3, extra_hypers=())
_CONVERGED = dict(model=None, makeup="full", regime=None, seed=0, n_train=None, steps=8000,
                  batch_size=16, lr=3e-3, schedule="cosine", eval_every=200, patience=10,
                  min_improvement=0.005, plateau_patience=None, max_seconds=900.0,
                  max_steps=None, force_weight=1.0, val_fraction=0.1, split_seed=0, lam=0.0,
                  reg_order=2, reg_mode="truncation", rotate=False, extra_hypers=(),
                  ema_decay=0.0)
#: converged fields added after cells were committed: at their default they stay out of the key
_LATER = {"ema_decay": 0.0}
_FLOATS = ("lr", "lam", "min_improvement", "max_seconds", "force_weight", "val_fraction",
           "ema_decay")


def has_rotate() -> bool:
    """Whether this jbo's TrainConfig has rotational augmentation (``rotate``)."""
    from jbo.train import TrainConfig
    return "rotate" in {f.name for f in dataclasses.fields(TrainConfig)}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of a study (see the module docstring). Energies eV, lr per step."""

    model: str
    protocol: Protocol = "fixed"
    makeup: str | None = None
    regimes: tuple[str, ...] | None = None  # training regimes (None: all; converged: one)
    seed: int = 0
    n_train: int | None = None        # fixed: training parents; converged: structures
    steps: int | None = None          # fixed: optimizer steps; converged: cosine length
    batch_size: int | None = None
    lr: float | None = None
    lam: float = 0.0                  # body-order regularizer strength (0: off)
    reg_order: int = 2
    extra_hypers: tuple[tuple[str, Any], ...] = ()  # overrides of the protocol's hypers
    # converged protocol only (None in a fixed cell)
    schedule: str | None = None
    eval_every: int | None = None
    patience: int | None = None
    min_improvement: float | None = None
    plateau_patience: int | None = None  # learning-rate halving on plateaus
    max_seconds: float | None = None     # wall-time budget of the training steps
    max_steps: int | None = None         # step budget (quick runs)
    force_weight: float | None = None
    val_fraction: float | None = None
    split_seed: int | None = None
    reg_mode: str | None = None
    rotate: bool | None = None           # rotational augmentation, where TrainConfig has it
    ema_decay: float | None = None       # parameter EMA (validated and shipped), 0: off

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen)
        if self.protocol not in ("fixed", "converged"):
            raise ValueError(f"Cell protocol {self.protocol!r}: use 'fixed' or 'converged'")
        if self.regimes is not None:
            set_("regimes", (self.regimes,) if isinstance(self.regimes, str)
                 else tuple(self.regimes))
        set_("extra_hypers", tuple(tuple(kv) for kv in self.extra_hypers))
        table = _FIXED if self.protocol == "fixed" else _CONVERGED
        for f in dataclasses.fields(self):
            if f.name in table and getattr(self, f.name) is None:
                set_(f.name, table[f.name])
            elif f.name not in table and f.name not in ("protocol", "regimes") \
                    and getattr(self, f.name) is not None:
                raise ValueError(f"Cell field {f.name}={getattr(self, f.name)!r} is not used "
                                 f"by the {self.protocol} protocol: leave it None, or use "
                                 "protocol='converged'")
        if self.protocol == "converged" and (self.regimes is None or len(self.regimes) != 1):
            raise ValueError(f"a converged cell trains on one regime, got regimes="
                             f"{self.regimes!r}: pass regimes=('low',) or Cell.converged(...)")
        for k in _FLOATS:
            if isinstance(getattr(self, k), int) and not isinstance(getattr(self, k), bool):
                set_(k, float(getattr(self, k)))

    @classmethod
    def converged(cls, model: str, makeup: str = "full", regime: str = "low", seed: int = 0,
                  **kw) -> "Cell":
        """A converged-protocol cell on one ``regime`` (the old ConvergedCell's signature)."""
        return cls(model, "converged", makeup, (regime,), seed, **kw)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Cell":
        """The cell of a stored ``cell`` dict (either protocol, as written by :meth:`to_json`)."""
        d = dict(d)
        if "regime" in d:
            return cls.converged(d.pop("model"), d.pop("makeup"), d.pop("regime"), **d)
        return cls(protocol="fixed", **d)

    @property
    def regime(self) -> str | None:
        """The one training regime of a converged cell (None for a fixed cell on all)."""
        return self.regimes[0] if self.regimes and len(self.regimes) == 1 else None

    def to_json(self) -> dict[str, Any]:
        """The fields of this cell's protocol, in the order its key hashes (stored as ``cell``)."""
        if self.protocol == "fixed":
            return {k: getattr(self, k) for k in _FIXED}
        return {k: (self.regime if k == "regime" else getattr(self, k)) for k in _CONVERGED}

    def hypers(self) -> dict[str, Any]:
        table = STUDY_HYPERS if self.protocol == "fixed" else CONVERGED_HYPERS
        return {**table.get(self.model, {}), **dict(self.extra_hypers)}

    def key(self, data_spec: str = "") -> str:
        """A readable name, then a hash of everything that decides the cell's result: every
        field of its protocol, the resolved hyperparameters and ``data_spec`` (the dataset's
        content and split), so that no edit reuses a stale cell."""
        if self.protocol == "fixed":
            digest = fingerprint(self.to_json(), self.hypers(), data_spec)[:10]
        else:
            fields = {k: v for k, v in self.to_json().items()
                      if not (k in _LATER and v == _LATER[k])}
            digest = fingerprint(fields, self.hypers(), data_spec,
                                 self.rotate and has_rotate())[:10]
        return f"{self.name()}_{digest}"

    def name(self) -> str:
        """The readable part of :meth:`key` (fixed cells committed before keys hashed their
        data were stored under it alone: :func:`jbo.study.fixed.cached`)."""
        mk = self.makeup.replace(":", "").replace("+", "-")
        if self.protocol == "converged":
            parts = [self.model, self.regime, mk, f"n{self.n_train or 'all'}", f"s{self.seed}"]
            if self.lam:
                parts.append(f"reg{self.lam:g}k{self.reg_order}")
            if self.rotate:
                parts.append("rot")
            return "_".join(parts)
        parts = [self.model, mk, f"n{self.n_train or 'all'}", f"s{self.seed}", f"t{self.steps}"]
        if self.lam:
            parts.append(f"reg{self.lam:g}k{self.reg_order}")
        if self.regimes:
            parts.append("on-" + "-".join(self.regimes))
        if (self.batch_size, self.lr) != (32, 3e-3):
            parts.append(f"b{self.batch_size}lr{self.lr:g}")
        return "_".join(parts + [f"{k}{v}" for k, v in self.extra_hypers])


def setting_of(cell: Mapping[str, Any]) -> str:
    """A hash of a stored converged cell's fields except its seed (fields added later left
    out at their default, as in :meth:`Cell.key`): the seeds of one setting share it."""
    return fingerprint({k: v for k, v in cell.items()
                        if k != "seed" and not (k in _LATER and v == _LATER[k])})[:10]


def axis(field: str, values: Iterable) -> list[dict[str, Any]]:
    """A grid axis that sets one field: ``[{field: v} for v in values]``."""
    return [{field: v} for v in values]


@dataclasses.dataclass(frozen=True)
class Grid:
    """The cells of a study: ``base`` with the product of ``axes`` applied (first axis
    outermost). Each axis is a list of field overrides (:func:`axis` for one field; several
    fields per entry zip them); ``where`` drops combinations; repeated cells are kept once."""

    base: Cell
    axes: tuple[tuple[Mapping[str, Any], ...], ...] = ()
    where: Callable[[Cell], bool] | None = None

    def __post_init__(self):
        object.__setattr__(self, "axes", tuple(tuple(a) for a in self.axes))

    def cells(self) -> list[Cell]:
        out = []
        for combo in itertools.product(*self.axes):
            over: dict[str, Any] = {}
            for part in combo:
                over.update(part)
            cell = dataclasses.replace(self.base, **over)
            if self.where is None or self.where(cell):
                out.append(cell)
        return list(dict.fromkeys(out))

    def __iter__(self):
        return iter(self.cells())

    def __len__(self) -> int:
        return len(self.cells())

    def keys(self, data_spec: str = "") -> list[str]:
        return [c.key(data_spec) for c in self.cells()]


def chain(*parts: Sequence[Cell]) -> list[Cell]:
    """Cells of several grids in order, each once."""
    return list(dict.fromkeys(c for p in parts for c in p))
