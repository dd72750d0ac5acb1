"""The engine's host-side checks: options, plans, the energy-function contract, results.

:func:`jbo.request.checked` (before the jitted work) and :func:`jbo.request.verify` (after it),
the one check step of every decomposition, call these once per call on concrete input; nothing
here runs inside ``jit`` or costs anything on the hot path.

* :func:`options` — ``max_order`` a real int, ``chunk_size`` positive, ``layout`` known,
  ``plan=`` and ``cutoff=`` consistent, connected mode only for a function that *declares* itself
  local with a cutoff (``energy_fn.is_local = True``, ``energy_fn.cutoff`` in Å).
* :func:`concrete_input` — the potential's part of :func:`jbo.request.checked` on concrete
  input: the potential's validate, the contract once, the plan's geometry.
* :func:`plan_matches` — a connected plan's cutoff graph is the one of the positions given.
* :func:`check_contract` — masked evaluation equals evaluation of the extracted subcluster on a
  few random subsets of a few atoms; :func:`contract_once` runs it once per architecture.
* :func:`finite_result` — a NaN/inf result names the smallest subset whose term is not finite.
* :func:`full_expansion` — with K = N, Σ_k E^(k) equals the whole-cluster energy (else, in
  connected mode, the declared cutoff is shorter than the model's real range).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from numbers import Integral
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jbo import geometry
from jbo.potential import Potential, as_potential, is_contract_tested

__all__ = ["options", "concrete_input", "plan_matches", "check_contract", "contract_once",
           "finite_result", "full_expansion", "ContractError", "ExpansionError", "memory_limit"]

LAYOUTS = ("auto", "compact", "masks")
#: Masked and extracted energies must agree to this (eV, plus the same relative to |E|).
CONTRACT_TOL = 1e-6


class ContractError(ValueError):
    """The energy function does not treat masked atoms as absent."""


def memory_limit() -> int:
    """Bytes the decomposition may hold (env ``JBO_MEMORY_LIMIT``, default 4 GiB)."""
    text = os.environ.get("JBO_MEMORY_LIMIT")
    if text is None:
        return 4 * 2**30
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"JBO_MEMORY_LIMIT={text!r} is not a positive number of bytes; "
                         "set e.g. JBO_MEMORY_LIMIT=4e9 (or unset it for 4 GiB)")
    return int(value)


def as_int(name: str, value, low: int = 1) -> int:
    """``value`` as an int >= ``low``; floats, strings and bools are refused (no rounding)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def options(energy_fn: Callable, n: int, *, max_order, cutoff, plan, chunk_size, layout
            ) -> tuple[int, float | None]:
    """Validate ``body_orders``' options; returns ``(K, cutoff)`` with the plan's cutoff."""
    if max_order is not None:
        as_int("max_order", max_order)
    k = n if max_order is None else int(max_order)
    if not 1 <= k <= n:
        raise ValueError(
            f"max_order={max_order} is outside 1..N for a cluster of N={n} atoms; "
            f"use max_order <= {n} (or None for the full expansion)"
        )
    as_int("chunk_size", chunk_size)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    cutoff = geometry.check_cutoff(cutoff, "cutoff")
    if plan is not None and cutoff is not None and plan.cutoff != cutoff:
        raise ValueError(f"cutoff={cutoff} contradicts the plan's cutoff={plan.cutoff}; pass "
                         "one of them (the plan already fixes the cutoff)")
    if plan is not None:
        cutoff = plan.cutoff
    if cutoff is not None:
        _check_locality(energy_fn, cutoff)
    return k, cutoff


def _check_locality(energy_fn: Callable, cutoff: float) -> None:
    is_local = getattr(energy_fn, "is_local", None)
    if is_local is False:
        raise ValueError(
            "connected mode needs a local model (ε(S) = 0 for disconnected S) but this "
            "energy_fn declares is_local=False; use max_order=K instead of cutoff"
        )
    model_cutoff = getattr(energy_fn, "cutoff", None)
    if is_local is not True or model_cutoff is None:
        raise ValueError(
            "connected mode (cutoff=/plan=) assumes ε(S) = 0 for subsets disconnected in the "
            "cutoff graph, but this energy_fn does not declare it: set energy_fn.is_local = True "
            "and energy_fn.cutoff = its interaction range in Å (zoo models and jbo.potentials "
            "do), or use max_order=K without cutoff"
        )
    if cutoff < model_cutoff:
        raise ValueError(
            f"cutoff={cutoff} Å is smaller than the model's own cutoff {model_cutoff} Å: "
            "subsets linked only by longer edges would be dropped; pass cutoff >= model cutoff"
        )


_verified: dict[int, tuple[weakref.ref, bytes]] = {}  # id(plan) -> (plan, positions digest)


