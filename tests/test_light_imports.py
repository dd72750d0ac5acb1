"""Light imports: ``import jbo`` and the engine/zoo/potentials packages load no heavy optional
machinery (PySCF, dask, jax-md, optax, orbax, torch, ...) until a function that needs it runs;
the zoo registry resolves an architecture's module on first use only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jbo
from jbo import models

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pyscf", "dask", "distributed", "jax_md", "optax", "orbax", "torch", "matplotlib",
         "tensorboardX", "e3nn_jax", "jraph", "ase", "mlip")

PROBE = textwrap.dedent("""
    import json, sys
    heavy = set({heavy!r})
    def loaded():
        return sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    def zoo():
        return sorted(m for m in sys.modules if m.startswith("jbo.models."))
    out = {{}}
    import jbo, jbo.decompose, jbo.models, jbo.potentials, jbo.testing
    out["import"] = loaded()
    from jbo import models
    names = models.available(), models.installed()
    out["available"] = zoo()
    models.create("soap_bpnn")
    out["create"] = zoo()
    out["x64"] = bool(__import__("jax").config.jax_enable_x64)
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def probe() -> dict:
    """What a fresh interpreter has imported after each stage of :data:`PROBE`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT")[-1])


def test_importing_jbo_loads_no_heavy_package(probe):
    assert probe["import"] == [], (
        f"import jbo, jbo.decompose, jbo.models, jbo.potentials loaded {probe['import']}; "
        "import them inside the function that needs them")


def test_zoo_registry_imports_an_architecture_on_first_use_only(probe):
    core = ["jbo.models.io", "jbo.models.model", "jbo.models.registry"]  # no architecture
    assert probe["available"] == core  # available()/installed(): names only
    assert probe["create"] == sorted(core + ["jbo.models.base", "jbo.models.layers",
                                             "jbo.models.soap_bpnn"])  # no jax-md, no PET


def test_float64_is_enabled_by_importing_jbo(probe):
    """The documented policy (jbo/__init__.py): one global switch at import."""
    assert probe["x64"] is True
    assert "x64" in jbo.__doc__ and "float32" in jbo.__doc__


def test_lazy_registry_resolves_every_model_to_its_class():
    for name in models.installed():
        cls = models._cls(name)
        assert issubclass(cls, models.ZooModel) and getattr(models, cls.__name__) is cls
    assert models.available() == sorted(models._REGISTRY)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        models.Nope  # noqa: B018
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        models.create("nope")
