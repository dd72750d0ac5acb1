"""Foreign models for the engine: any ASE calculator, batched PyTorch models, ASE structures.

    from ase.calculators.emt import EMT
    from jbo.adapters import from_ase
    from jbo.decompose import body_orders
    r = body_orders(from_ase(EMT()), atoms)             # atoms: an ase.Atoms cluster

Subclusters are real ``ase.Atoms`` (the other atoms removed, no cell, ``pbc=False``: clusters in
vacuum); a structure with periodic boundary conditions is refused unless ``pbc="vacuum"`` says
to drop them. Both adapters return a :class:`jbo.host.HostPotential` (cache, workers, progress,
failure policy documented there), accepted by ``body_orders`` in all three modes.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from jbo.host import HostPotential

__all__ = ["from_ase", "from_torch", "from_structures", "calculator_from_spec", "known_cutoff"]

_TORCH_HINT = "PyTorch is not installed: pip install 'jbo[torch]' (or pip install torch)"


# ----------------------------------------------------------------------------- ASE


class AseEvaluator:
    """Evaluate subclusters with an ASE calculator, one ``Atoms`` each (picklable for workers)."""

    def __init__(self, calculator, vacuum: float | None = None):
        self.calculator, self.vacuum = calculator, vacuum

    def __call__(self, items, forces: bool) -> list:
        from ase import Atoms

        out: list[Any] = []
        for numbers, positions in items:
            atoms = Atoms(numbers=numbers, positions=positions)  # no cell, pbc False: vacuum
            if self.vacuum is not None:  # a non-periodic box, for codes that need a cell
                atoms.center(vacuum=self.vacuum)
            atoms.calc = self.calculator
            try:
                e = atoms.get_potential_energy()
                out.append((e, -atoms.get_forces() if forces else None))
            except Exception as exc:  # noqa: BLE001 - reported per subcluster by HostPotential
                out.append(exc)
        return out


def known_cutoff(calculator) -> float | None:
    """The strict interaction cutoff (Å) of calculators whose source we know (EMT, LJ), or None.

    EMT neighbours are atoms closer than ``rc_list`` (the global value bounds the ``asap_cutoff``
    one); ASE's Lennard-Jones cuts (and shifts) pairs at ``rc``.
    """
    from ase import Atoms
    from ase.calculators.emt import EMT
    from ase.calculators.lj import LennardJones

    try:
        if isinstance(calculator, EMT):
            return float(EMT()._calc_cutoff(Atoms())[1])  # global rc_list, all elements
        if isinstance(calculator, LennardJones):
            return float(calculator.parameters.rc)
    except (AttributeError, TypeError, KeyError):  # a future ASE: fall back to non-local
        return None
    return None


class _StatePickler(pickle._Pickler):  # the Python one: it asks reducer_override for sets too
    """Pickle bytes that depend only on an object's state: sets in sorted order (their order
    follows PYTHONHASHSEED), torch tensors as dtype, shape and raw bytes (torch's own pickle
    embeds storage addresses)."""

    def reducer_override(self, obj):
        if isinstance(obj, (set, frozenset)):
            try:
                return type(obj), (sorted(obj),)
            except TypeError:
                return NotImplemented
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            flat = obj.detach().cpu().reshape(-1).contiguous()
            return _tensor_state, (str(obj.dtype), tuple(obj.shape), type(obj).__name__,
                                   obj.requires_grad, flat.view(torch.uint8).numpy().tobytes())
        return NotImplemented


def _tensor_state(*state):  # only the digest uses these pickles; never unpickled
    return state


#: ASE calculator attributes that change on every evaluation, not part of its model
_VOLATILE = ("atoms", "results")


def fingerprint(obj) -> str | None:
    """A digest of ``obj``'s state (class, attributes, weights), equal across processes for
    equal state, or None when it cannot be pickled. An ASE calculator's last ``atoms`` and
    ``results`` are left out (they change with every call); other caches it keeps (e.g. a
    neighbour list) count, so a calculator used before may not resume a disk cache written by
    a fresh one: it then recomputes, never reading another model's energies."""
    import hashlib
    import io

    state = obj
    if isinstance(getattr(obj, "__dict__", None), dict) and hasattr(obj, "get_potential_energy"):
        state = (type(obj).__module__, type(obj).__qualname__,
                 {k: v for k, v in vars(obj).items() if k not in _VOLATILE})
    buf = io.BytesIO()
    try:
        _StatePickler(buf, protocol=4).dump(state)
    except Exception:  # noqa: BLE001 - any pickling failure: the state cannot be fingerprinted
        return None
    return hashlib.blake2b(buf.getvalue(), digest_size=12).hexdigest()


