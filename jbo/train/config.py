"""The training configuration: one frozen dataclass, JSON round-trippable (stored in checkpoints)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Literal

from jbo.configargs import option

__all__ = ["TrainConfig", "RegularizerConfig", "parse_makeup"]


@dataclasses.dataclass(frozen=True)
class RegularizerConfig:
    """The body-order regularizer (see :mod:`jbo.train.regularizers`); each field's help is
    its ``jbo train`` option (:mod:`jbo.configargs`). Penalties are in units of the
    normalisation scale s; ``every = n`` gives the same expected gradient at 1/n of the cost.
    """

    lam: float = option(0.0, flag="--lam", help="body-order regularizer strength λ (0: off)")
    order: int = option(2, flag="--order", help="regularizer order K: penalize orders k > K")
    mode: Literal["terms", "truncation"] = option(
        "terms", help="truncation: λ((E − E_MBE(K))/(n s))², from subsets of size <= K (~2.5x "
        "a plain step); terms: λ Σ_{k>K} Σ_{|S|=k} ε(S)²/(n s²) over all 2^n subsets (~15x; "
        "amortize with --reg-every)")
    weights: tuple[float, ...] = option((), help="w_k for k = K+1, K+2, ... (comma-separated; "
                                        "missing entries = 1)")
    exact_max_atoms: int = option(10, help="clusters of at most this many atoms use the exact "
                                  "lattice, larger ones the stochastic estimator")
    samples: int = option(4, help="stochastic estimator: subsets per order")
    max_order: int = option(6, help="stochastic estimator: highest order sampled")
    batch_size: int = option(4, flag="--reg-batch", help="clusters per penalty evaluation")
    every: int = option(1, help="evaluate the penalty every n-th step only, weighted by n")
    backend: Literal["engine", "masks"] = option(
        "engine", help="engine: jbo.decompose (fastest steps); masks: one vmap over subset "
        "masks (same values, much faster to compile)")

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
    """Everything a training run depends on. Units: eV, Å; learning rate per optax step.
    Each field's help is its ``jbo train`` option (:mod:`jbo.configargs`)."""

    db: str = option("data/h_clusters.npz", help="dataset: compact .npz or ase.db file/URL")
    model: str = option("soap_bpnn", help="registered model (jbo.models.available())")
    hypers: dict[str, Any] = option(default_factory=dict, help="model hyperparameters as "
                                    "JSON, e.g. '{\"max_radial\": 4}'")
    makeup: str = option("full", help="training rows: full | up_to:M (add subclusters of 2..M "
                         "atoms) | ...+atoms (add isolated atoms) | all")
    val_fraction: float = option(0.2, help="fraction of the training parents held out for "
                                 "validation (split by parent cluster)")
    split_seed: int = option(0, help="seed of the train/validation split")
    seed: int = option(0, help="seed of the parameters, data order, regularizer samples and "
                       "rotations")
    rotate: bool = option(False, help="rotational augmentation: every training structure of "
                          "every step (and every regularizer cluster) turned by its own "
                          "uniformly random rotation, force labels with it; for models that "
                          "are not rotation-invariant by construction (PET). Validation is "
                          "never rotated")
    dtype: Literal["float32", "float64"] = option(
        "float64", help="parameters and model inputs")
    epochs: int = option(100, help="epoch budget")
    max_steps: int | None = option(None, help="step budget (e.g. to test resume)")
    batch_size: int = option(16, help="structures per optimizer step")
    lr: float = option(3e-3, help="peak learning rate (Adam)")
    schedule: Literal["constant", "cosine", "exponential"] = option(
        "cosine", help="learning-rate schedule over all epochs")
    warmup_steps: int = option(0, help="linear warm-up steps (cosine)")
    decay_rate: float = option(0.1, help="exponential: lr * decay_rate ** (step / total_steps)")
    grad_clip: float | None = option(10.0, help="clip the global gradient norm (none: off)")
    energy_weight: float = option(1.0, help="weight of the per-atom energy loss")
    force_weight: float = option(0.0, help="weight of the force loss relative to the "
                                 "per-atom energy loss")
    baseline: bool = option(True, help="do not fit a composition baseline Σ_Z c_Z n_Z (by "
                            "default the model learns the residual)")
    # zoo models (no biases) predict exactly c_Z for an isolated atom, so this makes the
    # model's E^(1) the reference's
    baseline_from_atoms: bool = option(False, help="composition baseline = the isolated-atom "
                                       "energies of the training set (needs a makeup with "
                                       "+atoms); default: least-squares fit")
    normalize: bool = option(True, help="do not scale the model output by the std of the "
                             "per-atom residual energies")
    patience: int | None = option(None, help="stop when the validation MAE has not improved "
                                  "by more than --min-improvement in this many evaluations")
    min_improvement: float = option(0.0, help="relative improvement that counts (0.01 = 1%)")
    plateau_patience: int | None = option(None, help="evaluations without improvement before "
                                          "the learning rate is multiplied by --plateau-factor")
    plateau_factor: float = option(0.5, help="learning-rate factor at a plateau")
    min_lr_scale: float = option(1e-3, help="plateau reductions stop at this fraction of the "
                                 "schedule")
    max_seconds: float | None = option(None, help="wall-time budget of the training steps "
                                       "(s; setup excluded)")
    ema_decay: float = option(0.0, flag="--ema", help="parameter EMA decay (e.g. 0.99), "
                              "evaluated and kept as best; 0 = off")
    eval_every: int | None = option(None, help="steps between validations (default: once per "
                                    "epoch)")
    log_every: int = option(64, help="steps per dispatch: metrics read, logged and checked "
                            "this often")
    regularizer: RegularizerConfig = dataclasses.field(default_factory=RegularizerConfig)
    out_dir: str | None = option(None, flag="--out", help="run folder: checkpoints/, "
                                 "metrics.csv, steps.csv, tensorboard/ (an existing run there "
                                 "is resumed)")
    checkpoint_every: int | None = option(None, help="steps between checkpoints (default: "
                                          "after evaluations, at most every "
                                          "--checkpoint-seconds; the last step is always saved)")
    checkpoint_seconds: float = option(30.0, help="least wall time between checkpoints (s)")
    keep_checkpoints: int = option(3, help="checkpoints kept")
    resume: bool = option(True, help="start over even if --out has checkpoints (they are "
                          "moved aside to checkpoints.replaced-<time>/)")
    shard: bool = option(False, help="data-parallel over all local devices")
    progress: bool = option(True, flag="--quiet", help="no progress bar")
    tensorboard: bool = option(True, help="no TensorBoard event files")

    def __post_init__(self):
        if isinstance(self.regularizer, dict):
            reg = dict(self.regularizer)
            reg["weights"] = tuple(reg.get("weights", ()))
            object.__setattr__(self, "regularizer", RegularizerConfig(**reg))
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.schedule not in ("constant", "cosine", "exponential"):
            raise ValueError(f"schedule must be constant|cosine|exponential, got {self.schedule!r}")
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


_MAKEUP_HELP = ("makeup must be 'full', 'all', or 'up_to:M' (M >= 2), optionally followed by "
                "'+atoms', e.g. 'full', 'up_to:3', 'full+atoms', 'up_to:2+atoms'")


def parse_makeup(makeup: str) -> tuple[int, bool, bool]:
    """``makeup`` -> (max subcluster size m (0 = none), include isolated atoms, everything).

    ``full``: full clusters only. ``up_to:m``: full clusters plus subclusters of 2..m atoms.
    ``+atoms``: also the 1-atom subsets. ``all``: every labelled row.
    """
    m = re.fullmatch(r"\s*(full|all|up_to:(\d+))\s*(\+\s*atoms)?\s*", makeup)
    if m is None:
        raise ValueError(f"unknown dataset makeup {makeup!r}: {_MAKEUP_HELP}")
    if m.group(1) == "all":
        return 0, True, True
    size = int(m.group(2)) if m.group(2) else 0
    if m.group(2) and size < 2:
        raise ValueError(f"makeup {makeup!r}: M must be >= 2 ({_MAKEUP_HELP})")
    return size, m.group(3) is not None, False
