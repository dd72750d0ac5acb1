"""The first call: few programs (size buckets, the one-instance layout first), one host-side
check step on every path, an honest memory estimate, and the persistent compilation cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from math import comb
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jbo import analysis, checks, lattice, potentials, tiers
from jbo.data.records import Record
from jbo.decompose import _exhaustive, body_orders
from jbo.memory import exhaustive_bytes
from jbo.potential import Potential

ROOT = Path(__file__).resolve().parents[1]


def _cluster(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    while True:
        pos = rng.uniform(0, 1.1 * n ** (1 / 3), size=(n, 3))
        if np.min(np.linalg.norm(pos[:, None] - pos[None], axis=-1) + 9 * np.eye(n)) > 0.7:
            return pos


def _many_body():
    return potentials.combine(potentials.morse(cutoff=2.5), potentials.embedded_atom(cutoff=2.5),
                              potentials.axilrod_teller(0.3))


# ------------------------------------------------------------------ few programs, same numbers
@pytest.mark.parametrize("n", [1, 2, 5, 12, 20])
def test_size_buckets_cover_every_size_once_with_less_padded_work(n):
    widths = lattice.size_buckets(n)
    assert widths[-1] == n and list(widths) == sorted(set(widths))
    assert len(widths) == min(lattice.N_BUCKETS, n)
    padded = sum(comb(n, k) * min(w for w in widths if w >= k) ** 2 for k in range(1, n + 1))
    assert padded <= (2**n - 1) * n**2  # never more than one N-wide bucket
    if n >= 5:
        assert padded < 0.6 * (2**n - 1) * n**2


def test_layouts_and_auto_give_the_same_decomposition():
    """compact (3 size buckets, padded slots parked), masks (one instance) and auto agree to
    round-off on a batch with a padding atom, forces and terms included."""
    fn = _many_body()
    pos = np.stack([_cluster(7, 1), _cluster(7, 2)])
    am = np.ones((2, 7), bool)
    am[1, 6] = False
    out = {lay: body_orders(fn, pos, atom_mask=am, forces=True, layout=lay)
           for lay in ("compact", "masks", "auto")}
    for lay in ("masks", "auto"):
        for f in ("per_order", "forces", "terms", "total"):
            np.testing.assert_allclose(getattr(out[lay], f), getattr(out["compact"], f),
                                       rtol=0, atol=1e-10)
    # and the truth: ε of subsets holding the padding atom vanish; orders sum to the total
    assert np.all(np.asarray(out["auto"].terms)[1, 1 << 6:] == 0)
    np.testing.assert_allclose(np.asarray(out["auto"].per_order).sum(-1), out["auto"].total,
                               rtol=0, atol=1e-10)


def test_auto_runs_one_instance_first_and_upgrades_when_running_paid_for_compiling():
    tiers.reset()
    key = ("arch", 12)
    assert tiers.choose(key) == "masks"
    tiers.record(key, "masks", 10.0)  # first call: ~9.5 s compile + 0.5 s run
    calls = 0
    while tiers.choose(key) == "masks":
        tiers.record(key, "masks", 0.5)
        calls += 1
    # upgraded once the warm calls spent N_BUCKETS x the one-instance compile (9.5 s)
    assert calls == int(np.ceil(lattice.N_BUCKETS * 9.5 / 0.5))
    assert tiers.choose(key) == "compact"
    tiers.reset()


def test_auto_first_call_compiles_the_one_instance_program():
    tiers.reset()
    fn = potentials.morse(depth=2.5, cutoff=3.1)  # an architecture of its own
    pos = _cluster(6, 3)
    before = _exhaustive._cache_size()
    body_orders(fn, pos)
    assert _exhaustive._cache_size() == before + 1
    masks = body_orders(fn, pos, layout="masks")  # the program auto compiled: no new one
    assert _exhaustive._cache_size() == before + 1
    np.testing.assert_allclose(masks.per_order, body_orders(fn, pos).per_order, atol=1e-12)
    tiers.reset()


# ------------------------------------------------------------------ the checks on every path
def _ignores_mask(params, positions, species, mask):
    """-13.6 eV per atom *present in the array*: the mask is ignored (breaks the contract)."""
    return params * positions.shape[0] + 0.0 * jnp.sum(positions)


def _records(pos_list):
    return [Record(p, np.ones(len(p), np.int32), 0.0, None, f"c{i}", (1 << len(p)) - 1, len(p),
                   "train", "low") for i, p in enumerate(pos_list)]


@pytest.mark.parametrize("orders", [True, False])
def test_decompose_records_refuses_what_body_orders_refuses(orders):
    """A Potential that ignores its mask, and NaN positions: refused by body_orders and, on the
    study path, by decompose_records (which used to jit around the engine and skip both)."""
    leaky = Potential(_ignores_mask, -13.6)
    pos = _cluster(4, 5)
    with pytest.raises(checks.ContractError, match="masking contract"):
        body_orders(leaky, pos)
    # a fresh architecture for the records path (the check runs once per architecture)
    leaky2 = Potential(_ignores_mask, -13.6, cutoff=9.0)
    with pytest.raises(checks.ContractError, match="masking contract"):
        analysis.decompose_records(leaky2, _records([pos, _cluster(3, 6)]), orders=orders)
    bad = pos.copy()
    bad[2, 1] = np.nan
    honest = potentials.morse(cutoff=2.5)
    with pytest.raises(ValueError, match="not finite"):
        body_orders(honest, bad)
    with pytest.raises(ValueError, match="not finite"):
        analysis.decompose_records(honest, _records([bad]), orders=orders)


# ------------------------------------------------------------------ the memory estimate
def test_exhaustive_n25_is_refused_before_any_big_allocation(monkeypatch):
    monkeypatch.delenv("JBO_MEMORY_LIMIT", raising=False)
    tracemalloc.start()
    with pytest.raises(MemoryError, match=r"N=25 atoms .* over the 4.0 GiB limit"):
        grid = 1.5 * np.stack(np.meshgrid(np.arange(5), np.arange(5), [0.0]), -1).reshape(-1, 3)
        body_orders(potentials.morse(cutoff=2.5), grid)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 2**20  # refused before the lattice, its index table or order table


@pytest.mark.parametrize("layout", ["masks", "compact"])
@pytest.mark.parametrize("forces", [False, True])
def test_exhaustive_estimate_bounds_the_measured_peak(layout, forces):
    """Host (tracemalloc over a whole first call: tracing, tables, result copies) plus device
    (XLA's memory analysis of the program: arguments, outputs, temporaries) stay under the
    estimate that the memory check compares with the limit."""
    n, b = 14, 2
    pos = np.stack([_cluster(n, 8), _cluster(n, 9)])
    fn = potentials.combine(potentials.morse(cutoff=2.0), potentials.embedded_atom(cutoff=2.0))
    tracemalloc.start()
    body_orders(fn, pos, forces=forces, layout=layout, check_contract=False)
    _, host = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    am = jnp.ones((b, n), bool)
    compiled = _exhaustive.lower(fn, jnp.asarray(pos), jnp.ones((b, n), jnp.int32), am, forces,
                                 True, 256, layout).compile()
    mem = compiled.memory_analysis()
    device = mem.temp_size_in_bytes + mem.output_size_in_bytes + mem.argument_size_in_bytes
    assert host + device <= exhaustive_bytes(b, n, forces, True, layout)
    if forces:  # and the bound is not vacuous: the arrays it counts are most of it
        assert device > 0.15 * exhaustive_bytes(b, n, forces, True, layout)


# ------------------------------------------------------------------ the persistent cache
_SCRIPT = textwrap.dedent("""
    import json, jax, numpy as np
    from jbo import compilation_cache, models
    from jbo.decompose import body_orders
    path = compilation_cache.enable()
    module = models.create("soap_bpnn", max_radial=2, max_angular=1, hidden=(4,))
    pos = np.array([[0, 0, 0], [0.9, 0, 0], [0, 1.0, 0.2], [0.8, 0.9, 0.7]], float)
    params = module.init(jax.random.PRNGKey(0), pos, np.ones(4, np.int32), np.ones(4, bool))
    r = body_orders(models.energy_fn(module, params), pos)
    print(json.dumps({"dir": str(path), "per_order": np.asarray(r.per_order).tolist(),
                      **compilation_cache.counts()}))
""")


def test_a_second_process_loads_its_programs_from_the_persistent_cache(tmp_path):
    env = {**os.environ, "JBO_CACHE_DIR": str(tmp_path / "xla"), "PYTHONPATH": str(ROOT)}

    def run() -> dict:
        out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=ROOT, timeout=600,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["dir"] == str(tmp_path / "xla")
    assert first["misses"] > 0 and first["hits"] == 0  # empty cache: compiled and stored
    assert any((tmp_path / "xla").iterdir())
    assert second["hits"] > 0  # the engine's programs came from disk
    # (no comparison of miss counts: a small program that compiles in more than the cache's
    # 0.2 s threshold only on a loaded machine is a miss in one process and not the other)
    np.testing.assert_allclose(second["per_order"], first["per_order"], rtol=0, atol=1e-12)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from jbo import compilation_cache

    monkeypatch.setenv("JBO_CACHE_DIR", "off")
    assert compilation_cache.cache_dir() is None and compilation_cache.enable() is None
    monkeypatch.setenv("JBO_CACHE_DIR", str(tmp_path))
    assert compilation_cache.cache_dir() == tmp_path
    monkeypatch.delenv("JBO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache.cache_dir() == tmp_path / "jbo" / "xla"


# ------------------------------------------------------------------ tracing: once per process
def test_spherical_harmonics_are_e3nns_and_traced_once_for_every_shape(monkeypatch):
    """The zoo's spherical harmonics are e3nn's own function, jitted for one vector and
    vmapped: the same values and gradients as calling e3nn on each shape
    (to round-off), and e3nn's sympy recursion runs once, not once per new shape."""
    import e3nn_jax as e3nn
    import jax

    from jbo.models import layers

    calls = []
    real = e3nn.spherical_harmonics
    monkeypatch.setattr(e3nn, "spherical_harmonics", lambda *a, **k: calls.append(1) or real(
        *a, **k))
    layers._sh_of_one_vector.cache_clear()
    rng = np.random.default_rng(0)
    for shape in [(5, 7, 3), (2, 3), (4, 1, 2, 3)]:
        x = jnp.asarray(rng.normal(size=shape))

        def ref(v):
            return real(layers.sh_irreps(6), v, normalize=True, normalization="component").array

        def ours(v):
            return layers.spherical_harmonics(v, 6).array

        assert ours(x).shape == ref(x).shape == shape[:-1] + (49,)
        np.testing.assert_allclose(ours(x), ref(x), rtol=1e-13, atol=1e-13)
        g_ref = jax.grad(lambda v: jnp.sum(ref(v) ** 3))(x)
        g_ours = jax.grad(lambda v: jnp.sum(ours(v) ** 3))(x)
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-12, atol=1e-12)
    assert len(calls) == 1  # e3nn (and its sympy recursion) traced once for three shapes
    layers._sh_of_one_vector.cache_clear()  # later tests trace the real function
