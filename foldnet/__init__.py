"""foldnet: protein structure prediction training framework on JAX.

The package reads as the data flow (see docs/design.md):
``common`` (Protein, residue constants) -> ``data`` (parsers, fetch, HDF5, loader; numpy only)
-> ``model`` (Flax ResNets) -> ``train`` (step, parallel, loop) -> ``geometry`` / ``structure``
(NeRF, folding) -> ``metrics`` -> ``inference`` (predict, evaluate) ; ``cli`` holds the thin
hydra entry points.
"""

__version__ = "0.1.0"

from foldnet.common.protein import Protein  # noqa: E402,F401  (the one protein type)