def cache_tag(obj, tag: str | None, cache) -> str:
    """The cache's name for ``obj``: ``tag`` if given, else class name + :func:`fingerprint`.

    An object whose state cannot be fingerprinted gets a name unique to this process, and a
    disk cache (``cache`` a path, shared between runs) is refused for it: another model of the
    same class would read its energies.
    """
    if tag is not None:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"tag must be a non-empty string naming the model, got {tag!r}")
        return tag
    name = getattr(obj, "__qualname__", type(obj).__qualname__)
    digest = fingerprint(obj)
    if digest is not None:
        return f"{name}:{digest}"
    if isinstance(cache, (str, Path)):
        raise ValueError(
            f"cache={str(cache)!r} is shared between runs, but the state of this {name} cannot "
            "be fingerprinted (it does not pickle), so another model of the same class would "
            "read its energies: pass tag='<a name unique to this model and its weights>' "
            "(CLI: drop --cache), or cache=True (in memory, this run only)")
    return f"{name}:object-{id(obj):x}"


def from_ase(calculator, *, cutoff: float | None | str = "auto", workers: int = 1,
             batch: int = 16, cache: bool | str | Path = True, progress: bool | None = None,
             on_error: str = "raise", vacuum: float | None = None,
             tag: str | None = None) -> HostPotential:
    """Any ASE calculator as an engine potential (energies and, on request, forces).

    Args:
      calculator: an ``ase.calculators`` Calculator (EMT, LennardJones, a DFT code, ...).
      cutoff: interaction cutoff (Å) for connected mode; ``"auto"`` knows EMT and
        LennardJones (:func:`known_cutoff`) and treats others as non-local (None).
      workers: processes evaluating chunks of ``batch`` subclusters (each gets a pickled copy of
        the calculator; worth it for calculators slower than ~10 ms per call). They are
        spawned, so a script using them needs the ``if __name__ == "__main__":`` guard.
      cache: True (memory), False, or an SQLite path: a killed decomposition resumes from it.
      on_error: ``"raise"`` names the failing subcluster; ``"nan"`` records it (``failures``).
      vacuum: give each subcluster a box with this much vacuum (Å) around it, still
        ``pbc=False`` (grid-based codes need a cell); default: no cell.
      tag: names the calculator in the cache (default: class name and a digest of its pickled
        state, :func:`fingerprint`; required for a disk cache when the calculator does not
        pickle). Give one that changes with the model's weights.
    """
    if isinstance(cutoff, str) and cutoff == "auto":
        cutoff = known_cutoff(calculator)
    if workers > 1:
        try:
            pickle.dumps(calculator)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same here
            raise ValueError(f"workers={workers} sends the calculator to worker processes, but "
                             f"it cannot be pickled ({exc}); use workers=1") from exc
    return HostPotential(AseEvaluator(calculator, vacuum), cutoff=cutoff,
                         tag=cache_tag(calculator, tag, cache),
                         cache=cache, workers=workers, batch=batch, progress=progress,
                         on_error=on_error)


# ----------------------------------------------------------------------------- PyTorch


class TorchEvaluator:
    """Evaluate subclusters with a batched torch model, one call per subcluster size."""

    def __init__(self, model: Callable, device: str, dtype: str):
        import torch

        self.model, self.device, self.dtype = model, torch.device(device), getattr(torch, dtype)

    def __call__(self, items, forces: bool) -> list:
        import torch

        out: list[Any] = [None] * len(items)
        sizes = np.array([len(z) for z, _ in items])
        for k in np.unique(sizes):
            at = np.flatnonzero(sizes == k)
            pos = torch.from_numpy(np.stack([items[i][1] for i in at])).to(
                self.device, self.dtype).requires_grad_(forces)
            num = torch.from_numpy(np.stack([items[i][0] for i in at])).to(self.device,
                                                                           torch.long)
            mask = torch.ones(num.shape, dtype=torch.bool, device=self.device)
            with torch.set_grad_enabled(forces):
                e = self.model(pos, num, mask)
                if tuple(e.shape) != (len(at),):
                    raise ValueError(f"the torch model must return energies of shape [B] = "
                                     f"[{len(at)}], got {tuple(e.shape)}")
                grad = torch.autograd.grad(e.sum(), pos)[0] if forces else None
            energies = e.detach().double().cpu().numpy()
            g = None if grad is None else grad.detach().double().cpu().numpy()
            for j, i in enumerate(at):
                out[i] = (energies[j], None if g is None else g[j])
        return out


