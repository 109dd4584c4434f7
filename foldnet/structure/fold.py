"""Gradient-descent folding: predicted distributions -> backbone coordinates.

The AlphaFold-CASP13 recipe (Senior et al. 2020, Nature 577:706) in JAX: the backbone is
parameterised by its phi/psi torsions (omega fixed trans, Engh & Huber bonds and angles),
built with NeRF (``foldnet.geometry.build_backbone``), scored by the potential of
``foldnet.structure.potential`` and minimised with Adam (optax) under a cosine learning
rate schedule. The whole descent is one ``lax.scan`` under ``jit``; restarts run in
parallel as one batch (and across the local devices with ``shard_map``), each
initialised by sampling the predicted torsion distributions (bin, then uniform within
the bin) plus Gaussian noise. The lowest-energy restart wins. Everything is f32 and
deterministic for a given seed and device count.

An optional Cartesian refinement then moves the N/CA/C coordinates directly under the
same distogram, torsion and clash terms plus harmonic restraints on bond lengths, bond
angles and omega (``FoldConfig.refine_steps``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein
from foldnet.geometry.nerf import (
    backbone_from_phi_psi, build_backbone, ideal_bond_angles, ideal_bond_lengths, internal_coordinates, place_atom,
    trans_torsions)
from foldnet.geometry.vectors import virtual_cb
from foldnet.structure.config import FoldConfig
from foldnet.structure.confidence import residue_confidence
from foldnet.structure.potential import (
    Potential, batched_energy_terms, energy_terms, make_potential, packed_pair_indices, total_energy)

_GLY = rc.RESTYPE_ORDER["G"]


class FoldResult(NamedTuple):
    """Output of ``fold``.

    Attributes:
      protein: the lowest-energy structure (N, CA, C, O; virtual CB for non-Gly), with
        per-residue confidence (0-100) in ``b_factors``.
      energy: its total (weighted) energy.
      energy_terms: its unweighted terms {"distogram", "torsion", "clash"} (plus
        "orientation" when ``config.weight_orientation`` > 0).
      all_energies: [R] final total energy of every restart.
      confidence: [L] per-residue confidence (0-100), as in ``protein.b_factors``.
      summary_confidence: mean per-residue confidence.
      torsions: [L, 3] phi, psi, omega (radians) of the kept structure.
      best_restart: index of the kept restart.
    """

    protein: Protein
    energy: float
    energy_terms: dict
    all_energies: np.ndarray
    confidence: np.ndarray
    summary_confidence: float
    torsions: np.ndarray
    best_restart: int


def sample_torsions(rng: np.random.Generator, log_probs, num: int, noise_rad: float) -> np.ndarray:
    """Sample angles [num, L] from per-residue bin distributions, plus Gaussian noise.

    A bin by inverse-CDF sampling, a uniform position within it, then the noise. On the host
    in numpy: a few thousand numbers, where a jitted sampler cost a 1.5 s XLA compilation
    for every new length bucket (measured at 300 residues) for microseconds of work.

    Args:
      rng: numpy Generator (``fold`` seeds one per call).
      log_probs: [L, 36] log bin probabilities (need not be normalised).
      num: number of samples (restarts).
      noise_rad: standard deviation of the added noise (radians).
    Returns:
      [num, L] float32 angles in radians.
    """
    log_probs = np.asarray(log_probs, np.float64)
    probs = np.exp(log_probs - log_probs.max(-1, keepdims=True))
    cdf = np.cumsum(probs, axis=-1)
    cdf /= cdf[:, -1:]
    length, nbins = log_probs.shape
    u = rng.random((num, length))
    bins = np.minimum((u[..., None] >= cdf[None]).sum(-1), nbins - 1)
    width = 2.0 * math.pi / rc.NUM_TORSION_BINS
    centre = np.asarray(rc.TORSION_CENTERS_RAD, np.float64)[bins]
    within = rng.uniform(-0.5 * width, 0.5 * width, (num, length))
    return (centre + within + noise_rad * rng.standard_normal((num, length))).astype(np.float32)


def _coords(phi: jnp.ndarray, psi: jnp.ndarray, config: FoldConfig) -> jnp.ndarray:
    if config.torsion_gradient == "analytic":
        return backbone_from_phi_psi(phi, psi, config.nerf_method, config.fragment_size)
    return build_backbone(trans_torsions(phi, psi), method=config.nerf_method, fragment_size=config.fragment_size)


def restart_mesh(num_restarts: int) -> Optional[Mesh]:
    """A 1-D mesh over the local devices that the restarts are split across (None: one device).

    Uses the largest device count that divides ``num_restarts``: several GPUs/TPUs, or the
    CPU devices of ``foldnet.cli.runtime``. On the idle 2-core CPU it is a wash (300
    residues, 8 restarts: 9.99 s on 2 devices vs 10.06 s on 1; XLA already uses both cores);
    it pays where devices are separate chips.
    """
    devices = jax.local_devices()
    n = math.gcd(num_restarts, len(devices))
    return Mesh(np.asarray(devices[:n]), ("restart",)) if n > 1 else None


@functools.partial(jax.jit, static_argnames=("config", "mesh"))
def _descend(
    potential: Potential, phi0: jnp.ndarray, psi0: jnp.ndarray, config: FoldConfig, mesh: Optional[Mesh]
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, dict, jnp.ndarray, jnp.ndarray]:
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.num_steps, alpha=config.final_lr_fraction)
    opt = optax.adam(schedule)

    build = jax.vmap(_coords, in_axes=(0, 0, None))

    def energy(potential, params):  # params [R, 2, L]: the restarts are independent sums
        phi, psi = params[:, 0], params[:, 1]
        coords = build(phi, psi, config)
        terms = batched_energy_terms(potential, coords, phi, psi, config)
        energies = total_energy(terms, config)
        return jnp.sum(energies), (energies, terms, coords)

    def runs(potential, phi, psi):
        # All restarts in one program (not ``vmap`` of a single descent) so the distogram
        # lookup can run pair-major (``batched_energy_terms``). The gradient of the summed
        # energy is each restart's own gradient, and Adam is elementwise: every restart
        # descends exactly as it would alone.
        params = jnp.stack([phi, psi], axis=1)
        staged = _separation_stages(potential, config)

        def step(carry, t):
            params, state = carry
            (_, (e, _, _)), grad = jax.value_and_grad(energy, argnums=1, has_aux=True)(staged(t), params)
            # A non-finite gradient (never seen, but cheap to guard) skips the update.
            grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
            # phi_0 and psi_(L-1) move no scored atom: their gradient is float noise, which
            # Adam's normalisation would turn into full-size steps.
            grad = grad.at[:, 0, 0].set(0.0).at[:, 1, -1].set(0.0)
            updates, state = opt.update(grad, state, params)
            return (optax.apply_updates(params, updates), state), e

        (params, _), traj = lax.scan(step, (params, opt.init(params)), jnp.arange(config.num_steps))
        # The final structures come out of the final energy (no separate NeRF program to compile).
        _, (e, terms, coords) = energy(potential, params)
        return params[:, 0], params[:, 1], e, terms, traj.T, coords

    if mesh is None:
        return runs(potential, phi0, psi0)
    # Restarts are independent: each device folds its share of them against a replicated
    # potential; no communication (so no varying-axis checks are needed).
    return jax.shard_map(
        runs, mesh=mesh, in_specs=(P(), P("restart"), P("restart")), out_specs=P("restart"), check_vma=False
    )(potential, phi0, psi0)


def _separation_stages(potential: Potential, config: FoldConfig):
    """step -> the potential that step descends (``FoldConfig.separation_ramp``).

    During the ramp the distogram term counts only pairs with |i - j| <= a cutoff that grows
    linearly from ``ramp_start_separation`` to the padded length; the final energies (which
    pick the restart) always use every pair. With the ramp off the potential is unchanged.
    """
    if config.separation_ramp <= 0:
        return lambda t: potential
    size = potential.row.shape[1]
    i, j = packed_pair_indices(size)
    sep = jnp.asarray(j - i, jnp.float32)
    start = float(config.ramp_start_separation)
    ramp_steps = max(1.0, config.separation_ramp * config.num_steps)

    def staged(t):
        frac = jnp.minimum(1.0, t.astype(jnp.float32) / ramp_steps)
        cutoff = start + frac * (size - start)
        return potential._replace(dist_weight=potential.dist_weight * (sep <= cutoff))

    return staged


def descend(
    potential: Potential, phi0: jnp.ndarray, psi0: jnp.ndarray, config: FoldConfig
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, dict, jnp.ndarray, jnp.ndarray]:
    """Adam on the torsions of R restarts at once (one jitted ``lax.scan`` over the batch).

    The restarts are split across the local devices (``restart_mesh``) when
    ``config.shard_restarts`` is set and more than one device divides R.

    Args:
      potential: tables from ``make_potential``.
      phi0, psi0: [R, L] initial torsions (radians).
      config: schedule, weights, NeRF method.
    Returns:
      (phi [R, L], psi [R, L], final total energy [R], final terms {name: [R]},
      energy trajectory [R, num_steps], final coordinates [R, L, 5, 3] N, CA, C, O, CB).
    """
    mesh = restart_mesh(phi0.shape[0]) if config.shard_restarts else None
    return _descend(potential, phi0, psi0, config, mesh)


@functools.partial(jax.jit, static_argnames=("config",))
def refine_cartesian(potential: Potential, coords: jnp.ndarray, config: FoldConfig) -> jnp.ndarray:
    """Adam on N/CA/C coordinates under the potential plus covalent-geometry restraints.

    Restraints: ``refine_bond_weight * (sum (b - b0)^2 + sum (a - a0)^2 + sum (1 - cos(omega - pi)))``
    over bonds (A), bond angles (rad) and peptide torsions, Engh & Huber targets.

    Args:
      potential: tables from ``make_potential``.
      coords: [L, 5, 3] start structure.
      config: refine_steps, refine_learning_rate, refine_bond_weight and the term weights.
    Returns:
      [L, 5, 3] refined N, CA, C, O (re-placed from psi) and virtual CB.
    """
    length = coords.shape[0]
    b0 = ideal_bond_lengths(length)
    a0 = ideal_bond_angles(length)

    def full(x):
        n, ca, c = x[:, 0], x[:, 1], x[:, 2]
        tors, bonds, angles, mask = internal_coordinates(n, ca, c)
        o = place_atom(n, ca, c, jnp.float32(rc.BOND_C_O), jnp.float32(math.radians(rc.ANGLE_CA_C_O)), tors[:, 1] + math.pi)
        return jnp.stack([n, ca, c, o, virtual_cb(n, ca, c)], axis=1), tors, bonds, angles, mask

    def energy(x):
        xyz, tors, bonds, angles, mask = full(x)
        terms = energy_terms(potential, xyz, tors[:, 0], tors[:, 1], config)
        # The last residue's C-N(next) bond and angles do not exist (mask of omega).
        inter = jnp.stack([jnp.ones(length), mask[:, 2], mask[:, 2]], axis=-1)
        bonds_mask = jnp.stack([jnp.ones(length), jnp.ones(length), mask[:, 2]], axis=-1)
        restraint = (
            jnp.sum(bonds_mask * jnp.square(bonds - b0))
            + jnp.sum(inter * jnp.square(angles - a0))
            + jnp.sum(mask[:, 2] * (1.0 - jnp.cos(tors[:, 2] - math.pi)))
        )
        return total_energy(terms, config) + config.refine_bond_weight * restraint

    opt = optax.adam(config.refine_learning_rate)
    x0 = coords[:, :3]

    def step(carry, _):
        x, state = carry
        grad = jax.grad(energy)(x)
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        updates, state = opt.update(grad, state, x)
        return (optax.apply_updates(x, updates), state), None

    (x, _), _ = lax.scan(step, (x0, opt.init(x0)), None, length=config.refine_steps)
    return full(x)[0]


def _checked_inputs(dist_probs, phi_probs, psi_probs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three distributions as f32 arrays of consistent shapes (``fold``'s checks)."""
    dist_probs = np.asarray(dist_probs, np.float32)
    length = dist_probs.shape[0]
    if dist_probs.shape != (length, length, rc.NUM_DIST_BINS):
        raise ValueError(f"fold: dist_probs must be [L, L, {rc.NUM_DIST_BINS}], got {dist_probs.shape}")
    if length < 2:
        raise ValueError(f"fold: need at least 2 residues, got {length}")
    if not (np.all(np.isfinite(dist_probs)) and np.all(np.isfinite(phi_probs)) and np.all(np.isfinite(psi_probs))):
        raise ValueError("fold: input probabilities contain NaN or inf")
    phi_probs = np.asarray(phi_probs, np.float32)
    psi_probs = np.asarray(psi_probs, np.float32)
    for name, arr in (("phi_probs", phi_probs), ("psi_probs", psi_probs)):
        if arr.shape != (length, rc.NUM_TORSION_BINS):
            raise ValueError(f"fold: {name} must be [{length}, {rc.NUM_TORSION_BINS}], got {arr.shape}")
    return dist_probs, phi_probs, psi_probs


