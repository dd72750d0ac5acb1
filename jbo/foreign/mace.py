"""MACE models (mace-torch ``*.model`` files: a pickled ``MACE``/``ScaleShiftMACE``) as
engine potentials.

    from jbo.foreign.mace import from_mace
    pot = from_mace("water.model")                    # float64, cutoff = the model's r_max
    r = body_orders(pot, atoms, forces=True)          # exhaustive, truncated or connected

Each chunk of subclusters (sorted by size) is one model call on a ``torch_geometric`` batch of
``mace.data.AtomicData`` graphs built exactly as ``MACECalculator`` builds them (no cell,
``pbc=False``); forces come from the model itself (``-dE/dx``). Needs
``pip install 'jbo[mace]'``. Loading a ``.model`` file unpickles it, which runs code from
the file: load only files you trust.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from jbo.foreign.common import ForeignPotential, file_digest, require, state_digest

__all__ = ["from_mace", "MaceEvaluator", "load_mace"]


def load_mace(path: str | Path, device: str = "cpu"):
    """Unpickle a mace-torch model file (``torch.save`` of the module) on ``device``."""
    require("mace", "mace")
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no MACE model file at {path}")
    return torch.load(path, map_location=device, weights_only=False)


def _check(model):
    modules = require("mace.modules", "mace")
    if not isinstance(model, modules.MACE):
        raise TypeError(f"from_mace takes a mace-torch energy model (MACE, ScaleShiftMACE) or "
                        f"the path of one, got {type(model).__module__}."
                        f"{type(model).__qualname__} (dipole-only and other non-energy MACE "
                        "models have no energy to decompose)")


def _pick_head(model, head: str | None) -> str:
    heads = list(getattr(model, "heads", None) or ["Default"])
    if head is not None:
        if head not in heads:
            raise ValueError(f"head {head!r} is not among this MACE model's heads {heads}")
        return head
    if len(heads) == 1:
        return heads[0]
    default = [h for h in heads if h.lower() == "default"]
    if not default:
        raise ValueError(f"this MACE model has several heads {heads}: pick one with head=...")
    return default[0]


class MaceEvaluator:
    """Evaluate a chunk of subclusters as one MACE call on a ``torch_geometric`` batch."""

    def __init__(self, model, device: str, dtype: str, head: str):
        require("mace", "mace")
        from mace.tools import utils

        self.model, self.device, self.dtype, self.head = model, device, dtype, head
        self.heads = list(getattr(model, "heads", None) or ["Default"])
        self.z_table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
        self.r_max = float(model.r_max)

    def _batch(self, items):
        from ase import Atoms
        from mace import data
        from mace.tools import torch_geometric, torch_tools

        with torch_tools.default_dtype(self.dtype):
            graphs = [data.AtomicData.from_config(
                data.config_from_atoms(Atoms(numbers=z, positions=x), head_name=self.head),
                z_table=self.z_table, cutoff=self.r_max, heads=self.heads) for z, x in items]
        return torch_geometric.Batch.from_data_list(graphs).to(self.device)

    def __call__(self, items, forces: bool) -> list:
        import torch

        batch = self._batch(items)
        out = self.model(batch.to_dict(), training=False, compute_force=forces,
                         compute_stress=False)
        energies = out["energy"].detach().to("cpu", torch.float64).numpy()
        if len(energies) != len(items):
            raise ValueError(f"the MACE model returned {len(energies)} energies for "
                             f"{len(items)} subclusters")
        result: list[Any] = []
        ptr = batch["ptr"].cpu().numpy()
        f = out["forces"].detach().to("cpu", torch.float64).numpy() if forces else None
        for i in range(len(items)):
            result.append((energies[i], None if f is None else -f[ptr[i]:ptr[i + 1]]))
        return result


def from_mace(model, *, cutoff: float | None | str = "auto", device: str = "cpu",
              dtype: str = "float64", head: str | None = None, batch: int = 1024,
              cache: bool | str | Path = True, progress: bool | None = None,
              on_error: str = "raise", tag: str | None = None) -> ForeignPotential:
    """A mace-torch energy model (a ``*.model`` file or the loaded module) as an engine
    potential: energies (eV) and, on request, forces of every subcluster.

    Args:
      model: path of the model file, or the ``MACE``/``ScaleShiftMACE`` module (not modified:
        converted on a copy when ``dtype`` differs).
      cutoff: ``"auto"``: the model's ``r_max`` (every MACE interaction travels along edges
        shorter than it, so ε(S) = 0 for S disconnected at ``r_max``); a number (Å), or None.
      dtype: ``"float64"`` (default) or ``"float32"``: the model and graphs are cast to it.
      head: the head of a multi-head model (default: its only or its "Default" head).
      batch: subclusters per model call (sorted by size, so a call holds one or two sizes).
      cache, progress, on_error, tag: as for :func:`jbo.adapters.from_ase`.
    ``pot.receptive_field`` is ``r_max`` x ``num_interactions``.
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    require("mace", "mace")
    import torch

    if isinstance(model, (str, Path)):
        path, model = Path(model), load_mace(model, device)
        digest = f"{path.name}#{file_digest(path)}"
    else:
        _check(model)
        digest = state_digest(model)
        model = copy.deepcopy(model)
    _check(model)
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    head = _pick_head(model, head)
    r_max = float(model.r_max)
    n_layers = int(model.num_interactions)
    return ForeignPotential(
        MaceEvaluator(model, device, dtype, head), kind="mace", model=model, dtype=dtype,
        species=[int(z) for z in model.atomic_numbers],
        cutoff=r_max if cutoff == "auto" else cutoff, receptive_field=r_max * n_layers,
        tag=tag or f"mace:{digest}:{head}:{dtype}", cache=cache, batch=batch,
        progress=progress, on_error=on_error)
