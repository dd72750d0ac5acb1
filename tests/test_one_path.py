"""One engine path: body_orders, decompose_records and `jbo decompose` pass through the same
check step (jbo.decompose.prepare -> jbo.request.checked), so each refuses what the others
refuse, with the same error. The traced entry (prepare outside jit, evaluate inside) gives
body_orders' numbers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jbo import analysis, potentials
from jbo.data.records import Record
from jbo.decompose import body_orders, evaluate, prepare
from jbo.potential import Potential
from jbo.testing import random_cluster


def _record(pos, species=None, i: int = 0) -> Record:
    n = len(pos)
    species = np.ones(n, np.int32) if species is None else species
    return Record(pos, species, 0.0, None, f"c{i}", (1 << n) - 1, n, "train", "high")


def _ignores_mask(params, positions, species, mask):
    """params eV per atom *in the array*: masked atoms are not absent (breaks the contract)."""
    return params * positions.shape[0] + 0.0 * jnp.sum(positions)


def _nan_beyond_two(params, positions, species, mask):
    """-params eV per atom, NaN on subsets of three atoms or more (0.0 * positions: traced)."""
    k = mask.sum()
    return jnp.where(k >= 3, jnp.nan, -params * k) + 0.0 * jnp.sum(positions)


def _error(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the class and message are what is compared
        return type(exc), str(exc)
    return None


POS = random_cluster(5, "high", seed=3)
MORSE = potentials.morse(cutoff=2.5)


def _case(name):
    """(potential, positions, species, options) of one kind of bad input."""
    pos, spec, opts, pot = POS.copy(), np.ones(5, np.int32), {}, MORSE
    if name == "overlapping atoms":
        pos[3] = pos[1] + 1e-5
    elif name == "NaN position":
        pos[2, 0] = np.nan
    elif name == "float species":
        spec = np.ones(5)
    elif name == "species of the wrong shape":
        spec = np.ones(6, np.int32)
    elif name == "species 2**40":
        spec = np.full(5, 2**40, np.int64)
    elif name == "integer positions":
        pos = np.arange(15).reshape(5, 3) * 2
    elif name == "positions [N, 2]":
        pos = pos[:, :2]
    elif name == "model leaks masked atoms":
        pot = Potential(_ignores_mask, -13.6, cutoff=4.0)
    elif name == "element unknown to the model":
        pot, spec = dataclasses.replace(MORSE, species=(1,)), np.array([1, 1, 8, 1, 1], np.int32)
    elif name == "max_order 0":
        opts = dict(max_order=0)
    elif name == "max_order 2.5":
        opts = dict(max_order=2.5)
    elif name == "max_order > N":
        opts = dict(max_order=6)
    elif name == "unknown layout":
        opts = dict(layout="fast")
    elif name == "too big for the memory limit":
        opts = dict(memory=1e6)
    elif name == "model gives NaN":
        pot = Potential(_nan_beyond_two, 1.0)
    return pot, pos, spec, opts


CASES = ["overlapping atoms", "NaN position", "float species", "species of the wrong shape",
         "species 2**40", "integer positions", "positions [N, 2]", "model leaks masked atoms",
         "element unknown to the model", "max_order 0", "max_order 2.5", "max_order > N",
         "unknown layout", "too big for the memory limit", "model gives NaN"]


@pytest.mark.parametrize("name", CASES)
def test_decompose_records_refuses_what_body_orders_refuses(name, monkeypatch):
    """Each kind of bad input: the same error class and message from both entry points (and
    from decompose_records in chunks). Float species, integer or [N, 2] positions, species
    2**40 and max_order were converted or ignored by decompose_records before (pad_records
    cast them, orders=False never looked at max_order)."""
    pot, pos, spec, opts = _case(name)
    if "memory" in opts:
        monkeypatch.setenv("JBO_MEMORY_LIMIT", str(opts.pop("memory")))
    want = _error(lambda: body_orders(pot, pos, spec, **opts))
    assert want is not None, f"body_orders accepted {name}"
    for kw in (dict(), dict(chunk=1)):
        got = _error(lambda: analysis.decompose_records(pot, [_record(pos, spec)], **opts, **kw))
        assert got == want, f"{name} {kw}"
    if name not in ("too big for the memory limit", "model gives NaN"):
        # energies only: no subsets to fit or to check, but the input and options are the same
        got = _error(lambda: analysis.decompose_records(pot, [_record(pos, spec)], **opts,
                                                        orders=False))
        assert got == want, f"{name} orders=False"


def test_a_bad_record_is_named_by_its_index_in_every_chunking():
    """The third record overlaps: named "cluster 2" whether decomposed in one call or in
    chunks of one (the checks run once, on all records, before the calls are split)."""
    good = [random_cluster(n, "high", seed=n) for n in (3, 4)]
    bad = POS.copy()
    bad[4] = bad[0]
    records = [_record(p, i=i) for i, p in enumerate(good + [bad])]
    padded = np.zeros((3, 5, 3))
    mask = np.zeros((3, 5), bool)
    for b, p in enumerate(good + [bad]):
        padded[b, :len(p)], mask[b, :len(p)] = p, True
    want = _error(lambda: body_orders(MORSE, padded, atom_mask=mask))
    assert want[0] is ValueError and "(cluster 2)" in want[1]
    for chunk in (None, 1, 2):
        assert _error(lambda: analysis.decompose_records(MORSE, records, chunk=chunk)) == want


@pytest.mark.parametrize("chunk", [0, -1, 1.5])
def test_decompose_records_refuses_a_chunk_that_is_not_a_positive_int(chunk):
    with pytest.raises((TypeError, ValueError), match="chunk must be"):
        analysis.decompose_records(MORSE, [_record(POS)], chunk=chunk)


def test_prepare_outside_jit_evaluate_inside_gives_body_orders_numbers():
    """The documented traced entry: the checks run in prepare on concrete data; evaluate under
    jit and grad gives body_orders' values, and its gradient matches finite differences."""
    req = prepare(MORSE, POS, max_order=2)
    ref = body_orders(MORSE, POS, max_order=2)
    e2 = jax.jit(lambda p: evaluate(req, positions=p).per_order[1])
    np.testing.assert_allclose(e2(POS), ref.per_order[1], rtol=1e-12, atol=1e-14)
    g = jax.grad(e2)(POS)
    h = 1e-5
    step = np.zeros_like(POS)
    step[1, 2] = h
    fd = (float(e2(POS + step)) - float(e2(POS - step))) / (2 * h)
    assert abs(float(g[1, 2]) - fd) < 1e-6 * (1 + abs(fd))
    with pytest.raises(ValueError, match="do not match the request"):
        evaluate(req, positions=POS[:4])
    with pytest.raises(ValueError, match="not another potential"):
        evaluate(req, potentials.axilrod_teller(0.5, cutoff=2.5))


@pytest.mark.parametrize("case", ["overlapping atoms", "max_order > N"])
def test_the_cli_refuses_what_body_orders_refuses(case, tmp_path, capsys):
    """`jbo decompose --calculator emt --structures F`: exit 2 with body_orders' own message."""
    import ase.io
    from ase import Atoms
    from ase.calculators.emt import EMT

    from jbo.cli import main
    from jbo.potentials import from_ase

    pos = 1.8 * POS
    if case == "overlapping atoms":
        pos[3] = pos[1] + 1e-5
    atoms = Atoms("Cu5", positions=pos)
    ase.io.write(tmp_path / "f.extxyz", atoms)
    order = ["--max-order", "6"] if case == "max_order > N" else []
    want = _error(lambda: body_orders(from_ase(EMT()), atoms, max_order=6 if order else None))
    assert want is not None
    assert main(["decompose", "--calculator", "emt", "--structures",
                 str(tmp_path / "f.extxyz"), *order]) == 2
    assert capsys.readouterr().err.strip() == "jbo decompose: " + " ".join(want[1].split())
