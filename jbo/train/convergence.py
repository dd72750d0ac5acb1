"""When to stop, and when to lower the learning rate: one readable rule, applied per evaluation.

After every validation evaluation with MAE ``v`` (meV/atom) and best-so-far ``b``:

* ``v < b``: the parameters become the best ones (``best_params``);
* ``v < b (1 - min_improvement)`` counts as an *improvement* and resets both counters;
  otherwise ``bad_evals`` and ``plateau_evals`` grow by one;
* ``plateau_evals >= plateau_patience``: the learning rate is multiplied by ``plateau_factor``
  (not below ``min_lr_scale`` times the schedule), and ``plateau_evals`` restarts;
* ``bad_evals >= patience``: the run has converged and stops.

Budgets (``max_steps``, ``max_seconds``, ``epochs``) stop a run that has not converged; the stop
reason says which. Without validation data the score is ``-step`` (never a plateau).
"""

from __future__ import annotations

import numpy as np

from jbo.train.config import TrainConfig
from jbo.train.state import TrainState

__all__ = ["after_evaluation", "describe"]


def describe(config: TrainConfig) -> str:
    """The rule in words (stored in the run's summary)."""
    parts = []
    if config.patience is not None:
        parts.append(f"stop when the validation MAE has not improved by more than "
                     f"{100 * config.min_improvement:g}% over {config.patience} evaluations")
    if config.plateau_patience is not None:
        parts.append(f"multiply the learning rate by {config.plateau_factor:g} after "
                     f"{config.plateau_patience} evaluations without improvement")
    budget = [f"{config.epochs} epochs"]
    if config.max_steps is not None:
        budget.append(f"{config.max_steps} steps")
    if config.max_seconds is not None:
        budget.append(f"{config.max_seconds:g} s")
    parts.append("budget: " + ", ".join(budget))
    return "; ".join(parts)


def after_evaluation(state: TrainState, score: float, params, config: TrainConfig
                     ) -> tuple[TrainState, str | None]:
    """Apply the rule to ``state`` after an evaluation scoring ``score`` with ``params`` (the
    evaluated parameters: EMA ones when enabled). Returns (new state, stop reason or None)."""
    best = float(state.best_val)
    bad, plateau, scale = int(state.bad_evals), int(state.plateau_evals), float(state.lr_scale)
    best_params = state.best_params
    improved = score < best * (1.0 - config.min_improvement) if np.isfinite(best) \
        else score < best
    if score < best:
        best, best_params = score, params
    if improved:
        bad, plateau = 0, 0
    else:
        bad, plateau = bad + 1, plateau + 1
    if config.plateau_patience is not None and plateau >= config.plateau_patience:
        scale, plateau = max(scale * config.plateau_factor, config.min_lr_scale), 0
    state = state.replace(best_val=np.float64(best), best_params=best_params,
                          bad_evals=np.int64(bad), plateau_evals=np.int64(plateau),
                          lr_scale=np.float64(scale), evals=np.int64(int(state.evals) + 1))
    reason = None
    if config.patience is not None and bad >= config.patience:
        reason = (f"converged: validation MAE did not improve by more than "
                  f"{100 * config.min_improvement:g}% in {config.patience} evaluations "
                  f"(best {best:.4g} meV/atom)")
    return state, reason
