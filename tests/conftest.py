"""Shared fixtures: the toy reference db, and one 8-fake-device subprocess for every sharding test.

The helpers they build on (ToyEAM, the analytic reference, ``toy_config``) are in ``tests/toy.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# entry points (CLI, calculator) turn on the persistent compilation cache: not in tests, unless
# a test asks for it (tests/test_first_call.py points it at a temporary directory)
os.environ.setdefault("JBO_CACHE_DIR", "off")

from jbo.models import OPTIONAL as OPTIONAL_MODELS  # model -> optional package
from tests.toy import toy_config, write_toy_db

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Skip tests parametrized with a zoo model whose optional package is not installed."""
    missing = {m for m, pkg in OPTIONAL_MODELS.items() if importlib.util.find_spec(pkg) is None}
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        hit = missing.intersection(v for v in params.values() if isinstance(v, str))
        if hit:
            item.add_marker(pytest.mark.skip(reason=f"{hit.pop()} needs an optional package"))


@pytest.fixture(scope="session")
def toy_db(tmp_path_factory) -> Path:
    """The default toy db (6 training parents with every subcluster, 2 held-out clusters)."""
    return write_toy_db(tmp_path_factory.mktemp("db") / "toy.db")


# Everything that needs several devices runs in ONE interpreter started with 8 fake CPU
# devices (XLA_FLAGS must be set before jax is imported); each part returns plain JSON.
EIGHT_DEVICES = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    import jbo
    assert jax.device_count() == 8, jax.devices()
    out = {{}}

    # data-parallel training of the toy run (tests/train/test_train.py)
    from jbo.train import TrainConfig, train
    from tests.toy import ToyEAM
    r = train(TrainConfig.from_dict(json.loads({cfg!r})), module=ToyEAM())
    out["train"] = dict(steps=[s["loss"] for s in r.steps], val=[h["val_mae"] for h in r.history])

    # data-parallel decomposition, one device vs a mesh (tests/test_sharded_decompose.py)
    from jbo import potentials
    from jbo.decompose import body_orders
    mesh = jax.make_mesh((8,), ("batch",))
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 3, (5, 5, 3))
    mask = np.ones((5, 5), bool); mask[1, 3:] = False
    fn = potentials.combine(potentials.morse(cutoff=2.5), potentials.embedded_atom(cutoff=2.5))
    out["decompose"] = []
    for kw in [{{}}, {{"max_order": 3}}]:
        one = body_orders(fn, pos, atom_mask=mask, forces=True, **kw)
        par = body_orders(fn, pos, atom_mask=mask, forces=True, mesh=mesh, **kw)
        out["decompose"].append({{name: [np.asarray(getattr(res, name)).tolist()
                                         for res in (one, par)]
                                 for name in ("per_order", "forces", "terms")}})
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="session")
def eight_devices(toy_db) -> dict:
    """The JSON results of :data:`EIGHT_DEVICES`: ``train`` (the sharded toy run's per-step
    losses and validation MAEs) and ``decompose`` (per_order/forces/terms, one device vs 8)."""
    cfg = toy_config(toy_db, shard=True).to_json()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", EIGHT_DEVICES.format(root=str(ROOT), cfg=cfg)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT")[-1])
