"""The run-time masking-contract check is skipped only for parts this suite proves.

``jbo.potential.contract_tested`` marks apply functions and zoo classes; the engine then skips
its (compile-heavy) check for potentials built only of marked parts. Here every marked function
is shown to keep the contract exactly (masked == extracted alone, several subsets), the zoo
classes are covered by tests/models/test_models.py (``test_mask_equals_extracted_subcluster`` runs on
every registry model), and a mark nobody covers fails :func:`test_every_mark_is_covered`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jbo  # noqa: F401  (float64)
from jbo import checks, models, potential, potentials
from jbo.decompose import body_orders
from jbo.models import model as model_type
from jbo.potential import as_potential, is_contract_tested, scaled


def _analytic():
    return {
        potentials._morse: potentials.morse(cutoff=4.0),
        potentials._lennard_jones: potentials.lennard_jones(sigma=0.9, cutoff=4.0),
        potentials._axilrod_teller: potentials.axilrod_teller(c9=2.0, cutoff=4.0),
        potentials._embedded_atom: potentials.embedded_atom(cutoff=3.0),
    }


def _trained():
    """A zoo model with a composition baseline and a scale (a :class:`jbo.models.Model`)."""
    module = models.create("soap_bpnn", max_radial=2, max_angular=1, hidden=(4,))
    return models.Model.of(module, models.init(module, 0), {1: -13.6}, 0.5).potential


def _wrappers():
    m, at = potentials.morse(cutoff=4.0), potentials.axilrod_teller(c9=2.0)
    return {
        model_type._model_energy: _trained(),
        potential._scaled: scaled(at, 0.5),
        potential._sum: potential.combine(m, at),
    }


def _cluster(n: int = 6, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=1.1, size=(n, 3)), np.ones(n, np.int32)


CASES = {**_analytic(), **_wrappers()}


@pytest.mark.parametrize("fn", list(CASES), ids=lambda f: f.__name__)
def test_marked_functions_keep_the_contract_exactly(fn):
    pot = CASES[fn]
    assert is_contract_tested(pot.apply)
    x, z = _cluster()
    for keep in [(0, 2, 5), (1, 3), (0, 1, 2, 4)]:
        m = np.zeros(len(x), bool)
        m[list(keep)] = True
        sub = np.array(keep)
        masked = float(pot.energy(x, z, m))
        alone = float(pot.energy(x[sub], z[sub], np.ones(len(sub), bool)))
        assert abs(masked - alone) <= 1e-12 * (1 + abs(alone)), (fn.__name__, keep)


def test_every_mark_is_covered():
    covered = set(CASES) | {potential._module_energy}
    classes = {models._cls(name) for name in models.installed()}
    marked = potential._CONTRACT_TESTED
    assert {m for m in marked if not isinstance(m, type)} == covered
    # every zoo model is marked, and no other class: test_models covers exactly the registry
    assert {m for m in marked if isinstance(m, type)} == classes


def test_zoo_models_and_their_wrappers_are_trusted_but_subclasses_and_user_code_are_not():
    module = models.create("soap_bpnn", max_radial=2, max_angular=1, hidden=(4,))
    params = models.init(module, 0)
    zoo = models.energy_fn(module, params)
    assert is_contract_tested(zoo.apply)
    assert is_contract_tested(scaled(potential.combine(zoo, _trained()), 2.0).apply)

    class Mine(type(module)):  # a user's subclass may change what masks do
        pass

    assert not is_contract_tested(models.energy_fn(Mine(max_radial=2, max_angular=1, hidden=(4,)),
                                                   params).apply)
    user = as_potential(lambda p, z, m: (p[m] ** 2).sum())
    assert not is_contract_tested(user.apply)
    assert not is_contract_tested(potential.combine(zoo, user).apply)


def test_a_user_function_that_breaks_the_contract_is_still_refused():
    """The check still runs for code jbo does not know: a sum over all atoms, masked or not."""
    x, _ = _cluster(5)

    def leaky(p, z, m):
        r = jnp.sqrt(((p[:, None] - p[None]) ** 2).sum(-1) + jnp.eye(p.shape[0]))
        return jnp.where(m, (1.0 / r).sum(1), 0.0).sum()  # neighbours of masked atoms count

    with pytest.raises(checks.ContractError, match="masking contract"):
        body_orders(leaky, x)
