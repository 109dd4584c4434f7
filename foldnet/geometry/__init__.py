"""Differentiable geometry in pure jnp (f32): vectors, dihedrals, NeRF (superposition and
RMSD are numpy metrics: ``foldnet.metrics``).

Example:
  >>> import jax.numpy as jnp
  >>> from foldnet import geometry
  >>> tors = jnp.tile(jnp.deg2rad(jnp.array([-57.0, -47.0, 180.0])), (20, 1))  # alpha helix
  >>> xyz = geometry.build_backbone(tors)          # [20, 5, 3] N, CA, C, O, CB
"""

from foldnet.geometry.dihedral import bond_angle, dihedral
from foldnet.geometry.nerf import (
    backbone_from_phi_psi,
    build_backbone,
    chain_fragments,
    chain_frames,
    chain_scan,
    ideal_bond_angles,
    ideal_bond_lengths,
    internal_coordinates,
    local_transforms,
    place_atom,
    srf_point,
    torsion_gradients,
    trans_torsions,
)
from foldnet.geometry.vectors import distance, norm, normalize, pairwise_distances, virtual_cb

__all__ = [
    "backbone_from_phi_psi",
    "bond_angle",
    "build_backbone",
    "chain_fragments",
    "chain_frames",
    "chain_scan",
    "dihedral",
    "distance",
    "ideal_bond_angles",
    "ideal_bond_lengths",
    "internal_coordinates",
    "local_transforms",
    "norm",
    "normalize",
    "pairwise_distances",
    "place_atom",
    "srf_point",
    "torsion_gradients",
    "trans_torsions",
    "virtual_cb",
]