def plan_matches(plan, pos: np.ndarray, amask: np.ndarray) -> None:
    """Refuse a connected plan built for another geometry (its cutoff graph differs).

    O(B N²) the first time a plan meets some positions; a repeat (same plan object, same
    positions and mask) costs one hash of the positions.
    """
    if plan.mode != "connected" or plan.graph_hash is None:
        return
    digest = hashlib.blake2b(np.ascontiguousarray(pos).tobytes() + np.asarray(amask).tobytes(),
                             digest_size=16).digest()
    ref, seen = _verified.get(id(plan), (None, None))
    if ref is not None and ref() is plan and seen == digest:
        return
    now = geometry.graph_hash(pos, plan.cutoff, amask)
    stale = np.flatnonzero(now != np.asarray(plan.graph_hash))
    if stale.size:
        raise ValueError(
            f"the plan was built for other positions: the cutoff graph of cluster "
            f"{int(stale[0])} differs from the plan's; rebuild it with connected_plan(positions, "
            f"{plan.cutoff}, {plan.max_order}) for these positions"
        )
    for key in [k for k, (r, _) in _verified.items() if r() is None]:
        del _verified[key]
    _verified[id(plan)] = (weakref.ref(plan), digest)


def check_contract(energy_fn: Callable, positions, species=None, atom_mask=None, *,
                   n_subsets: int = 3, window: int = 8, seed: int = 0,
                   tol: float = CONTRACT_TOL) -> bool:
    """Check that ``energy_fn`` treats masked atoms as absent (docs/CONTRACTS.md).

    Takes up to ``window`` random real atoms W of one cluster (the first of a batch) and
    ``n_subsets`` random subsets S of W of one size, and compares
    ``energy_fn(positions[W], species[W], mask_S)`` with ``energy_fn(positions[S], species[S],
    ones)``: two jitted, vmapped evaluations on small shapes, whatever the cluster's size.

    Returns False when nothing could be compared (one atom, or traced output), else True.
    Raises: ContractError naming the subset (indices into ``positions``) and both energies (eV).
    """
    # numpy only: jnp ops would be staged (tracers) when called inside someone else's jit
    pos = np.asarray(positions, np.float64).reshape(-1, *np.shape(positions)[-2:])[0]
    n = pos.shape[0]
    spec = np.ones(n, np.int32) if species is None else \
        np.asarray(species, np.int32).reshape(-1, n)[0]
    amask = np.ones(n, bool) if atom_mask is None else np.asarray(atom_mask, bool).reshape(-1, n)[0]
    real = np.flatnonzero(amask)
    if len(real) < 2:
        return False
    rng = np.random.default_rng(seed)
    win = np.sort(rng.choice(real, min(window, len(real)), replace=False))
    size = max(1, len(win) // 2)
    picks = np.array([np.sort(rng.choice(len(win), size, replace=False))
                      for _ in range(n_subsets)])  # [S, size] positions within the window
    masks = np.zeros((n_subsets, len(win)), bool)
    np.put_along_axis(masks, picks, True, axis=1)

    masked, alone = _masked_and_alone(as_potential(energy_fn), pos[win], spec[win], masks,
                                      pos[win][picks], spec[win][picks])
    if isinstance(masked, jax.core.Tracer) or isinstance(alone, jax.core.Tracer):
        return False  # e.g. parameters being differentiated: nothing to compare on the host
    masked, alone = np.asarray(masked, np.float64), np.asarray(alone, np.float64)
    for m, a, pick in zip(masked, alone, picks):
        if not abs(m - a) <= tol * (1 + abs(a)):
            raise ContractError(
                f"energy_fn breaks the masking contract: atoms {win[pick].tolist()} give "
                f"{m:.10g} eV with the others masked but {a:.10g} eV extracted alone; "
                "masked atoms must be absent (no edges, no counts, no normalisation); fix the "
                "function, or pass check_contract=False to body_orders to skip this check"
            )
    return True


@jax.jit  # one small program per architecture and shape: its compile is the check's cost
def _masked_and_alone(pot: Potential, p, z, m, p_s, z_s):
    return (jax.vmap(pot.energy, (None, None, 0))(p, z, m),
            jax.vmap(pot.energy, (0, 0, None))(p_s, z_s, jnp.ones(p_s.shape[1], bool)))


def concrete_input(pot: Potential, pos, spec, amask, *, plan=None, contract: bool = True
                   ) -> None:
    """The engine's one host-side step on concrete input, before anything is compiled.

    Called by :func:`jbo.request.checked`, which every path that decomposes a potential
    (``body_orders``, ``decompose_records``, the CLI and the study) passes through: the
    potential's own ``validate`` (e.g. known species),
    the masking contract once per architecture (:func:`contract_once`; skipped for host
    potentials, which evaluate real subclusters, or with ``contract=False``) and a connected
    plan's geometry (:func:`plan_matches`). Positions, species and mask are ``[B, N, ...]``
    already checked by :func:`jbo.geometry.validate` (shapes, finite positions, distances).
    """
    pot.validate(pos, spec, amask)
    host = np.asarray(pos), np.asarray(spec), np.asarray(amask)  # no staged jnp ops
    if contract:
        contract_once(pot, *host)
    if plan is not None:
        plan_matches(plan, host[0], host[2])


_checked: set = set()  # static parts (Potential.static) of the potentials already checked


def contract_once(pot: Potential, pos, spec, amask) -> None:
    """:func:`check_contract` the first time a potential's static part (its architecture: the
    apply function and metadata, not the parameters) is seen with concrete output; later calls,
    new parameters included, cost one set lookup. Skipped for architectures built only of
    parts the test suite proves (:func:`jbo.potential.is_contract_tested`: the zoo, the
    analytic potentials and their baselines, scalings and sums): its compile would otherwise
    be a third of a first call."""
    key = pot.static
    if key in _checked or is_contract_tested(pot.apply):  # jbo's own parts: proven by tests
        return
    if check_contract(pot, pos, spec, amask):
        _checked.add(key)


def finite_result(result, subsets_of: Callable[[int], tuple[int, ...]]) -> None:
    """Raise naming the smallest subset whose interaction term (or the total) is not finite.

    Args: result: a concrete :class:`jbo.decompose.BodyOrders` (batched); ``subsets_of(j)`` the
      atoms of term ``j``.
    """
    per_order = np.asarray(result.per_order)
    total = np.asarray(result.total)
    if np.isfinite(per_order).all() and np.isfinite(total).all():
        return
    where = "the energies"
    if result.terms is not None:
        terms = np.asarray(result.terms).reshape(-1, np.shape(result.terms)[-1])
        bad = np.flatnonzero(~np.isfinite(terms).all(0))
        if bad.size:
            sizes = np.asarray(result.orders)[bad]
            j = int(bad[np.argmin(sizes)])
            where = f"the subset of atoms {subsets_of(j)}"
    raise FloatingPointError(
        f"energy_fn returned a non-finite energy (NaN/inf) for {where}; check the model on that "
        "subcluster (e.g. a division by a neighbour count that is zero there)"
    )


class ExpansionError(ArithmeticError):
    """A full expansion's Σ_k E^(k) differs from the whole-cluster energy beyond round-off."""


def model_eps(pot) -> float:
    """Machine epsilon of the coarsest floating dtype a potential computes in: its floating
    parameter leaves (a :class:`Potential`), a host evaluator's ``dtype``, else float64."""
    if hasattr(pot, "evaluator"):  # a host potential (torch evaluators name their dtype)
        dtypes = [jnp.dtype(str(getattr(pot.evaluator, "dtype", "float64")).split(".")[-1])]
    else:
        dtypes = [jnp.result_type(x) for x in jax.tree_util.tree_leaves(getattr(pot, "params",
                                                                                None))]
    eps = [float(jnp.finfo(d).eps) for d in dtypes if jnp.issubdtype(d, jnp.floating)]
    return max(eps + [float(np.finfo(np.float64).eps)])


def full_expansion(result, cutoff: float | None, eps_model: float) -> None:
    """Σ_k E^(k) must equal the whole-cluster energy when the expansion runs to K = N.

    Call on a concrete batched result whose ``max_order`` is the cluster width N. The sum and
    the total come from separate evaluations, so they agree up to round-off: per cluster
    ``tol = 64 · ε_model · s + 8 · ε_64 · M · s`` with ``s = |E| + Σ_k |E^(k)|`` (eV) and M
    the number of subset terms (float64 assembly). Non-finite clusters are left to
    :func:`finite_result`. Raises :class:`ExpansionError` naming the cluster and the likely
    cause (in connected mode: a declared cutoff shorter than the model's interaction range).
    """
    per_order = np.asarray(result.per_order, np.float64)
    per_order = per_order.reshape(-1, per_order.shape[-1])
    total = np.asarray(result.total, np.float64).reshape(-1)
    n_terms = np.shape(result.subsets)[0]
    scale = np.abs(total) + np.abs(per_order).sum(-1)
    tol = 64 * eps_model * scale + 8 * float(np.finfo(np.float64).eps) * n_terms * scale
    diff = np.abs(per_order.sum(-1) - total)
    bad = np.flatnonzero(np.isfinite(diff) & (diff > tol))
    if not bad.size:
        return
    b = int(bad[np.argmax(diff[bad])])
    head = (f"Σ_k E^(k) = {per_order[b].sum():.10g} eV but the whole cluster's energy is "
            f"{total[b]:.10g} eV (cluster {b}; difference {diff[b]:.3g} eV, round-off allows "
            f"{tol[b]:.2g} eV), although the expansion runs to K = N")
    if result.mode == "connected":
        raise ExpansionError(
            f"{head}: connected mode with cutoff={cutoff} Å dropped interactions, so the model "
            "reaches farther than its declared cutoff (is_local/cutoff): declare its real "
            "interaction range (or pass a larger cutoff), or decompose without cutoff")
    raise ExpansionError(
        f"{head}: the model gave two different energies for one subcluster (nondeterministic, "
        "or it depends on absent/padding atoms); fix the model")
