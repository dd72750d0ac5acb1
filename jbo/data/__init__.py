"""Reference data: random H clusters, PySCF labels in an ase.db, and their many-body expansion.

Modules (imported on demand; PySCF is only needed for labelling):

* :mod:`jbo.data.clusters`: reproducible random H_n clusters in density regimes, subclusters.
* :mod:`jbo.data.reference`: ``energy(atoms, method="fci", basis="sto-3g") -> eV`` and
  ``compute`` (energy, spin state, forces); size-consistent, spin ground state.
* :mod:`jbo.data.store`: the ase.db schema of docs/CONTRACTS.md, resumable bookkeeping.
* :mod:`jbo.data.label`: parallel, resumable labelling with dask.distributed.
* :mod:`jbo.data.mbe`: the MBE of stored reference energies (``reference_spectra``, one
  parent's ``reference_mbe``), as :class:`jbo.data.spectra.Spectra`.
* :mod:`jbo.data.batch`: records padded into one :class:`jbo.data.batch.Batch` of arrays.
* :mod:`jbo.data.records`: the one reader of a dataset into records, the compact format.
* :mod:`jbo.data.cli`: the ``jbo data {generate,label,pack,validate,export,mbe,summary,compact}``
  subcommands (also ``python -m jbo.data ...``).
"""
