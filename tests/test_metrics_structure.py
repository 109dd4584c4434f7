"""RMSD, TM-score, GDT and lDDT-Calpha: hand-computed cases, invariances, real chains."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.data.proteinnet import iter_proteinnet
from foldnet.metrics import (
    kabsch,
    lddt,
    lddt_per_residue,
    rmsd,
    structure_scores,
    superpose,
    tm_d0,
    tm_score,
)


@pytest.fixture(scope="module")
def real_ca(testdata):
    """CA traces [L, 3] of the first three ProteinNet validation chains (64-268 residues)."""
    proteins = itertools.islice(iter_proteinnet(testdata / "proteinnet" / "validation.gz"), 3)
    return [p.atom_positions[:, rc.CA_IDX].astype(np.float64) for p in proteins]


def _random_rigid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    return r, rng.normal(scale=30.0, size=3)


# --------------------------------------------------------------------------
# lDDT
# --------------------------------------------------------------------------


def _line(n: int = 5, spacing: float = 3.8) -> np.ndarray:
    return np.stack([np.arange(n) * spacing, np.zeros(n), np.zeros(n)], axis=1)


@pytest.mark.parametrize(
    "shift, pair_score",
    [(0.3, 1.0), (0.75, 0.75), (1.5, 0.5), (3.0, 0.25), (5.0, 0.0)],
)
def test_lddt_line_end_moved_outward(shift, pair_score):
    # Atoms at x = 0, 3.8, 7.6, 11.4, 15.2. Pairs within 15 A of the native:
    # |i - j| <= 3, i.e. 2 * (4 + 3 + 2) = 18 ordered pairs (0-4 is 15.2 A: out).
    # Moving atom 4 by `shift` along +x lengthens its 3 in-radius pairs by
    # exactly `shift`, each scoring mean([shift < 0.5, < 1, < 2, < 4]).
    native = _line()
    model = native.copy()
    model[4, 0] += shift
    expected = (12 + 6 * pair_score) / 18
    assert lddt(model, native) == pytest.approx(expected)
    per_res = lddt_per_residue(model, native)
    # Residue 0 has pairs 1-3 only (untouched); 1-3 have one moved pair out of 4.
    np.testing.assert_allclose(per_res, [1.0, (3 + pair_score) / 4, (3 + pair_score) / 4, (3 + pair_score) / 4, pair_score])


def test_lddt_four_atom_toy_every_pair_by_hand():
    # Native: A(0,0,0), B(3,0,0), C(0,4,0), D(0,0,16).
    # Native distances: AB 3, AC 4, BC 5 (scored); AD 16, BD 16.28, CD 16.49 (beyond 15 A).
    native = np.array([[0, 0, 0], [3, 0, 0], [0, 4, 0], [0, 0, 16]], float)
    model = native.copy()
    model[1] = [3.7, 0, 0]  # AB 3.7 (diff 0.7 -> 3/4), BC sqrt(29.69) = 5.449 (diff 0.449 -> 1)
    model[3] = [1.0, 1.0, 1.0]  # D's pairs are not scored whatever the model does
    assert lddt(model, native) == pytest.approx((2 * 0.75 + 2 * 1.0 + 2 * 1.0) / 6)
    per_res = lddt_per_residue(model, native)
    np.testing.assert_allclose(per_res[:3], [0.875, 0.875, 1.0])
    assert math.isnan(per_res[3])
    # Masking B leaves only A-C: perfect.
    assert lddt(model, native, mask=np.array([1, 0, 1, 1])) == 1.0
    # Pairs come from the native only: a model that brings D close does not add pairs.
    assert lddt(native, model) != lddt(model, native)


def test_lddt_rigid_transform_is_one_and_noise_lowers_it(real_ca):
    rng = np.random.default_rng(1)
    native = real_ca[0]
    r, t = _random_rigid(rng)
    assert lddt(native @ r.T + t, native) == pytest.approx(1.0)
    assert np.allclose(lddt_per_residue(native @ r.T + t, native), 1.0)
    scores = [lddt(native + rng.normal(0, s, native.shape), native) for s in (0.5, 1.0, 2.0)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0


def test_lddt_matches_pairwise_loop_on_real_chain(real_ca):
    """Independent loop over the definition (AlphaFold lddt.py convention)."""
    rng = np.random.default_rng(2)
    native = real_ca[2]
    model = native + rng.normal(0, 1.0, native.shape)
    total, n_pairs = 0.0, 0
    for i in range(len(native)):
        for j in range(len(native)):
            dn = math.dist(native[i], native[j])
            if i == j or dn >= 15.0:
                continue
            diff = abs(math.dist(model[i], model[j]) - dn)
            total += sum(diff < t for t in (0.5, 1.0, 2.0, 4.0)) / 4
            n_pairs += 1
    assert lddt(model, native) == pytest.approx(total / n_pairs, abs=1e-12)


# --------------------------------------------------------------------------
# RMSD / Kabsch
# --------------------------------------------------------------------------


def test_rmsd_of_scaled_copy_by_hand(real_ca):
    # Scaling about the centroid keeps the optimal rotation at identity, so
    # RMSD = |s - 1| * radius of gyration.
    native = real_ca[0]
    c = native.mean(0)
    rg = math.sqrt(np.mean(np.sum((native - c) ** 2, axis=1)))
    model = c + 1.1 * (native - c)
    assert rmsd(model, native) == pytest.approx(0.1 * rg, rel=1e-9)


def test_kabsch_fixes_reflections():
    # A chiral tetrahedron and its mirror image: no proper rotation maps one on
    # the other, so the RMSD stays positive (an improper fit would give 0).
    x = np.array([[0, 0, 0], [1.5, 0, 0], [0, 2.0, 0], [0, 0, 3.0]])
    mirror = x * np.array([1, 1, -1])
    r, _ = kabsch(mirror, x)
    assert np.linalg.det(r) == pytest.approx(1.0)
    assert rmsd(mirror, x) > 0.5
    assert np.allclose(superpose(x @ _random_rigid(np.random.default_rng(3))[0].T, x), x)


def test_rmsd_mask_and_errors(real_ca):
    native = real_ca[1]
    model = native.copy()
    model[:10] += 50.0  # only the masked-out residues are wrong
    mask = np.ones(len(native))
    mask[:10] = 0
    assert rmsd(model, native, mask) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="differs from model shape"):
        rmsd(native[:5], native[:6])
    with pytest.raises(ValueError, match=r"\[L, 3\]"):
        rmsd(native[:, :2], native[:, :2])
    bad = native.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        rmsd(bad, native)


# --------------------------------------------------------------------------
# TM-score and GDT
# --------------------------------------------------------------------------


def test_tm_d0_values():
    assert tm_d0(100) == pytest.approx(1.24 * 85 ** (1 / 3) - 1.8)
    assert tm_d0(22) == pytest.approx(1.24 * 7 ** (1 / 3) - 1.8)  # 0.572
    assert tm_d0(21) == 0.5  # formula gives 0.453: floored
    assert tm_d0(10) == 0.5


def test_tm_and_gdt_with_far_outliers_by_hand(real_ca):
    # Five residues displaced by 100 A, the rest exact: the identity superposition
    # is optimal, so TM = ((L - 5) + 5 / (1 + (100 / d0)^2)) / L and every GDT
    # fraction is (L - 5) / L.
    native = real_ca[1]
    L = len(native)
    model = native.copy()
    idx = [3, 40, 41, 100, L - 2]
    model[idx] += np.array([100.0, 0.0, 0.0])
    s = structure_scores(model, native)
    d0 = tm_d0(L)
    assert s.d0 == pytest.approx(d0)
    assert s.tm_score == pytest.approx(((L - 5) + 5 / (1 + (100 / d0) ** 2)) / L, abs=1e-9)
    assert s.gdt_ts == pytest.approx((L - 5) / L)
    assert s.gdt_ha == pytest.approx((L - 5) / L)
    assert s.n_aligned == L and s.native_length == L


def test_tm_normalised_by_native_length(real_ca):
    native = real_ca[0]
    L = len(native)
    mask = np.zeros(L)
    mask[: L // 2] = 1
    # A perfect model of half the chain: TM = (L/2) / L with native_length = L ...
    s = structure_scores(native, native, mask, native_length=L)
    assert s.tm_score == pytest.approx((L // 2) / L)
    assert s.gdt_ts == pytest.approx((L // 2) / L)
    # ... and 1 when normalised by the aligned residues (the default).
    assert tm_score(native, native, mask) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="smaller than"):
        structure_scores(native, native, native_length=L - 1)


def test_gdt_fractions_by_hand():
    # A 30-residue helix-like trace with residue 0 pushed 0.999 A and residue 29
    # pushed 1.001 A along the chain axis: the superposition on the 28
    # exact residues keeps them at 0 A, so within 0.5 A: 28, within 1 A: 29,
    # within 2 A and beyond: 30.
    t = np.arange(30)
    native = np.stack([t * 1.5, 2.3 * np.sin(t * 1.75), 2.3 * np.cos(t * 1.75)], axis=1)
    model = native.copy()
    model[0, 0] -= 0.999
    model[29, 0] += 1.001
    s = structure_scores(model, native)
    assert s.gdt_fractions[0.5] == pytest.approx(28 / 30)
    assert s.gdt_fractions[1.0] == pytest.approx(29 / 30)
    assert s.gdt_fractions[2.0] == s.gdt_fractions[4.0] == s.gdt_fractions[8.0] == 1.0
    assert s.gdt_ts == pytest.approx((29 / 30 + 3) / 4)
    assert s.gdt_ha == pytest.approx((28 / 30 + 29 / 30 + 2) / 4)


def test_scores_invariant_to_rigid_transform_of_model(real_ca):
    rng = np.random.default_rng(4)
    native = real_ca[2]
    model = native + rng.normal(0, 2.0, native.shape)
    base = structure_scores(model, native)
    base_lddt = lddt(model, native)
    for _ in range(2):
        r, t = _random_rigid(rng)
        moved = model @ r.T + t
        s = structure_scores(moved, native)
        assert s.rmsd == pytest.approx(base.rmsd, abs=1e-9)
        assert s.tm_score == pytest.approx(base.tm_score, abs=1e-9)
        assert s.gdt_ts == pytest.approx(base.gdt_ts, abs=1e-9)
        assert s.gdt_ha == pytest.approx(base.gdt_ha, abs=1e-9)
        assert lddt(moved, native) == pytest.approx(base_lddt, abs=1e-12)
    # Identity scores 1.
    ident = structure_scores(native, native)
    assert ident.tm_score == pytest.approx(1.0) and ident.gdt_ts == 1.0 and ident.gdt_ha == 1.0
    assert ident.rmsd == pytest.approx(0.0, abs=1e-6)


def test_metrics_package_never_imports_jax():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, foldnet.metrics; print('jax' in sys.modules)"
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "False"
