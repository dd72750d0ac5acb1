"""Body-order spectra of sets of clusters, model or reference: one result type, one metrics family.

    from jbo import analysis
    ref = analysis.reference_spectra(parents)              # complete parents: stored E(S) -> E^(k)
    model = analysis.decompose_records(trained, records)   # the engine on whole clusters
    analysis.order_mae(model, ref.take(model.clusters), k_max=4)   # meV/atom

* :mod:`jbo.data.spectra` (re-exported): :class:`Spectra` (``orders[C, K]`` eV, NaN beyond n),
  and :class:`Spectrum`, the view of one cluster.
* :mod:`jbo.analysis.sources`: :func:`decompose_records` (a model, by
  :func:`jbo.decompose.body_orders`).
* :mod:`jbo.data.mbe` (re-exported): :func:`reference_spectra` (stored energies, by the engine's
  assembler :func:`jbo.assembly.assemble_lattice`), :func:`lattice_spectra`,
  :func:`subset_energies` (the one records -> energies-by-subset adapter).
* :mod:`jbo.analysis.metrics`: spectra, high-order content and errors, meV per atom.
* :mod:`jbo.analysis.invariance`: :func:`rotational_error`, a model's energy spread over random
  orientations (meV/atom): round-off for invariant models, learned for PET
  (:func:`is_rotation_invariant`; :func:`learned_rotational_error` measures only the latter).
"""

from jbo.analysis.invariance import (is_rotation_invariant, learned_rotational_error,
                                     rotational_error)
from jbo.analysis.metrics import (high_order, high_order_weight, order_mae, spectrum, summarize,
                                  total_errors, total_mae)
from jbo.analysis.sources import decompose_records
from jbo.data.mbe import lattice_spectra, reference_spectra, subset_energies
from jbo.data.spectra import Spectra, Spectrum

__all__ = ["Spectra", "Spectrum", "decompose_records", "reference_spectra", "lattice_spectra",
           "subset_energies", "spectrum", "high_order", "summarize", "high_order_weight",
           "order_mae", "total_errors", "total_mae", "rotational_error",
           "learned_rotational_error", "is_rotation_invariant"]
