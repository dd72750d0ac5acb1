"""What the foreign-model adapters share: the potential class, digests, lazy imports."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from types import ModuleType

import numpy as np

from jbo.host import HostPotential

#: pip extra that brings each ecosystem (``pip install 'jbo[NAME]'``)
EXTRAS = {"metatomic": "metatrain", "mace": "mace"}


def require(module: str, ecosystem: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming the jbo extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS[ecosystem]
        raise ImportError(f"{ecosystem} models need the package {module.split('.')[0]!r}, "
                          f"which is not installed: pip install 'jbo[{extra}]'") from exc


def file_digest(path: str | Path) -> str:
    """blake2b (8 bytes, hex) of a file's bytes: names a model file in cache keys."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_digest(module) -> str:
    """blake2b (8 bytes, hex) of a torch module's parameters and buffers, bit for bit."""
    import torch

    h = hashlib.blake2b(digest_size=8)
    for name, value in module.state_dict().items():
        h.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


class ForeignPotential(HostPotential):
    """A :class:`~jbo.host.HostPotential` for a model of another ecosystem.

    Adds what the model's own metadata declares: ``kind`` ("metatomic" or "mace"),
    ``dtype`` (the torch dtype it is evaluated in), ``species`` (the elements it was trained
    on; others are refused before anything is evaluated), ``receptive_field`` (Å) and
    ``model`` (the loaded torch module).
    """

    def __init__(self, evaluator, *, kind: str, model, dtype: str, species, cutoff,
                 receptive_field, tag: str, **kw):
        super().__init__(evaluator, cutoff=cutoff, tag=tag, sort_by_size=True, **kw)
        self.kind, self.model, self.dtype = kind, model, dtype
        self.species = tuple(int(z) for z in species)
        self.receptive_field = None if receptive_field is None else float(receptive_field)

    def __repr__(self) -> str:
        return (f"ForeignPotential({self.kind}, {self.tag}, cutoff={self.cutoff}, "
                f"dtype={self.dtype})")

    def validate(self, positions, species, mask) -> None:
        present = np.asarray(species)[np.asarray(mask, bool)]
        unknown = sorted(set(present.ravel().tolist()) - set(self.species))
        if unknown:
            raise ValueError(f"atomic numbers {unknown} are not among the elements this "
                             f"{self.kind} model was trained on {self.species}; decompose "
                             "structures of those elements only (or use another model)")
        super().validate(positions, species, mask)
