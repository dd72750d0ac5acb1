"""Many-body expansion of the reference energies of one parent, or of every complete parent.

Thin views over :func:`jbo.analysis.reference_spectra` (the one assembler): E(S) by bitmask is
Möbius-inverted into ε(S), E^(k) = Σ_{|S|=k} ε(S), E_MBE(K) = Σ_{k≤K} E^(k). Energies in eV.
"""

from __future__ import annotations

from collections.abc import Sequence

from jbo.analysis import Spectrum, reference_spectra
from jbo.data.records import Parent

__all__ = ["ReferenceMBE", "reference_mbe", "all_mbe"]

#: The reference MBE of one parent: ``cluster, n, regime, per_order[n], truncated[n], total,
#: terms[2^n]`` (:class:`jbo.analysis.Spectrum`).
ReferenceMBE = Spectrum


def reference_mbe(parent: Parent) -> ReferenceMBE:
    """The MBE of one parent (:class:`jbo.data.records.Parent`); ``ValueError`` naming the
    subsets that are not labelled."""
    return reference_spectra([parent], strict=True)[0]


def all_mbe(parents: Sequence[Parent], split: str | None = "train"
            ) -> tuple[list[ReferenceMBE], dict[str, str]]:
    """MBEs of every complete parent (of ``split``), sorted by cluster, and ``{cluster: why
    skipped}`` for the incomplete ones."""
    chosen = [p for p in parents if not split or p.split == split]
    skipped = {p.cluster: f"{p.full - len(p.subsets)} of {p.full} subsets not labelled"
               for p in chosen if not p.is_complete}
    return list(reference_spectra(chosen)), skipped
