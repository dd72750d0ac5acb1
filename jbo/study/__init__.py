"""Studies: grids of training runs (cells), cached by key, with typed results.

* :class:`Cell` (one run; ``fixed`` or ``converged`` protocol), :class:`Grid` (a product of
  axes over a base cell), :func:`axis`, :func:`chain`: :mod:`jbo.study.cell`;
* :class:`CellCache` (one JSON per cell key), :func:`fingerprint`: :mod:`jbo.study.store`;
* :class:`CellResult`, :class:`StopReason`: :mod:`jbo.study.results`;
* running cells: :mod:`jbo.study.fixed` (body-order study) and :mod:`jbo.study.converged`
  (per regime, to convergence, models shipped), with their data in :mod:`jbo.study.regimes`.

Nothing else in :mod:`jbo` imports this package except the command line.
"""

from jbo.study.cell import (CONVERGED_HYPERS, STUDY_HYPERS, Cell, Grid, axis, chain,
                            has_rotate, setting_of)
from jbo.study.results import CellResult, StopReason, TestSet
from jbo.study.store import CellCache, file_digest, fingerprint, spread, write_json

__all__ = ["Cell", "Grid", "axis", "chain", "STUDY_HYPERS", "CONVERGED_HYPERS", "has_rotate",
           "setting_of", "CellResult", "StopReason", "TestSet", "CellCache", "fingerprint",
           "file_digest", "spread", "write_json"]
