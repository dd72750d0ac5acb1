"""Metatomic models (``mtt export`` of metatrain's PET, SOAP-BPNN, ...) as engine potentials.

    from jbo.foreign.metatomic import from_metatomic
    pot = from_metatomic("model.pt")                  # cutoff, species, dtype from the model
    r = body_orders(pot, atoms, forces=True)          # exhaustive, truncated or connected

Each chunk of subclusters (sorted by size) is one model call on a list of
``metatomic.torch.System`` (no cell, ``pbc=False``: clusters in vacuum) with the neighbour
lists the model requests (vesin, exact cutoff, no skin), in the model's own dtype; forces are
the autograd gradient of the energies. Needs ``pip install 'jbo[metatrain]'``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from jbo.foreign.common import ForeignPotential, file_digest, require, state_digest

__all__ = ["from_metatomic", "MetatomicEvaluator", "declared_ranges"]


def zipfile_like(path: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


def _import_extensions(path: Path) -> list[str]:
    """Import the Python packages of the TorchScript extensions a metatomic export declares
    (``extra/extensions``: library paths relative to site-packages, such as
    ``sphericart/torch/torch-2.13/lib/…so`` of SOAP-BPNN), which registers their operators;
    without this a SOAP-BPNN export fails to load unless the caller happened to import them.
    Returns the modules imported; a package that is not installed is left to the load's error."""
    import importlib
    import json
    import zipfile

    with zipfile.ZipFile(path) as z:
        name = next((n for n in z.namelist() if n.endswith("/extra/extensions")), None)
        declared = json.loads(z.read(name)) if name else []
    done = []
    for ext in declared:
        parts = Path(ext.get("path", "")).parts
        for k in range(len(parts) - 1, 0, -1):  # the deepest importable package of the path
            if all(p.isidentifier() for p in parts[:k]):
                try:
                    done.append(importlib.import_module(".".join(parts[:k])).__name__)
                    break
                except ImportError:
                    continue
    return done


def _load(model, extensions_directory):
    mt = require("metatomic.torch", "metatomic")
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no metatomic model at {path}; export one with "
                                    "`mtt export` or AtomisticModel.save")
        kw = {} if extensions_directory is None else \
            {"extensions_directory": str(extensions_directory)}
        if extensions_directory is None and zipfile_like(path):
            _import_extensions(path)
        return mt.load_atomistic_model(str(path), **kw), f"{path.name}#{file_digest(path)}"
    if not (isinstance(model, mt.AtomisticModel) or
            getattr(model, "original_name", None) == "AtomisticModel"):
        raise TypeError(f"from_metatomic takes a metatomic AtomisticModel or the path of an "
                        f"exported one, got {type(model).__name__}")
    return model, state_digest(model)


def declared_ranges(model) -> tuple[float | None, float | None]:
    """``(cutoff, interaction_range)`` in Å from a metatomic model's own metadata.

    cutoff: the largest cutoff of the neighbour lists the model requests (the only way a
    metatomic model sees other atoms), or None for a model that requests none or whose
    ``interaction_range`` is infinite (long-range: not local). interaction_range: how far an
    atom feels others (cutoff x message-passing steps), None when infinite.
    """
    mt = require("metatomic.torch", "metatomic")
    caps = model.capabilities()
    to_angstrom = mt.unit_conversion_factor(caps.length_unit, "angstrom")
    reach = float(caps.interaction_range) * to_angstrom
    reach = reach if math.isfinite(reach) else None
    cutoffs = [float(o.engine_cutoff("angstrom")) for o in model.requested_neighbor_lists()]
    cutoff = max(cutoffs) if cutoffs and reach is not None else None
    return cutoff, reach


