"""The training configuration: one frozen dataclass, JSON round-trippable (stored in checkpoints)."""

from __future__ import annotations

import dataclasses
import json
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

    db: str = "data/h_clusters.db"
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
    patience: int | None = None  # early stopping: epochs without validation improvement
    regularizer: RegularizerConfig = dataclasses.field(default_factory=RegularizerConfig)
    out_dir: str | None = None  # checkpoints/, metrics.csv, steps.csv, tensorboard/
    checkpoint_every: int | None = None  # steps; None = once per epoch
    keep_checkpoints: int = 3
    resume: bool = True  # continue from the newest valid checkpoint in out_dir
    shard: bool = False  # data-parallel over jax.devices()
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.schedule not in ("constant", "cosine", "exponential"):
            raise ValueError(f"schedule must be constant|cosine|exponential, got {self.schedule!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        if isinstance(self.regularizer, dict):
            reg = dict(self.regularizer)
            reg["weights"] = tuple(reg.get("weights", ()))
            object.__setattr__(self, "regularizer", RegularizerConfig(**reg))

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
