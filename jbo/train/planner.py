"""Which rows each training step sees: host-side index arrays, a pure function of seed and step.

:class:`Planner` gives a chunk of steps' batch indices and weights (and the regulariser's
clusters) for the device loop, so a resumed run replays the same batches bit for bit.
"""

from __future__ import annotations

import numpy as np

from jbo.train import dataset as ds
from jbo.train import sharding

__all__ = ["Planner"]


class Planner:
    """Host-side index arrays for a chunk of steps (data order is a function of seed/step)."""

    def __init__(self, run):  # a jbo.train.loop.Run
        self.run, self._epoch, self._batches = run, None, None

    def plan(self, step: int, n: int) -> dict[str, np.ndarray]:
        """Index arrays of steps ``step .. step + n - 1`` (padded to ``log_every`` rows)."""
        r, k = self.run, self.run.config.log_every
        idx = np.zeros((k, r.batch_dev), np.int32)
        wgt = np.zeros((k, r.batch_dev))
        reg = np.zeros((k, sharding.round_up(r.reg_size, r.mesh)), np.int32)
        reg_w = np.zeros(reg.shape)
        for j in range(n):
            i = self.indices(step + j)
            idx[j, :len(i)], idx[j, len(i):], wgt[j, :len(i)] = i, i[0], 1.0
            if r.reg_dev:
                ri = _reg_indices(len(r.data.reg), r.reg_size, r.config.seed, step + j)
                reg[j, :len(ri)], reg[j, len(ri):], reg_w[j, :len(ri)] = ri, ri[0], 1.0
        return {"idx": idx, "weight": wgt, "reg_idx": reg, "reg_weight": reg_w,
                "step": np.arange(step, step + k, dtype=np.int32)}

    def indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.run.n_batches)
        if epoch != self._epoch:
            self._epoch = epoch
            self._batches = ds.batch_indices(len(self.run.data.train), self.run.batch,
                                          self.run.config.seed, epoch)
        return self._batches[pos]


def _reg_indices(n: int, size: int, seed: int, step: int) -> np.ndarray:
    """Which training full clusters the regularizer sees at ``step`` (a function of both)."""
    return np.random.default_rng([seed, 1, step]).choice(n, size=min(size, n), replace=False)
