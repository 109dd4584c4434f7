"""FoldNet: presets, shapes, symmetry, bins, circular mean, masking, losses, precision."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from foldnet.common import geometry_np
from foldnet.common import residue_constants as rc
from foldnet.model import (
    PRESETS,
    ModelConfig,
    angle_to_bin,
    build_model,
    count_params,
    distance_to_bin,
    loss_fn,
    torsion_circular_mean,
)
from model_fixtures import FAST_COMPILE, example_from_protein, load_chains, make_batch, perturbed
from foldnet.model import layers

REPO = Path(__file__).resolve().parent.parent
CROP = 24


@pytest.fixture(scope="module")
def batch(testdata):
    return make_batch(testdata, 4, CROP, seed=1)


@pytest.fixture(scope="module")
def tiny_f32():
    return build_model(dataclasses.replace(PRESETS["tiny"], dtype="float32"))


@pytest.fixture(scope="module")
def tiny_params(tiny_f32, batch):
    from foldnet.train.state import init_params

    return init_params(tiny_f32, jax.random.key(0, impl="rbg"), batch)


@pytest.fixture(scope="module")
def apply_f32(tiny_f32):
    return jax.jit(lambda p, b: tiny_f32.apply({"params": p}, b, train=False), compiler_options=FAST_COMPILE)


@pytest.fixture(scope="module")
def eval_loss(tiny_f32):
    return jax.jit(lambda p, b: loss_fn(tiny_f32, p, b, None, train=False), compiler_options=FAST_COMPILE)


def _param_count(cfg: ModelConfig, batch) -> int:
    model = build_model(cfg)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))
    return count_params(shapes["params"])


def test_yaml_presets_mirror_python_presets():
    for name, preset in PRESETS.items():
        d = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())
        assert ModelConfig.from_dict(d) == preset, name
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({"channels": 3})
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig(dtype="float16")


def test_preset_sizes_grow_and_match_hand_count(batch):
    counts = {n: _param_count(c, batch) for n, c in PRESETS.items()}
    assert counts["tiny"] < counts["base"] < counts["large"]
    # Hand count of tiny (C1=16, 2 blocks k=5; C2=8, 2 blocks 3x3; relpos 16 -> 33 + 1 channels):
    c1, c2, half = 16, 8, 4
    f_in = 21 + 21 + 16  # one-hot, profile + indicator, sinusoidal position
    ln = lambda c: 2 * c  # noqa: E731
    trunk1 = f_in * c1 + c1 + 2 * (2 * ln(c1) + 2 * (5 * c1 * c1 + c1)) + ln(c1)
    torsion = 2 * (c1 * 36 + 36)
    pair_in = 2 * half + 2 * 16 + 2
    trunk2 = (c1 * half + half) + (pair_in * c2 + c2) + 2 * (2 * ln(c2) + 2 * (9 * c2 * c2 + c2)) + ln(c2)
    dist = c2 * 65 + 65
    assert counts["tiny"] == trunk1 + torsion + trunk2 + dist


def test_outputs_shapes_dtypes_symmetry(apply_f32, tiny_params, batch):
    out = apply_f32(tiny_params, batch)
    assert set(out) == {"dist_logits", "phi_logits", "psi_logits"}
    assert out["dist_logits"].shape == (4, CROP, CROP, rc.NUM_DIST_BINS)
    assert out["phi_logits"].shape == out["psi_logits"].shape == (4, CROP, rc.NUM_TORSION_BINS)
    for v in out.values():
        assert v.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(v)))
    d = np.asarray(out["dist_logits"])
    np.testing.assert_array_equal(d, np.swapaxes(d, 1, 2))


def test_heads_with_zero_weight_are_not_built(batch):
    cfg = dataclasses.replace(PRESETS["tiny"], torsion_weight=0.0)
    shapes = jax.eval_shape(lambda: build_model(cfg).init(jax.random.PRNGKey(0), batch, train=False))
    assert "torsion_head" not in shapes["params"] and "distogram_head" in shapes["params"]
    cfg = dataclasses.replace(PRESETS["tiny"], distogram_weight=0.0, predict_omega=True)
    model = build_model(cfg)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))
    assert "trunk_2d" not in shapes["params"] and "distogram_head" not in shapes["params"]
    out = jax.eval_shape(lambda: model.apply(
        model.init(jax.random.PRNGKey(0), batch, train=False), batch, train=False))
    assert set(out) == {"phi_logits", "psi_logits", "omega_logits"}


def test_jnp_bins_equal_numpy_bins_on_real_chains(testdata):
    dists, tors = [], []
    for p in load_chains(str(testdata), 4):
        dists.append(geometry_np.cb_distance_map(p)[0].ravel())
        t, m = geometry_np.backbone_torsions(p)
        tors.append(np.where(m > 0, t, 0.0).astype(np.float32).ravel())
    d, t = np.concatenate(dists), np.concatenate(tors)  # one shape: one compile each
    np.testing.assert_array_equal(np.asarray(distance_to_bin(jnp.asarray(d))), rc.distance_to_bin(d))
    np.testing.assert_array_equal(np.asarray(angle_to_bin(jnp.asarray(t))), rc.angle_to_bin(t))
    # Exact edges and wrap-around: 2.0 -> bin 0, 2.3125 -> bin 1, 22 -> overflow 64, 1.0 -> 0.
    edges = np.array([1.0, 2.0, 2.3125, 21.99, 22.0, 50.0], np.float32)
    np.testing.assert_array_equal(np.asarray(distance_to_bin(jnp.asarray(edges))), [0, 0, 1, 63, 64, 64])
    angles = np.deg2rad(np.array([-180.0, -175.0, 0.0, 5.0, 179.9, 180.0, 370.0], np.float32))
    np.testing.assert_array_equal(np.asarray(angle_to_bin(jnp.asarray(angles))), rc.angle_to_bin(angles))
    np.testing.assert_array_equal(np.asarray(angle_to_bin(jnp.asarray(angles))), [0, 0, 18, 18, 35, 0, 19])


def test_torsion_circular_mean():
    centers = rc.TORSION_CENTERS_RAD
    logits = np.full((3, rc.NUM_TORSION_BINS), -1e4, np.float32)
    logits[0, 7] = 0.0  # all mass on bin 7 -> its centre
    logits[1, [0, 35]] = 0.0  # half on -175, half on +175 degrees -> 180, not 0
    logits[2, [9, 11]] = 0.0  # -85 and -65 degrees -> -75
    got = np.asarray(torsion_circular_mean(jnp.asarray(logits)))
    np.testing.assert_allclose(got[0], centers[7], atol=1e-5)
    assert abs(abs(got[1]) - math.pi) < 1e-5
    np.testing.assert_allclose(got[2], np.deg2rad(-75.0), atol=1e-5)


def test_uniform_logits_give_log_bins_loss(eval_loss, tiny_params, batch):
    """Zeroed head weights give uniform distributions: CE = log(65) / log(36) exactly."""
    params = dict(tiny_params)
    params["distogram_head"] = jax.tree_util.tree_map(jnp.zeros_like, params["distogram_head"])
    params["torsion_head"] = jax.tree_util.tree_map(jnp.zeros_like, params["torsion_head"])
    total, aux = eval_loss(params, batch)
    np.testing.assert_allclose(aux["distogram_loss"], math.log(65), rtol=1e-5)
    np.testing.assert_allclose(aux["torsion_loss"], math.log(36), rtol=1e-5)
    np.testing.assert_allclose(float(total), math.log(65) + math.log(36), rtol=1e-5)
    assert aux["loss_per_example"].shape == (4,)


def test_loss_ignores_masked_targets_and_matches_hand_ce(eval_loss, tiny_params, batch):
    _, aux = eval_loss(tiny_params, batch)
    noisy = dict(batch)
    noisy["cb_dist"] = np.where(batch["pair_mask"] > 0, batch["cb_dist"], 1e6).astype(np.float32)
    noisy["torsions"] = np.where(batch["torsion_mask"] > 0, batch["torsions"], np.nan).astype(np.float32)
    _, aux2 = eval_loss(tiny_params, noisy)
    for k in ("distogram_loss", "phi_loss", "psi_loss"):
        np.testing.assert_allclose(aux2[k], aux[k], rtol=1e-6)
    # Hand cross-entropy for example 1 (the padded one) from the logits, in numpy.
    logits = np.asarray(aux["outputs"]["dist_logits"][1], np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    labels = rc.distance_to_bin(batch["cb_dist"][1])
    ri = batch["residue_index"][1]
    mask = batch["pair_mask"][1] * (np.abs(ri[:, None] - ri[None, :]) >= 1)
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(aux["distogram_loss"][1]), (nll * mask).sum() / mask.sum(), rtol=1e-5)
    assert batch["seq_mask"][1].sum() < CROP  # the hand-checked example does carry padding


def test_padding_does_not_change_real_residue_outputs(apply_f32, tiny_params, testdata):
    """The same crop padded to a larger size gives the same logits on its real residues."""
    p = load_chains(str(testdata), 4)[2]
    # a: exactly the 18 real residues, no padding at all; b: the same residues padded.
    a = {k: v[None] for k, v in example_from_protein(p, 18, 5, 0, max_residues=18).items()}
    b = {k: v[None] for k, v in example_from_protein(p, CROP + 8, 5, 0, max_residues=18).items()}
    assert a["seq_mask"].sum() == 18 == b["seq_mask"].sum() and b["seq_mask"].shape[1] == CROP + 8
    oa, ob = apply_f32(tiny_params, a), apply_f32(tiny_params, b)
    np.testing.assert_allclose(ob["phi_logits"][0, :18], oa["phi_logits"][0, :18], atol=2e-5)
    np.testing.assert_allclose(ob["dist_logits"][0, :18, :18], oa["dist_logits"][0, :18, :18], atol=2e-5)


def _walk_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for j in (v if isinstance(v, (list, tuple)) else [v]):
                if hasattr(j, "jaxpr") and hasattr(j.jaxpr, "eqns"):
                    yield from _walk_eqns(j.jaxpr)
                elif hasattr(j, "eqns"):
                    yield from _walk_eqns(j)


def _is_convolution(e) -> bool:
    """XLA's convolution or foldnet's CPU convolution kernel (foldnet/model/cpu_kernels.py)."""
    return e.primitive.name == "conv_general_dilated" or (
        e.primitive.name == "ffi_call" and e.params.get("target_name") == "foldnet_conv2d_fwd")


@pytest.mark.parametrize("dtype,conv_dtype", [("bfloat16", jnp.bfloat16), ("float32", jnp.float32)])
def test_precision_policy_dtypes_in_the_jaxpr(batch, dtype, conv_dtype, monkeypatch):
    from foldnet.model import precision

    # The accelerator policy (bf16 convolutions); on CPU "bfloat16" computes in f32 (below).
    monkeypatch.setattr(precision, "BF16_COMPUTE_BACKENDS", {jax.default_backend()})
    cfg = dataclasses.replace(PRESETS["tiny"], dtype=dtype)
    model = build_model(cfg)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))["params"]
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
    jaxpr = jax.make_jaxpr(lambda p, b: model.apply({"params": p}, b, train=False))(params, batch)
    eqns = list(_walk_eqns(jaxpr.jaxpr))
    # f32 2D convolutions on CPU run as foldnet's kernels (custom calls, f32 only)
    convs = [e for e in eqns if _is_convolution(e)]
    assert len(convs) == 2 * (cfg.blocks_1d + cfg.blocks_2d)
    for e in convs:
        assert [v.aval.dtype for v in e.invars[:2]] == [conv_dtype, conv_dtype]
        assert e.outvars[0].aval.dtype == conv_dtype
    # LayerNorm statistics in f32: every mean/variance reduction over channels is f32, and so is
    # the input of foldnet's CPU norm kernel, which takes the LayerNorms whose channel count is a
    # multiple of the CPU's vector width (8 floats with AVX2: all of this preset's; 16 with AVX-512).
    reductions = [e for e in eqns if e.primitive.name == "reduce_sum"]
    norm_kernels = [e for e in eqns if e.primitive.name == "ffi_call"
                    and e.params.get("target_name") == "foldnet_norm_elu_fwd"]
    assert reductions or norm_kernels
    assert all(e.invars[0].aval.dtype == jnp.float32 for e in reductions + norm_kernels)
    # Head logits: f32 matmuls producing 65 / 36 bins.
    heads = [e for e in eqns if e.primitive.name == "dot_general"
             and e.outvars[0].aval.shape[-1] in (rc.NUM_DIST_BINS, rc.NUM_TORSION_BINS)]
    assert len(heads) == 3 and all(e.outvars[0].aval.dtype == jnp.float32 for e in heads)
    outs = jax.eval_shape(lambda p, b: model.apply({"params": p}, b, train=False), params, batch)
    assert all(v.dtype == jnp.float32 for v in outs.values())


def test_bfloat16_policy_computes_in_float32_on_cpu(batch):
    from foldnet.model import get_policy

    assert get_policy("bfloat16", backend="cpu").compute_dtype == jnp.float32
    assert get_policy("bfloat16", backend="gpu").compute_dtype == jnp.bfloat16
    assert get_policy("bfloat16", backend="tpu").compute_dtype == jnp.bfloat16
    if jax.default_backend() == "cpu":
        cfg = dataclasses.replace(PRESETS["tiny"], dtype="bfloat16")
        model = build_model(cfg)
        params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))["params"]
        jaxpr = jax.make_jaxpr(lambda p, b: model.apply({"params": p}, b, train=False))(params, batch)
        convs = [e for e in _walk_eqns(jaxpr.jaxpr) if _is_convolution(e)]
        assert len(convs) == 2 * (cfg.blocks_1d + cfg.blocks_2d)
        assert all(v.aval.dtype == jnp.float32 for e in convs for v in e.invars)


def test_bottleneck_2d_trunk_hand_count_symmetry_and_padding(batch, testdata):
    """AlphaFold-CASP13's bottleneck blocks: parameter count by hand, a symmetric distogram,
    and outputs on real residues independent of the padding (the k x k input is masked)."""
    plain = PRESETS["tiny"]
    cfg = dataclasses.replace(plain, dtype="float32", bottleneck_2d=4)  # tiny: C2 = 8, 2 blocks
    c2, b, ln = 8, 4, (lambda c: 2 * c)
    plain_block = 2 * ln(c2) + 2 * (9 * c2 * c2 + c2)
    bottleneck_block = ln(c2) + (c2 * b + b) + ln(b) + (9 * b * b + b) + ln(b) + (b * c2 + c2)
    assert _param_count(cfg, batch) - _param_count(plain, batch) == 2 * (bottleneck_block - plain_block)
    with pytest.raises(ValueError, match="bottleneck_2d"):
        dataclasses.replace(plain, bottleneck_2d=-1)

    from foldnet.train.state import init_params

    model = build_model(cfg)
    params = init_params(model, jax.random.key(0, impl="rbg"), batch)
    params = perturbed(params)  # zero biases and LayerNorm shifts would hide an unmasked padding path
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False), compiler_options=FAST_COMPILE)
    d = np.asarray(apply(params, batch)["dist_logits"])
    np.testing.assert_array_equal(d, np.swapaxes(d, 1, 2))
    p = load_chains(str(testdata), 4)[2]
    a = {k: v[None] for k, v in example_from_protein(p, 18, 5, 0, max_residues=18).items()}
    bb = {k: v[None] for k, v in example_from_protein(p, CROP + 8, 5, 0, max_residues=18).items()}
    oa, ob = apply(params, a), apply(params, bb)
    # Different shapes run different convolution tilings: equal to float rounding (a
    # 4-channel LayerNorm amplifies it a little) ...
    np.testing.assert_allclose(ob["dist_logits"][0, :18, :18], oa["dist_logits"][0, :18, :18], atol=1e-4)
    # ... and garbage in the padding changes nothing at all on the real residues.
    rng = np.random.default_rng(0)
    junk = dict(bb, aatype=bb["aatype"].copy(), profile=bb["profile"].copy())
    junk["aatype"][0, 18:] = rng.integers(0, 20, CROP + 8 - 18)
    junk["profile"][0, 18:] = rng.random((CROP + 8 - 18, bb["profile"].shape[-1]))
    oj = apply(params, junk)
    np.testing.assert_array_equal(np.asarray(oj["dist_logits"])[0, :18, :18], np.asarray(ob["dist_logits"])[0, :18, :18])


def test_bottleneck_block_is_residual():
    """With its up-projection zeroed a bottleneck block is the (masked) identity."""
    from foldnet.model import get_policy
    from foldnet.model.layers import BottleneckBlock

    block = BottleneckBlock(6, 3, (3, 3), 2, 0.0, get_policy("float32"))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 5, 6))
    mask = jnp.ones((1, 5, 5, 1)).at[:, 4].set(0.0).at[:, :, 4].set(0.0)
    params = block.init(jax.random.PRNGKey(0), x, mask, train=False)["params"]
    assert params["down"]["kernel"].shape == (6, 3) and params["conv"]["kernel"].shape == (3, 3, 3, 3)
    assert params["up"]["kernel"].shape == (3, 6)
    y = block.apply({"params": params}, x, mask, train=False)
    assert not np.allclose(y, x * mask)
    zeroed = jax.tree_util.tree_map(jnp.zeros_like, params["up"])
    y0 = block.apply({"params": {**params, "up": zeroed}}, x, mask, train=False)
    np.testing.assert_array_equal(np.asarray(y0), np.asarray(x * mask))


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5])
def test_dropout_multiplier_rate_scale_and_determinism(rate):
    """One random byte per element: drop probability round(256 rate) / 256, kept elements
    scaled so the mean multiplier is 1, the same key gives the same mask."""
    t = round(256 * rate)
    key = jax.random.PRNGKey(3)
    m = np.asarray(layers.dropout_multiplier(key, rate, (4, 64, 64, 32)))
    n = m.size
    dropped = np.mean(m == 0)
    p = t / 256
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)  # binomial, 5 sigma
    np.testing.assert_allclose(np.unique(m[m > 0]), [256 / (256 - t)], rtol=1e-7)
    assert abs(m.mean() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)
    np.testing.assert_array_equal(m, np.asarray(layers.dropout_multiplier(key, rate, (4, 64, 64, 32))))
    other = np.asarray(layers.dropout_multiplier(jax.random.PRNGKey(4), rate, (4, 64, 64, 32)))
    assert np.mean((other == 0) != (m == 0)) > p  # a different key: a different mask
    # odd sizes (not a multiple of the 4 bytes of a word) and the per-channel layout
    odd = np.asarray(layers.dropout_multiplier(key, rate, (3, 5, 7)))
    assert odd.shape == (3, 5, 7) and set(np.unique(odd)) <= {0.0, np.float32(256 / (256 - t))}
    # neighbouring channels are not correlated (the four bytes of a word are independent)
    d = (m == 0).reshape(-1, 32)
    both = np.mean(d[:, 0::2] & d[:, 1::2])
    assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / (n / 2))


def test_dropout_module_rejects_rates_that_round_to_nothing_and_is_identity_in_eval():
    x = jnp.ones((2, 8, 16))
    mod = layers.Dropout(0.001)
    with pytest.raises(ValueError, match="rounds to 0"):
        mod.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    np.testing.assert_array_equal(layers.Dropout(0.3).apply({}, x, deterministic=True), x)
    y = layers.Dropout(0.3).apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    assert 0.2 < float(jnp.mean(y == 0)) < 0.4
