"""Which exhaustive layout a concrete call compiles: few programs first, fast ones when they pay.

The exhaustive decomposition has two layouts (:mod:`jbo.decompose`): ``"masks"`` holds one
instance of the model (compiles fastest, N-wide work per subset) and ``"compact"`` one per size
bucket (:func:`jbo.lattice.size_buckets`: ~2-3x less work, ~``N_BUCKETS`` times the compile).
``layout="auto"`` (the default) starts every new (architecture, shape, options) key on
``"masks"`` and moves it to ``"compact"`` once the time spent running ``"masks"`` on that key
exceeds what compiling ``"compact"`` is estimated to cost (ski rental: the total is within ~2x
of the best fixed choice made in hindsight). The first call of a decomposition therefore
compiles one model instance, and a long run ends up on the fast layout.

Traced calls (under ``jit``/``grad``) cannot be timed: they use ``"compact"``, compiled once
with the caller's program. Timings are wall seconds of this process; nothing is persisted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

from jbo.lattice import N_BUCKETS

__all__ = ["choose", "record", "reset"]


@dataclasses.dataclass
class _Key:
    first_s: float | None = None  # the first call (compile + run), s
    warm_s: float = 0.0  # Σ later calls on "masks", s
    warm_min: float | None = None  # fastest later call on "masks" (≈ run time), s
    upgraded: bool = False


_keys: dict[Hashable, _Key] = {}


def choose(key: Hashable) -> str:
    """The layout the next concrete call of ``key`` runs."""
    st = _keys.get(key)
    if st is None or not st.upgraded:
        return "masks"
    return "compact"


def record(key: Hashable, layout: str, seconds: float) -> None:
    """Book a finished concrete call of ``key`` (wall ``seconds``, compile included)."""
    st = _keys.setdefault(key, _Key())
    if layout != "masks" or st.upgraded:
        return
    if st.first_s is None:
        st.first_s = seconds
        return
    st.warm_s += seconds
    st.warm_min = seconds if st.warm_min is None else min(st.warm_min, seconds)
    compile_masks = max(st.first_s - st.warm_min, 0.0)  # one instance
    st.upgraded = st.warm_s >= N_BUCKETS * compile_masks  # the compact program's estimate


def reset() -> None:
    """Forget every key (tests)."""
    _keys.clear()
