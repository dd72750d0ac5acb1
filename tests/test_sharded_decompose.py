"""Data-parallel decomposition over 8 fake CPU devices equals the single-device result."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, numpy as np
    import jbo
    from jbo import potentials
    from jbo.decompose import body_orders
    assert len(jax.devices()) == 8
    mesh = jax.make_mesh((8,), ("batch",))
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 3, (5, 5, 3))
    mask = np.ones((5, 5), bool); mask[1, 3:] = False
    fn = potentials.combine(potentials.morse(cutoff=2.5), potentials.embedded_atom(cutoff=2.5))
    for kw in [{}, {"max_order": 3}]:
        one = body_orders(fn, pos, atom_mask=mask, forces=True, **kw)
        par = body_orders(fn, pos, atom_mask=mask, forces=True, mesh=mesh, **kw)
        for a, b in [(one.per_order, par.per_order), (one.forces, par.forces), (one.terms, par.terms)]:
            assert a.shape == b.shape, (a.shape, b.shape)
            np.testing.assert_allclose(a, b, atol=1e-10)
    print("OK")
    """
)


def test_sharded_decomposition_equals_single_device():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout
