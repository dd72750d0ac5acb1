"""Models of other ecosystems as engine potentials, and one loader that tells files apart.

    from jbo.foreign import load_potential
    pot = load_potential("model.pt")     # a .jbo file, a metatomic export or a MACE model
    r = body_orders(pot, atoms)

* :func:`jbo.foreign.metatomic.from_metatomic`: metatomic models (``mtt export`` of
  metatrain's PET, SOAP-BPNN, ...); ``pip install 'jbo[metatrain]'``.
* :func:`jbo.foreign.mace.from_mace`: mace-torch ``*.model`` files; ``pip install 'jbo[mace]'``.

Both are :class:`jbo.host.HostPotential` s (cache, batching by size, failure policy) whose
cutoff, species and dtype come from the model's own metadata.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

__all__ = ["load_potential", "identify", "from_metatomic", "from_mace"]

_PICKLE = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def __getattr__(name: str):
    if name == "from_metatomic":
        from jbo.foreign.metatomic import from_metatomic

        return from_metatomic
    if name == "from_mace":
        from jbo.foreign.mace import from_mace

        return from_mace
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _pickle_globals(data: bytes) -> set[str]:
    """``module.name`` of the classes the pickles at the start of ``data`` refer to, read
    without unpickling (a legacy ``torch.save`` file is several pickles in a row)."""
    found: set[str] = set()
    stream = io.BytesIO(data)
    for _ in range(6):
        strings: list[str] = []
        start = stream.tell()
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    found.add(arg.replace(" ", "."))
                elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                    strings.append(arg)
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.add(f"{strings[-2]}.{strings[-1]}")
        except Exception:  # noqa: BLE001 - raw storage bytes or a truncated pickle: done
            break
        if stream.tell() in (start, len(data)):
            break
    return found


def identify(path: str | Path) -> str:
    """What a model file is, from its content (not its name): ``"jbo"`` (written by
    :func:`jbo.models.save`), ``"metatomic"`` (a TorchScript ``AtomisticModel`` export) or
    ``"mace"`` (``torch.save`` of a mace-torch MACE module). Raises ValueError naming what the
    file is instead (a metatrain checkpoint, another torch file, not a model)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:1] and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)) and \
            b"jbo-model" in head:
        return "jbo"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if any("/extra/metatomic-version" in n for n in names):
                return "metatomic"
            if any("/code/" in n for n in names):
                raise ValueError(f"{path} is a TorchScript file but not a metatomic model (no "
                                 "metatomic metadata): export it with metatomic "
                                 "(AtomisticModel.save, or `mtt export`)")
            pkl = next((n for n in names if n.endswith("/data.pkl")), None)
            if pkl is None:
                raise ValueError(f"{path} is a zip archive, not a model file")
            classes = _pickle_globals(z.read(pkl))
    elif head.startswith(_PICKLE):
        classes = _pickle_globals(head if len(head) < 1 << 16 else path.read_bytes())
    else:
        raise ValueError(_not_a_model(path, "its content is none of these formats"))
    return _torch_kind(path, classes)


def _torch_kind(path: Path, classes: set[str]) -> str:
    if any(c.startswith("mace.modules.") for c in classes):
        return "mace"
    if any(c.startswith("metatrain.") for c in classes) or "model_ckpt" in str(classes):
        raise ValueError(f"{path} is a metatrain checkpoint, not an exported model: run "
                         f"`mtt export {path.name}` and pass the model.pt it writes")
    shown = sorted(c for c in classes if "Storage" not in c and not c.startswith(
        ("torch._", "collections.", "builtins.", "__builtin__.", "_codecs.")))[:4]
    raise ValueError(_not_a_model(path, "it is a torch.save file" + (
        f" of {', '.join(shown)}" if shown else " without a model class")))


def _not_a_model(path: Path, what: str) -> str:
    return (f"{path} is not a model jbo can load ({what}): expected a .jbo file "
            "(jbo.models.save / jbo train), a metatomic export (`mtt export`, "
            "AtomisticModel.save) or a mace-torch model file (torch.save of a MACE module)")


def load_potential(path: str | Path, **options):
    """Load any model file jbo decomposes, recognised by content (see :func:`identify`).

    Returns: for a ``.jbo`` file, :func:`jbo.models.load`'s ``Model`` (a JAX model,
    ``options`` not accepted); for a metatomic export, :func:`from_metatomic` (options:
    cutoff, device, variant, batch, cache, progress, on_error, tag); for a MACE file,
    :func:`from_mace` (options: cutoff, device, dtype, head, batch, cache, progress,
    on_error, tag). Raises ValueError naming what the file is not, ImportError naming the
    extra to install.
    """
    kind = identify(path)
    if kind == "jbo":
        if options:
            raise ValueError(f"{path} is a jbo model; options {sorted(options)} apply to "
                             "metatomic and MACE models only")
        from jbo import models

        return models.load(path)
    if kind == "metatomic":
        from jbo.foreign.metatomic import from_metatomic

        return from_metatomic(path, **options)
    from jbo.foreign.mace import from_mace

    return from_mace(path, **options)