def from_torch(model: Callable, *, cutoff: float | None = None, device: str = "cpu",
               dtype: str = "float64", batch: int = 4096, cache: bool | str | Path = True,
               progress: bool | None = None, on_error: str = "raise",
               tag: str | None = None) -> HostPotential:
    """A batched PyTorch model as an engine potential.

    Args:
      model: ``(positions[B, N, 3] Å, numbers[B, N] long, mask[B, N] bool) -> energies[B]`` eV
        (an ``nn.Module`` or any callable; differentiable in positions for forces). All
        subclusters of one size are evaluated together, ``batch`` at a time.
      cutoff: the model's cutoff (Å) if it is local (enables connected mode), else None.
      device, dtype: where and in which torch dtype positions are passed.
    """
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ImportError(_TORCH_HINT) from exc
    return HostPotential(TorchEvaluator(model, device, dtype), cutoff=cutoff,
                         tag=cache_tag(model, tag, cache), cache=cache, batch=batch,
                         progress=progress, on_error=on_error, sort_by_size=True)


# ----------------------------------------------------------------------------- structures


def from_structures(structures, pbc: str = "refuse"):
    """``ase.Atoms`` (or a list of them) as engine input arrays.

    Args:
      structures: one ``Atoms`` or a sequence (padded to the largest; padding atoms masked).
      pbc: ``"refuse"`` (default) rejects periodic structures; ``"vacuum"`` drops the cell and
        decomposes the atoms as given, as an isolated cluster.
    Returns: ``(positions [N,3]|[B,N,3] Å, numbers int32, atom_mask bool)``.
    """
    if pbc not in ("refuse", "vacuum"):
        raise ValueError(f"pbc must be 'refuse' or 'vacuum', got {pbc!r}")
    single = hasattr(structures, "get_positions")
    items = [structures] if single else list(structures)
    if not items:
        raise ValueError("no structures given: nothing to decompose")
    for i, atoms in enumerate(items):
        if pbc == "refuse" and np.any(atoms.pbc):
            raise ValueError(
                f"structure {i} ({atoms.get_chemical_formula()}) is periodic (pbc="
                f"{np.asarray(atoms.pbc).tolist()}); body orders are defined for clusters in "
                "vacuum: pass pbc='vacuum' (CLI: --pbc vacuum) to drop the cell, or set "
                "atoms.pbc = False"
            )
    n = max(len(a) for a in items)
    pos = np.zeros((len(items), n, 3))
    num = np.zeros((len(items), n), np.int32)
    mask = np.zeros((len(items), n), bool)
    for b, atoms in enumerate(items):
        pos[b, : len(atoms)] = atoms.get_positions()
        num[b, : len(atoms)] = atoms.numbers
        mask[b, : len(atoms)] = True
    return (pos[0], num[0], mask[0]) if single else (pos, num, mask)


def is_structure(x) -> bool:
    """True for an ``ase.Atoms`` or a non-empty list/tuple of them."""
    if isinstance(x, (list, tuple)):
        return bool(x) and all(hasattr(a, "get_positions") for a in x)
    return hasattr(x, "get_positions")


# ----------------------------------------------------------------------------- by name


def calculator_from_spec(spec: str):
    """``"emt"``, ``"lj"`` or ``"module:factory"`` (called without arguments) -> a calculator
    (or a ready :class:`HostPotential`, e.g. a factory that wraps a torch model)."""
    if spec == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if spec == "lj":
        from ase.calculators.lj import LennardJones

        return LennardJones()
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"unknown calculator {spec!r}: use emt, lj or module:factory")
    try:
        factory = getattr(importlib.import_module(module), name)
    except Exception as exc:  # noqa: BLE001 - an import may raise anything; one line says so
        raise ValueError(f"cannot load calculator factory {spec!r}: {_describe(exc)}") from None
    if not callable(factory):
        raise ValueError(f"{spec!r} is a {type(factory).__name__}, not a factory function "
                         "returning an ASE calculator")
    try:
        inspect.signature(factory).bind()
    except TypeError as exc:
        raise ValueError(f"calculator factory {spec!r} must be callable without arguments "
                         f"({exc}); wrap it in a function that fills them in") from None
    except ValueError:  # no signature (a builtin): try the call
        pass
    try:
        calc = factory()
    except Exception as exc:  # noqa: BLE001 - the user's factory: report, do not trace back
        raise ValueError(f"calculator factory {spec!r} raised {_describe(exc)}") from None
    if not (hasattr(calc, "get_potential_energy") or hasattr(calc, "lattice_energies")):
        raise ValueError(f"calculator factory {spec!r} returned a {type(calc).__name__}, not "
                         "an ASE calculator (or a HostPotential of from_ase/from_torch)")
    return calc


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def structure_input(positions, species, atom_mask):
    """``body_orders``' input: arrays pass through; ``ase.Atoms`` become (positions, numbers,
    mask), refusing periodic structures (use :func:`from_structures` with ``pbc="vacuum"``)."""
    if not is_structure(positions):
        return positions, species, atom_mask
    if species is not None or atom_mask is not None:
        raise ValueError("pass ase.Atoms alone (species and padding come from them) or "
                         "positions/species/atom_mask arrays, not both")
    return from_structures(positions)
