"""Reference data: random H clusters, PySCF labels in an ase.db, and their many-body expansion.

Modules (imported on demand; PySCF is only needed for labelling):

* :mod:`jbo.data.clusters`: reproducible random H_n clusters in density regimes, subclusters.
* :mod:`jbo.data.reference`: ``energy(atoms, method="fci", basis="sto-3g") -> eV`` and
  ``compute`` (energy, spin state, forces); size-consistent, spin ground state.
* :mod:`jbo.data.store`: the ase.db schema of docs/CONTRACTS.md, resumable bookkeeping.
* :mod:`jbo.data.label`: parallel, resumable labelling with dask.distributed.
* :mod:`jbo.data.mbe`: the MBE of one parent's reference energies (a view of
  :func:`jbo.analysis.reference_spectra`).
* :mod:`jbo.data.cli`: ``python -m jbo.data {generate,label,mbe,summary}``; ``main(argv)``.
"""

from __future__ import annotations

from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The reference-data CLI (see :mod:`jbo.data.cli`)."""
    from jbo.data.cli import main as _main

    return _main(argv)