class MetatomicEvaluator:
    """Evaluate a chunk of subclusters as one metatomic model call (see module docstring)."""

    def __init__(self, model, device: str, energy_key: str):
        mt = require("metatomic.torch", "metatomic")
        vesin_mt = require("vesin.metatomic", "metatomic")
        import torch

        caps = model.capabilities()
        self.model, self.energy_key = model, energy_key
        self.device, self.dtype = torch.device(device), getattr(torch, caps.dtype)
        self.neighbors = [vesin_mt.NeighborList(o, "angstrom", skin=0.0)
                          for o in model.requested_neighbor_lists()]
        self.options = mt.ModelEvaluationOptions(
            length_unit="angstrom",
            outputs={energy_key: mt.ModelOutput(unit="eV", sample_kind="system")})

    def __call__(self, items, forces: bool) -> list:
        import torch
        from metatomic.torch import System

        positions = [torch.tensor(np.asarray(x), dtype=self.dtype, device=self.device)
                     .requires_grad_(forces) for _, x in items]
        systems = [System(types=torch.tensor(np.asarray(z), dtype=torch.int32,
                                             device=self.device),
                          positions=x, cell=torch.zeros((3, 3), dtype=self.dtype,
                                                        device=self.device),
                          pbc=torch.zeros(3, dtype=torch.bool, device=self.device))
                   for (z, _), x in zip(items, positions)]
        with torch.set_grad_enabled(forces):
            for nl in self.neighbors:
                nl.add_neighbor_list(systems, copy=True)
            block = self.model(systems, self.options, check_consistency=False)[
                self.energy_key].block()
            order = block.samples.column("system").to("cpu", torch.long).numpy()
            values = block.values.reshape(-1)
            if sorted(order.tolist()) != list(range(len(items))):
                raise ValueError(f"the model returned energies for systems {order.tolist()}, "
                                 f"not one for each of the {len(items)} systems given")
            grads = torch.autograd.grad(values.sum(), positions) if forces else None
        energies = np.empty(len(items))
        energies[order] = values.detach().to("cpu", torch.float64).numpy()
        out: list[Any] = []
        for i in range(len(items)):
            g = None if grads is None else grads[i].detach().to("cpu", torch.float64).numpy()
            out.append((energies[i], g))
        return out


def _requested_inputs(model) -> list[str]:
    """Names of the extra per-system/per-atom inputs (charges, spins, ...) the model needs."""
    try:
        return list(model.requested_inputs(use_new_names=True).keys())
    except (TypeError, RuntimeError):  # an older metatomic: no use_new_names
        return list(model.requested_inputs().keys())


def from_metatomic(model, *, cutoff: float | None | str = "auto", device: str | None = None,
                   variant: str | None = None, batch: int = 1024,
                   cache: bool | str | Path = True, progress: bool | None = None,
                   on_error: str = "raise", extensions_directory: str | Path | None = None,
                   tag: str | None = None) -> ForeignPotential:
    """A metatomic model (an ``mtt export``-ed ``model.pt``, or a loaded ``AtomisticModel``)
    as an engine potential: energies (eV) and, on request, forces of every subcluster.

    Args:
      model: path of the exported model, or the model itself.
      cutoff: ``"auto"``: :func:`declared_ranges` (the largest requested neighbour-list
        cutoff; None for a long-range model, which refuses connected mode); or a number (Å)
        you vouch for, or None.
      device: torch device (default: the first the model supports that this machine has).
      variant: the energy variant (``energy/VARIANT``) of a multi-head model, else default.
      batch: subclusters per model call (sorted by size, so a call holds one or two sizes).
      cache, progress, on_error, tag: as for :func:`jbo.adapters.from_ase`.
    Subclusters are evaluated in the model's dtype (``capabilities().dtype``: float64 for
    metatrain models trained with ``base_precision: 64``); ``pot.dtype`` says which.
    """
    mt = require("metatomic.torch", "metatomic")
    model, digest = _load(model, extensions_directory)
    caps = model.capabilities()
    try:
        energy_key = mt.pick_output("energy", caps.outputs, variant)
    except Exception as exc:  # noqa: BLE001 - metatomic raises RuntimeError/ValueError here
        raise ValueError(f"this metatomic model has no usable energy output "
                         f"(outputs: {sorted(caps.outputs)}): {exc}") from exc
    inputs = _requested_inputs(model)
    if inputs:
        raise ValueError(f"this metatomic model requests extra inputs {inputs} (charges, "
                         "spins, ...), which isolated subclusters do not define; use a model "
                         "that needs positions and elements only")
    device = mt.pick_device(caps.supported_devices, device)
    model = model.to(device=device)
    declared, reach = declared_ranges(model)
    cutoff = declared if cutoff == "auto" else cutoff
    return ForeignPotential(
        MetatomicEvaluator(model, device, energy_key), kind="metatomic", model=model,
        dtype=caps.dtype, species=caps.atomic_types, cutoff=cutoff, receptive_field=reach,
        tag=tag or f"metatomic:{digest}:{energy_key}:{caps.dtype}", cache=cache, batch=batch,
        progress=progress, on_error=on_error)