def _checked_orientation(orientation, length: int, config: FoldConfig) -> Optional[dict]:
    """The orientation probabilities as f32 arrays (None when the term is off)."""
    if config.weight_orientation <= 0:
        return None
    if orientation is None:
        raise ValueError("fold: weight_orientation > 0 needs orientation probabilities "
                         "(orientation={'omega', 'theta', 'phi'}; a model with the orientation head)")
    out = {}
    for name, bins in rc.ORIENTATION_NUM_BINS.items():
        if name not in orientation:
            raise ValueError(f"fold: orientation lacks {name!r}")
        arr = np.asarray(orientation[name], np.float32)
        if arr.shape != (length, length, bins):
            raise ValueError(f"fold: orientation[{name!r}] must be [{length}, {length}, {bins}], got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"fold: orientation[{name!r}] contains NaN or inf")
        out[name] = arr
    return out


def _padded_orientation(orientation: Optional[dict], padded: int) -> Optional[dict]:
    """Orientation probabilities padded to ``padded`` residues (uniform; masked out anyway)."""
    if orientation is None:
        return None
    out = {}
    for name, arr in orientation.items():
        length, bins = arr.shape[0], arr.shape[-1]
        full = np.full((padded, padded, bins), 1.0 / bins, np.float32)
        full[:length, :length] = arr
        out[name] = full
    return out


def _padded_to_bucket(dist_probs, phi_probs, psi_probs, reference, bucket: int):
    """Inputs padded with uniform distributions to a multiple of ``bucket`` residues (one
    compilation per bucket), and the residue mask [L_padded] (1 = real residue)."""
    length = dist_probs.shape[0]
    padded = -(-length // bucket) * bucket
    pad = padded - length
    residue_mask = np.concatenate([np.ones(length, np.float32), np.zeros(pad, np.float32)])
    if not pad:
        return dist_probs, phi_probs, psi_probs, reference, residue_mask
    uniform_t = np.full((pad, rc.NUM_TORSION_BINS), 1.0 / rc.NUM_TORSION_BINS, np.float32)
    phi_p = np.concatenate([phi_probs, uniform_t])
    psi_p = np.concatenate([psi_probs, uniform_t])
    dist_p = np.full((padded, padded, rc.NUM_DIST_BINS), 1.0 / rc.NUM_DIST_BINS, np.float32)
    dist_p[:length, :length] = dist_probs
    if reference is not None and np.ndim(reference) == 3:
        ref = np.full((padded, padded, rc.NUM_DIST_BINS), 1.0 / rc.NUM_DIST_BINS, np.float32)
        ref[:length, :length] = reference
        reference = ref
    return dist_p, phi_p, psi_p, reference, residue_mask


def bucketed_potential(dist_probs, phi_probs, psi_probs, config: FoldConfig, reference=None,
                       orientation: Optional[dict] = None) -> tuple[Potential, np.ndarray]:
    """``make_potential`` of the inputs padded to a multiple of ``config.length_bucket`` residues
    (one compilation per bucket), as ``fold`` builds it: (potential, residue mask [L_padded],
    1 = real residue)."""
    dist_p, phi_p, psi_p, ref_p, residue_mask = _padded_to_bucket(
        dist_probs, phi_probs, psi_probs, reference, config.length_bucket)
    orient_p = _padded_orientation(orientation, len(residue_mask))
    return make_potential(dist_p, phi_p, psi_p, config, ref_p, residue_mask, orient_p), residue_mask


def sampled_starts(potential: Potential, config: FoldConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``fold``'s start torsions for its restarts: (phi0, psi0) [R, L_padded], drawn from the
    potential's torsion distributions with ``config.init_noise_deg`` of noise, seeded."""
    rng = np.random.default_rng(seed)
    noise = math.radians(config.init_noise_deg)
    return (sample_torsions(rng, potential.phi_log_probs, config.num_restarts, noise),
            sample_torsions(rng, potential.psi_log_probs, config.num_restarts, noise))


def _refined(potential: Potential, coords, config: FoldConfig):
    """Cartesian polish of the best structure: (coords, torsions, energy terms, energy)."""
    refined = refine_cartesian(potential, coords, config)
    n, ca, c = refined[:, 0], refined[:, 1], refined[:, 2]
    torsions = internal_coordinates(n, ca, c)[0]
    rterms = energy_terms(potential, refined, torsions[:, 0], torsions[:, 1], config)
    return refined, torsions, {k: float(v) for k, v in rterms.items()}, float(total_energy(rterms, config))


def _output_protein(coords, conf, aatype, residue_index, id: str, chain_id: str) -> Protein:
    """The folded chain as a Protein (confidence in the B-factors; Gly without CB)."""
    length = len(coords)
    aatype = np.full(length, rc.UNK_INDEX, np.int32) if aatype is None else np.asarray(aatype, np.int32)
    if aatype.shape != (length,):
        raise ValueError(f"fold: aatype must be [{length}], got {aatype.shape}")
    atom_mask = np.ones((length, rc.NUM_ATOMS), np.float32)
    atom_mask[:, rc.CB_IDX] = (aatype != _GLY).astype(np.float32)
    return Protein(
        id=id,
        aatype=aatype,
        atom_positions=np.asarray(coords, np.float32),
        atom_mask=atom_mask,
        residue_index=np.arange(1, length + 1, dtype=np.int32) if residue_index is None else np.asarray(residue_index, np.int32),
        chain_id=chain_id,
        b_factors=conf,
    )


def fold(
    dist_probs: np.ndarray,
    phi_probs: np.ndarray,
    psi_probs: np.ndarray,
    config: FoldConfig = FoldConfig(),
    seed: int = 0,
    *,
    aatype: Optional[np.ndarray] = None,
    residue_index: Optional[np.ndarray] = None,
    reference: Optional[np.ndarray] = None,
    id: str = "folded",
    chain_id: str = "A",
    orientation: Optional[dict] = None,
) -> FoldResult:
    """Fold one chain from its predicted distogram and torsion distributions.

    Args:
      dist_probs: [L, L, 65] CB-CB distogram probabilities (``rc.DISTOGRAM_EDGES`` bins).
      phi_probs, psi_probs: [L, 36] torsion-bin probabilities (``rc.TORSION_CENTERS_RAD``).
      config: folding configuration.
      seed: PRNG seed; same seed, same inputs -> same structure.
      aatype: [L] residue types for the output Protein (unknown when None; Gly gets no CB).
      residue_index: [L] residue numbers for the output (1..L when None).
      reference: optional background distogram subtracted in log space (see
        ``potential.distogram_table``), broadcastable to [L, L, 65].
      id, chain_id: identifiers of the output Protein.
      orientation: {"omega": [L, L, 25], "theta": [L, L, 25], "phi": [L, L, 13]} predicted
        trRosetta orientation probabilities (``rc.ORIENTATION_*`` bins; theta and phi row i
        = angles of residue i towards j). Required when ``config.weight_orientation`` > 0
        (a ValueError otherwise), ignored when it is 0.
    Returns:
      FoldResult with the lowest-energy structure of ``config.num_restarts`` runs.

    Example:
      >>> from foldnet.structure import fold, FoldConfig
      >>> result = fold(dist_probs, phi_probs, psi_probs, FoldConfig(num_restarts=4), seed=0)
      >>> result.protein.atom_positions.shape   # (L, 5, 3)
    """
    dist_probs, phi_probs, psi_probs = _checked_inputs(dist_probs, phi_probs, psi_probs)
    length = dist_probs.shape[0]
    orientation = _checked_orientation(orientation, length, config)
    potential, residue_mask = bucketed_potential(dist_probs, phi_probs, psi_probs, config, reference, orientation)
    phi0, psi0 = sampled_starts(potential, config, seed)
    # Everything after the descent in numpy: indexing device arrays eagerly would compile a
    # dozen small XLA programs per new length bucket (~0.5 s measured at 300 residues).
    phi, psi, energies, terms, _, all_coords = jax.device_get(descend(potential, phi0, psi0, config))
    best = int(np.argmin(np.where(np.isfinite(energies), energies, np.inf)))
    coords = all_coords[best, :length]
    torsions = trans_torsions(phi[best], psi[best], xp=np)[:length]
    best_terms = {k: float(v[best]) for k, v in terms.items()}
    best_energy = float(energies[best])
    if config.refine_steps > 0:
        if len(residue_mask) > length:  # refinement works on the real residues only
            potential = make_potential(dist_probs, phi_probs, psi_probs, config, reference, orientation=orientation)
        coords, torsions, best_terms, best_energy = _refined(potential, coords, config)
    torsions = np.angle(np.exp(1j * np.asarray(torsions, np.float64))).astype(np.float32)
    conf, summary = residue_confidence(dist_probs, config.min_separation, config.confidence_contact_cutoff)
    protein = _output_protein(coords, conf, aatype, residue_index, id, chain_id)
    return FoldResult(
        protein=protein,
        energy=best_energy,
        energy_terms=best_terms,
        all_energies=energies,
        confidence=conf,
        summary_confidence=summary,
        torsions=torsions,
        best_restart=best,
    )
