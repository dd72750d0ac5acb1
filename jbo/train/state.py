"""The training state: one pytree that is also the checkpoint.

Everything a resumed run needs to replay the next steps bit for bit lives here (the data order
and the regularizer's draws are functions of (seed, step), so they need no state).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import numpy as np

__all__ = ["TrainState", "SUM_KEYS"]

# running sums of the training metrics since the last evaluation (additive over steps)
SUM_KEYS = ("loss", "reg", "weight", "abs_e", "sq_e", "abs_f", "sq_f", "n_f", "n")


@flax.struct.dataclass
class TrainState:
    """params / opt_state: the model's parameters and Adam state after ``step`` steps.
    ema: exponential moving average of the parameters (a copy of params when EMA is off).
    key: the run's PRNG key (step t uses ``fold_in(key, t)``).
    best_params, best_val: the evaluated parameters with the lowest validation MAE (meV/atom).
    bad_evals: evaluations since the last improvement (the convergence rule's counter).
    plateau_evals: evaluations since the last improvement or learning-rate reduction.
    lr_scale: factor on the scheduled learning rate (reduced on plateaus).
    evals: evaluations done. sums: training-metric sums since the last evaluation (SUM_KEYS).
    """

    params: Any
    opt_state: Any
    ema: Any
    key: Any
    step: Any
    best_params: Any
    best_val: Any
    bad_evals: Any
    plateau_evals: Any
    lr_scale: Any
    evals: Any
    sums: dict

    @classmethod
    def initial(cls, params, opt_state, seed: int) -> "TrainState":
        return cls(params=params, opt_state=opt_state, ema=params,
                   key=jax.random.PRNGKey(seed), step=np.int64(0), best_params=params,
                   best_val=np.float64(np.inf), bad_evals=np.int64(0),
                   plateau_evals=np.int64(0), lr_scale=np.float64(1.0), evals=np.int64(0),
                   sums={k: np.float64(0.0) for k in SUM_KEYS})

    def to_host(self) -> "TrainState":
        """A copy with every leaf a numpy array (what is checkpointed and returned)."""
        return jax.tree_util.tree_map(np.asarray, jax.device_get(self))

    def to_dict(self) -> dict:
        return flax.serialization.to_state_dict(self.to_host())

    def from_dict(self, d: dict) -> "TrainState":
        """``self`` with the leaves of a restored :meth:`to_dict` (structure checked)."""
        return flax.serialization.from_state_dict(self, d)
