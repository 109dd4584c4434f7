"""Structure module: predicted distogram + torsion distributions -> 3D backbone (JAX, f32).

Example:
  >>> from foldnet.structure import FoldConfig, fold
  >>> result = fold(dist_probs, phi_probs, psi_probs, FoldConfig(), seed=0)
  >>> result.protein, result.energy, result.energy_terms, result.confidence
"""

from foldnet.structure.confidence import residue_confidence
from foldnet.structure.config import FoldConfig
from foldnet.structure.fold import FoldResult, descend, fold, refine_cartesian, sample_torsions
from foldnet.structure.oracle import distogram_from_distances, torsion_bins_from_angles, true_distributions, true_orientations
from foldnet.structure.potential import Potential, energy_terms, make_potential, total_energy

__all__ = [
    "FoldConfig",
    "FoldResult",
    "Potential",
    "descend",
    "distogram_from_distances",
    "energy_terms",
    "fold",
    "make_potential",
    "refine_cartesian",
    "residue_confidence",
    "sample_torsions",
    "torsion_bins_from_angles",
    "total_energy",
    "true_distributions",
    "true_orientations",
]
