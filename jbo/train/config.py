"""The training configuration: one frozen dataclass, JSON round-trippable (stored in checkpoints)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

__all__ = ["TrainConfig", "RegularizerConfig"]


@dataclasses.dataclass(frozen=True)
class RegularizerConfig:
    """The body-order regularizer (see :mod:`jbo.train.regularizers`).

    lam: strength λ (0 disables it). order: K, interaction orders k > K are penalized.
    mode: ``"terms"`` (λ Σ_{k>K} w_k Σ_{|S|=k} ε(S)² / n) or ``"truncation"``
      (λ ((E − E_MBE(K)) / n)²), both in units of the normalisation scale s.
    weights: w_k for k = K+1, K+2, ... (missing entries = 1).
    exact_max_atoms: clusters of at most this many atoms (all of the batch) use the exact
      exhaustive lattice; larger ones use the stochastic estimator with ``samples`` subsets per
      order up to ``max_order``.
    batch_size: clusters drawn from the training full clusters per step for the penalty.
    every: evaluate the penalty on every n-th step only, weighted by n (same expected
      gradient, 1/n of the cost).
    backend: ``"engine"`` (jbo.decompose, fastest steps) or ``"masks"`` (one vmap over subset
      masks: same values, much faster to compile); see :mod:`jbo.train.regularizers`.
    """

    lam: float = 0.0
    order: int = 2
    mode: str = "terms"
    weights: tuple[float, ...] = ()
    exact_max_atoms: int = 10
    samples: int = 4
    max_order: int = 6
    batch_size: int = 4
    every: int = 1
    backend: str = "engine"

    def __post_init__(self):
        _number(self, "lam", lo=0.0)
        for name in ("order", "every", "batch_size", "exact_max_atoms", "samples", "max_order"):
            _integer(self, name, lo=1)
        if self.mode not in ("terms", "truncation"):
            raise ValueError(f"regularizer mode must be 'terms' or 'truncation', got {self.mode!r}")
        if self.order < 1:
            raise ValueError(f"regularizer order K must be >= 1, got {self.order}")
        if self.lam < 0:
            raise ValueError(f"regularizer strength must be >= 0, got {self.lam}")
        if self.every < 1 or self.batch_size < 1:
            raise ValueError("regularizer every and batch_size must be >= 1")
        if self.backend not in ("engine", "masks"):
            raise ValueError(f"regularizer backend must be 'engine' or 'masks', "
                             f"got {self.backend!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Units: eV, Å; learning rate per optax step."""

    db: str = "data/h_clusters.npz"
    model: str = "soap_bpnn"
    hypers: dict[str, Any] = dataclasses.field(default_factory=dict)
    makeup: str = "full"  # full | up_to:M | ...+atoms | all  (jbo.data.batches.parse_makeup)
    val_fraction: float = 0.2
    split_seed: int = 0
    seed: int = 0
    dtype: str = "float64"  # float32 | float64: parameters and model inputs
    epochs: int = 100
    max_steps: int | None = None  # stop after this many optimizer steps (e.g. to test resume)
    batch_size: int = 16
    lr: float = 3e-3
    schedule: str = "cosine"  # constant | cosine | exponential
    warmup_steps: int = 0
    decay_rate: float = 0.1  # exponential: lr * decay_rate ** (step / total_steps)
    grad_clip: float | None = 10.0
    energy_weight: float = 1.0
    force_weight: float = 0.0
    baseline: bool = True  # fit a composition baseline Σ_Z c_Z n_Z and learn the residual
    # take c_Z from the isolated-atom rows of the training set instead of a least-squares fit:
    # zoo models (no biases) predict exactly c_Z for an isolated atom, so this makes the
    # model's E^(1) the reference's (needs a makeup with '+atoms' or 'all')
    baseline_from_atoms: bool = False
    normalize: bool = True  # scale model output by the std of per-atom residual energies
    # convergence (jbo.train.convergence): evaluations without a relative improvement of the
    # validation MAE by more than min_improvement before stopping (None: never stop early)
    patience: int | None = None
    min_improvement: float = 0.0  # relative, e.g. 0.01 = 1 %
    plateau_patience: int | None = None  # evaluations without improvement before lr *= factor
    plateau_factor: float = 0.5
    min_lr_scale: float = 1e-3  # the plateau reductions stop at this fraction of the schedule
    max_seconds: float | None = None  # wall-time budget of the training steps (s; setup excluded)
    ema_decay: float = 0.0  # parameter EMA (e.g. 0.99): evaluated and kept as best; 0 = off
    eval_every: int | None = None  # steps between validations; None = once per epoch
    log_every: int = 64  # steps per dispatch: metrics read, logged and checked this often
    regularizer: RegularizerConfig = dataclasses.field(default_factory=RegularizerConfig)
    out_dir: str | None = None  # checkpoints/, metrics.csv, steps.csv, tensorboard/
    # checkpoints: every checkpoint_every steps; None = after evaluations, at most once per
    # checkpoint_seconds of wall time; the last step (or the stop) is always saved
    checkpoint_every: int | None = None
    checkpoint_seconds: float = 30.0
    keep_checkpoints: int = 3
    resume: bool = True  # continue from the newest valid checkpoint in out_dir
    shard: bool = False  # data-parallel over jax.devices()
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self):
        if isinstance(self.regularizer, dict):
            reg = dict(self.regularizer)
            reg["weights"] = tuple(reg.get("weights", ()))
            object.__setattr__(self, "regularizer", RegularizerConfig(**reg))
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.schedule not in ("constant", "cosine", "exponential"):
            raise ValueError(f"schedule must be constant|cosine|exponential, got {self.schedule!r}")
        from jbo.data.batches import parse_makeup
        parse_makeup(self.makeup)  # ValueError with the accepted forms
        if not isinstance(self.hypers, dict):
            raise ValueError(f"hypers must be a dict of model hyperparameters, got "
                             f"{type(self.hypers).__name__}")
        _number(self, "lr", lo=0.0, lo_open=True)
        _number(self, "val_fraction", lo=0.0, hi=1.0, hi_open=True)
        _number(self, "decay_rate", lo=0.0, hi=1.0, lo_open=True)
        _number(self, "energy_weight", lo=0.0)
        _number(self, "force_weight", lo=0.0)
        if self.energy_weight == 0 and self.force_weight == 0:
            raise ValueError("energy_weight and force_weight are both 0: nothing to fit; "
                             "set one of them > 0")
        _number(self, "min_improvement", lo=0.0, hi=1.0, hi_open=True)
        _number(self, "plateau_factor", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        _number(self, "min_lr_scale", lo=0.0, hi=1.0, lo_open=True)
        _number(self, "ema_decay", lo=0.0, hi=1.0, hi_open=True)
        _number(self, "checkpoint_seconds", lo=0.0)
        for name in ("grad_clip", "max_seconds"):
            if getattr(self, name) is not None:
                _number(self, name, lo=0.0, lo_open=True)
        for name in ("epochs", "batch_size", "log_every", "keep_checkpoints"):
            _integer(self, name, lo=1)
        for name in ("warmup_steps", "seed", "split_seed"):
            _integer(self, name, lo=0)
        for name in ("max_steps", "patience", "plateau_patience", "eval_every",
                     "checkpoint_every"):
            if getattr(self, name) is not None:
                _integer(self, name, lo=1)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)


def _number(cfg, name: str, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ValueError unless ``cfg.name`` is a finite real number in the given range."""
    v = getattr(cfg, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, " \
              f"{hi if hi is not None else 'inf'}{')' if hi_open or hi is None else ']'}"
        raise ValueError(f"{name} must be a finite number in {rng}, got {v!r}")


def _integer(cfg, name: str, lo: int) -> None:
    """Raise ValueError unless ``cfg.name`` is an integer >= ``lo``."""
    v = getattr(cfg, name)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
