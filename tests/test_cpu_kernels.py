"""foldnet's CPU kernels (foldnet/model/cpu_kernels.{cc,py}) equal what they replace.

Each kernel is checked against the XLA computation it stands in for -- values and
gradients of ``lax.conv_general_dilated``, of the LayerNorm -> ELU -> mask composition
and of the flax ``ResidualBlock``, and the fused dense -> cross-entropy against float64 --
on shapes that reach every code path: channel
counts below, at and above the vector width and not multiples of it, image widths that
are not multiples of the register tile, dilations larger than the image, 1x1, 5x5 and
3x5 kernels, masked positions, dropout; the Winograd and the direct forward kernel both
against float64. The build itself: cached by source, written
atomically, and a failed build leaves XLA's operations in place with a warning.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from foldnet.model import conv as fconv
from foldnet.model import cpu_kernels, layers
from foldnet.model.precision import get_policy

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available() and os.environ.get("CI") != "true",
    reason="foldnet's CPU kernels could not be built here (no C++ compiler?)",
)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def test_kernels_build_and_register():
    # In CI a missing compiler must fail loudly, not fall back to the slow path.
    assert cpu_kernels.available()
    assert cpu_kernels.library_path().exists()
    assert not list(cpu_kernels.library_path().parent.glob("*.tmp.so"))


def _lax_conv(x, k, dilation):
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape,kernel,dilation", [
    ((2, 18, 18, 6), (3, 3, 6, 7), (1, 1)),        # channels not a multiple of the vector width
    ((2, 16, 20, 32), (3, 3, 32, 32), (2, 2)),     # foldnet's 2D trunk
    ((1, 13, 29, 16), (3, 3, 16, 48), (8, 8)),     # dilation reaching past the image
    ((2, 9, 11, 32), (5, 5, 32, 16), (1, 1)),      # 5x5
    ((1, 10, 7, 3), (1, 1, 3, 16), (1, 1)),        # 1x1
    ((1, 12, 14, 8), (3, 5, 8, 16), (2, 1)),       # non-square kernel and dilation
])
def test_conv2d_values_and_gradients_equal_lax(shape, kernel, dilation):
    k = jax.random.split(jax.random.PRNGKey(sum(shape)), 3)
    x = jax.random.normal(k[0], shape)
    w = jax.random.normal(k[1], kernel) / np.sqrt(kernel[0] * kernel[1] * kernel[2])
    g = jax.random.normal(k[2], shape[:3] + (kernel[3],))

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, dilation)) * g)

    ours = jax.jit(jax.value_and_grad(loss(cpu_kernels.conv2d), argnums=(0, 1)))(x, w)
    ref = jax.value_and_grad(loss(_lax_conv), argnums=(0, 1))(x, w)
    assert _rel(cpu_kernels.conv2d(x, w, dilation), _lax_conv(x, w, dilation)) < 1e-5
    assert _rel(ours[0], ref[0]) < 1e-5
    assert _rel(ours[1][0], ref[1][0]) < 1e-5
    assert _rel(ours[1][1], ref[1][1]) < 1e-5


def test_conv_epilogue_and_bias_gradient():
    k = jax.random.split(jax.random.PRNGKey(3), 5)
    x = jax.random.normal(k[0], (2, 12, 12, 32))
    w = 0.1 * jax.random.normal(k[1], (3, 3, 32, 32))
    b = jax.random.normal(k[2], (32,))
    res = jax.random.normal(k[3], (2, 12, 12, 32))
    mask = (jax.random.uniform(k[4], (2, 12, 12, 1)) > 0.3).astype(jnp.float32)
    want = (_lax_conv(x, w, (2, 2)) + b + res) * mask
    got = cpu_kernels._ffi_conv(x, w, (2, 2), bias=b, res=res, mask=mask)
    assert _rel(got, want) < 1e-6
    dk, db = cpu_kernels._ffi_filter_grad(x, res, w.shape, (2, 2))
    assert _rel(db, res.sum((0, 1, 2))) < 1e-6
    assert _rel(dk, jax.vjp(lambda w: _lax_conv(x, w, (2, 2)), w)[1](res)[0]) < 1e-5


def _conv_f64(x, w, dilation, bias, res, mask):
    """The 'SAME' dilated convolution (+ bias + res) * mask in float64 numpy (the reference)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    kh, kw = w.shape[:2]
    ph, pw = dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    h, wd = x.shape[1:3]
    y = sum(np.einsum("bhwc,co->bhwo", xp[:, i * dilation[0]:i * dilation[0] + h, j * dilation[1]:j * dilation[1] + wd],
                      w[i, j]) for i in range(kh) for j in range(kw))
    return (y + np.asarray(bias, np.float64) + np.asarray(res, np.float64)) * np.asarray(mask, np.float64)


@pytest.mark.parametrize("shape,cout,dilation", [
    ((2, 16, 20, 32), 32, (2, 2)),   # foldnet's 2D trunk
    ((1, 13, 29, 32), 64, (4, 1)),   # odd sizes: tiles whose second row / column is dropped
    ((1, 7, 5, 64), 32, (8, 8)),     # dilation past the image: the transform reads zeros
    ((3, 1, 1, 32), 32, (1, 1)),     # a single pixel
])
def test_winograd_forward_equals_direct_and_float64(monkeypatch, shape, cout, dilation):
    # 3x3 convolutions with full vector channels run Winograd F(2x2, 3x3); its transforms
    # round differently from the direct sum, but both stay within a few ulps of float64.
    k = jax.random.split(jax.random.PRNGKey(shape[1] * 7 + cout), 5)
    x = jax.random.normal(k[0], shape)
    w = jax.random.normal(k[1], (3, 3, shape[3], cout)) / np.sqrt(9 * shape[3])
    b = jax.random.normal(k[2], (cout,))
    res = jax.random.normal(k[3], shape[:3] + (cout,))
    mask = (jax.random.uniform(k[4], shape[:3] + (1,)) > 0.3).astype(jnp.float32)
    want = _conv_f64(x, w, dilation, b, res, mask)
    got = {}
    for algo in (True, False):
        monkeypatch.setattr(cpu_kernels, "WINOGRAD", algo)
        got[algo] = np.asarray(cpu_kernels._ffi_conv(x, w, dilation, bias=b, res=res, mask=mask))
        assert _rel(got[algo], want) < 2e-6
        # and the input gradient, which is the forward kernel with the flipped filter
        g = np.asarray(res)
        dx = cpu_kernels._input_grad(jnp.asarray(g), w, dilation)
        want_dx = _conv_f64(g, np.flip(np.asarray(w), (0, 1)).transpose(0, 1, 3, 2), dilation, 0.0, 0.0, 1.0)
        assert _rel(dx, want_dx) < 2e-6
    if shape[1] > 1:
        assert not np.array_equal(got[True], got[False])  # two different algorithms ran


def test_filter_gradient_is_deterministic():
    # Work is split over threads, but the partial sums are added in a fixed order.
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 64, 64, 32))
    g = jax.random.normal(jax.random.PRNGKey(1), (4, 64, 64, 32))
    f = jax.jit(lambda x, g: cpu_kernels._ffi_filter_grad(x, g, (3, 3, 32, 32), (4, 4)))
    first = np.asarray(f(x, g)[0])
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(f(x, g)[0]), first)


def test_conv_under_vmap_equals_per_example():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 10, 10, 8))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 8, 16))
    got = jax.vmap(lambda x, w: cpu_kernels.conv2d(x, w, (2, 2)))(x, w)
    for i in range(3):
        assert _rel(got[i], _lax_conv(x[i], w[i], (2, 2))) < 1e-6


def test_conv_general_dilated_routes_only_the_covered_case():
    x = jnp.ones((1, 8, 8, 16))
    w = jnp.ones((3, 3, 16, 16))
    dn = ("NHWC", "HWIO", "NHWC")

    def uses_kernel(**kw):
        args = dict(window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 2), dimension_numbers=dn)
        args.update(kw)
        xx, ww = args.pop("x", x), args.pop("w", w)
        return "foldnet_conv2d_fwd" in str(jax.make_jaxpr(lambda a, b: fconv.conv_general_dilated(a, b, **args))(xx, ww))

    assert uses_kernel()
    assert uses_kernel(padding=((2, 2), (2, 2)))          # 'SAME' written out
    assert not uses_kernel(padding="VALID")
    assert not uses_kernel(padding=((1, 1), (1, 1)))      # not 'SAME' for dilation 2
    assert not uses_kernel(window_strides=(2, 2))
    assert not uses_kernel(x=x.astype(jnp.bfloat16), w=w.astype(jnp.bfloat16))
    assert not uses_kernel(w=jnp.ones((2, 2, 16, 16)))    # even kernel
    assert not uses_kernel(dimension_numbers=("NCHW", "OIHW", "NCHW"), x=jnp.ones((1, 16, 8, 8)),
                           w=jnp.ones((16, 16, 3, 3)))


def _composed_norm_elu(x, s, b, mask):
    mean = x.mean(-1, keepdims=True)
    var = jnp.maximum(0.0, (x * x).mean(-1, keepdims=True) - mean**2)
    return jax.nn.elu((x - mean) * lax.rsqrt(var + 1e-5) * s + b) * mask


@pytest.mark.parametrize("channels,scale", [(32, 1.0), (64, 30.0), (16, 0.01)])
def test_norm_elu_values_and_gradients_equal_composition(channels, scale):
    # scale 30 drives the ELU argument to -60: the kernel's expm1 over its whole range.
    k = jax.random.split(jax.random.PRNGKey(channels), 5)
    x = 1.5 + 2.0 * jax.random.normal(k[0], (2, 9, 11, channels))
    s = scale * (1.0 + 0.3 * jax.random.normal(k[1], (channels,)))
    b = 0.5 * jax.random.normal(k[2], (channels,))
    mask = (jax.random.uniform(k[3], (2, 9, 11, 1)) > 0.2).astype(jnp.float32)
    g = jax.random.normal(k[4], x.shape)
    assert cpu_kernels.norm_elu_supported(channels)
    ours = lambda x, s, b: cpu_kernels.norm_elu_mask(x, s, b, mask, 1e-5)  # noqa: E731
    ref = lambda x, s, b: _composed_norm_elu(x, s, b, mask)  # noqa: E731
    y = ours(x, s, b)
    assert float(jnp.min(y)) < -0.99 if scale > 10 else True
    assert float(jnp.max(jnp.abs(y - ref(x, s, b)))) < 2e-6 * max(1.0, scale)
    a = jax.value_and_grad(lambda *a: jnp.sum(ours(*a) * g), argnums=(0, 1, 2))(x, s, b)
    r = jax.value_and_grad(lambda *a: jnp.sum(ref(*a) * g), argnums=(0, 1, 2))(x, s, b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(r)):
        assert _rel(u, v) < 1e-5


def test_norm_without_elu_equals_masked_layernorm():
    k = jax.random.split(jax.random.PRNGKey(8), 5)
    x = 2.0 * jax.random.normal(k[0], (3, 17, 64)) - 1.0
    s, b = 1.0 + jax.random.normal(k[1], (64,)), jax.random.normal(k[2], (64,))
    mask = (jax.random.uniform(k[3], (3, 17, 1)) > 0.3).astype(jnp.float32)
    g = jax.random.normal(k[4], x.shape)

    def ref(x, s, b):
        mean = x.mean(-1, keepdims=True)
        var = jnp.maximum(0.0, (x * x).mean(-1, keepdims=True) - mean**2)
        return ((x - mean) * lax.rsqrt(var + 1e-5) * s + b) * mask

    ours = lambda x, s, b: cpu_kernels.norm_elu_mask(x, s, b, mask, 1e-5, False)  # noqa: E731
    assert float(jnp.max(jnp.abs(ours(x, s, b) - ref(x, s, b)))) < 2e-6
    a = jax.grad(lambda *a: jnp.sum(ours(*a) * g), argnums=(0, 1, 2))(x, s, b)
    r = jax.grad(lambda *a: jnp.sum(ref(*a) * g), argnums=(0, 1, 2))(x, s, b)
    for u, v in zip(a, r):
        assert _rel(u, v) < 1e-5


def test_norm_elu_backward_adds_the_residual_cotangent():
    k = jax.random.split(jax.random.PRNGKey(7), 4)
    x = jax.random.normal(k[0], (1, 6, 6, 32))
    s, b = jnp.ones(32), jnp.zeros(32)
    mask = jnp.ones((1, 6, 6, 1)).at[0, 0, :3].set(0.0)
    g, acc = jax.random.normal(k[1], x.shape), jax.random.normal(k[2], x.shape)
    dx0 = cpu_kernels._ffi_norm_elu_grad(x, s, b, mask, g, None, 1e-5)[0]
    dx1 = cpu_kernels._ffi_norm_elu_grad(x, s, b, mask, g, acc, 1e-5)[0]
    np.testing.assert_allclose(dx1, dx0 + acc, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(dx0)[0, 0, :3], 0.0)  # masked: no gradient through the norm


@pytest.fixture
def xla_only(monkeypatch):
    def switch():
        monkeypatch.setattr(layers, "USE_CPU_KERNELS", False)
        monkeypatch.setattr(fconv, "USE_CPU_KERNELS", False)

    return switch


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_residual_block_equals_the_composition(xla_only, dropout):
    block = layers.ResidualBlock(32, (3, 3), 2, dropout, get_policy("float32"))
    k = jax.random.split(jax.random.PRNGKey(11), 3)
    x = jax.random.normal(k[0], (2, 14, 14, 32))
    mask = jnp.ones((2, 14, 14, 1)).at[1, 10:].set(0.0).at[1, :, 10:].set(0.0)  # one padded example
    x = x * mask
    g = jax.random.normal(k[1], x.shape)
    rngs = {"params": jax.random.PRNGKey(1), "dropout": jax.random.PRNGKey(2)}

    def run():
        v = block.init(rngs, x, mask, train=False)
        leaves, tree = jax.tree.flatten(v)
        # every parameter away from its initial value (zero biases hide unmasked paths)
        keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
        pv = jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(kk, a.shape) for a, kk in zip(leaves, keys)])
        f = lambda p, x: jnp.sum(block.apply(p, x, mask, train=True, rngs={"dropout": rngs["dropout"]}) * g)  # noqa: E731
        jaxpr = str(jax.make_jaxpr(f)(pv, x))
        return v, jax.value_and_grad(f, argnums=(0, 1))(pv, x), jaxpr

    init_new, new, jaxpr_new = run()
    xla_only()
    init_old, old, jaxpr_old = run()
    assert "foldnet_conv2d_fwd" in jaxpr_new and "foldnet_" not in jaxpr_old
    # same parameter tree and the same initial values
    assert jax.tree.structure(init_new) == jax.tree.structure(init_old)
    for u, v in zip(jax.tree.leaves(init_new), jax.tree.leaves(init_old)):
        np.testing.assert_array_equal(u, v)
    assert _rel(new[0], old[0]) < 1e-5
    for path, u, v in zip(jax.tree_util.tree_leaves_with_path(old[1]), jax.tree.leaves(new[1]), jax.tree.leaves(old[1])):
        assert _rel(u, v) < 1e-5, jax.tree_util.keystr(path[0])


def test_kernels_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("FOLDNET_CPU_KERNELS", "0")
    assert not cpu_kernels.available()
    x, w = jnp.ones((1, 8, 8, 16)), jnp.ones((3, 3, 16, 16))
    jaxpr = str(jax.make_jaxpr(lambda a, b: fconv.conv_general_dilated(
        a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))(x, w))
    assert "foldnet_conv2d_fwd" not in jaxpr and "conv_general_dilated" in jaxpr


def test_failed_build_names_the_source_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("FOLDNET_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with pytest.raises(RuntimeError, match="cpu_kernels.cc"):
        cpu_kernels.build()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        cpu_kernels.build()
    assert list(tmp_path.iterdir()) == []


def test_library_is_keyed_by_compiler_and_cache_folder(monkeypatch, tmp_path):
    default = cpu_kernels.library_path()
    monkeypatch.setenv("FOLDNET_KERNEL_CACHE", str(tmp_path))
    assert cpu_kernels.library_path().parent == tmp_path
    assert cpu_kernels.library_path().name == default.name
    monkeypatch.setenv("CXX", "g++-other")
    assert cpu_kernels.library_path().name != default.name


def _dense_ce_f64(x, w, b, labels, mask, g):
    """Per-example sums of mask * cross-entropy of x @ w + b and their gradients, float64."""
    x, w, b, mask, g = (np.asarray(a, np.float64) for a in (x, w, b, mask, g))
    keep = mask > 0
    x = np.where(keep[..., None], x, 0.0)  # masked rows may hold anything
    logits = x @ w + b
    mx = logits.max(-1, keepdims=True)
    lse = mx[..., 0] + np.log(np.exp(logits - mx).sum(-1))
    picked = np.take_along_axis(logits, labels[..., None], -1)[..., 0]
    sums = np.where(keep, mask * (lse - picked), 0.0).sum(-1)
    dl = np.exp(logits - lse[..., None])
    np.put_along_axis(dl, labels[..., None], np.take_along_axis(dl, labels[..., None], -1) - 1.0, -1)
    dl *= np.where(keep, mask, 0.0)[..., None] * g[:, None, None]
    return sums, dl @ w.T, np.einsum("bpc,bpk->ck", x, dl), dl.sum((0, 1))


@pytest.mark.parametrize("channels,bins", [(32, 65), (32, 25), (64, 13), (16, 65)])
def test_dense_ce_values_and_gradients_equal_float64(channels, bins):
    if not cpu_kernels.dense_ce_supported(channels, bins):
        pytest.skip(f"{channels} channels are not a multiple of this machine's vector width")
    rng = np.random.default_rng(bins)
    B, P = 3, 517  # rows per example not a multiple of anything; one example fully masked
    x = rng.normal(size=(B, P, channels)).astype(np.float32)
    w = (0.3 * rng.normal(size=(channels, bins))).astype(np.float32)
    b = rng.normal(size=bins).astype(np.float32)
    labels = rng.integers(0, bins, (B, P)).astype(np.int32)
    mask = (rng.random((B, P)) > 0.3) * rng.uniform(0.5, 1.0, (B, P))  # fractional weights too
    mask[2] = 0.0
    mask = mask.astype(np.float32)
    x[0, mask[0] == 0] = np.nan  # masked rows must not leak, whatever they hold
    x[1, np.flatnonzero(mask[1] == 0)[:3]] = np.inf
    g = np.asarray([1.5, -0.5, 2.0], np.float32)
    want = _dense_ce_f64(x, w, b, labels, mask, g)
    out, vjp = jax.vjp(lambda x, w, b: cpu_kernels.dense_masked_nll(x, w, b, labels, mask), x, w, b)
    dx, dw, db = vjp(g)
    assert out[2] == 0.0 and np.all(np.asarray(dx)[2] == 0.0) and np.all(np.isfinite(dx))
    assert _rel(out, want[0]) < 1e-6
    for got, ref in zip((dx, dw, db), want[1:]):
        assert _rel(got, ref) < 1e-5


def test_dense_ce_rejects_labels_outside_the_bins():
    x = jnp.ones((1, 300, 32))
    labels = jnp.full((1, 300), 65, jnp.int32)
    with pytest.raises(Exception, match="label outside"):
        jax.block_until_ready(cpu_kernels.dense_masked_nll(x, jnp.ones((32, 65)), jnp.zeros(65), labels,
                                                           jnp.ones((1, 300))))


def test_training_loss_takes_the_fused_cross_entropy(testdata):
    import dataclasses

    from foldnet.model import PRESETS, build_model, heads, loss_fn
    from model_fixtures import make_batch

    batch = make_batch(testdata, 2, 24, seed=1)
    model = build_model(dataclasses.replace(PRESETS["base"], dtype="float32"))
    params = model.init(jax.random.PRNGKey(0), batch, train=False)["params"]
    jaxpr = str(jax.make_jaxpr(lambda p: loss_fn(model, p, batch, jax.random.PRNGKey(1), train=True))(params))
    assert "foldnet_dense_ce_fwd" in jaxpr
    # aux["outputs"] still holds the logits, as the network returns them outside the loss
    _, aux = loss_fn(model, params, batch, None, train=False)
    plain = model.apply({"params": params}, batch, train=False)
    assert not isinstance(plain["dist_logits"], heads.DenseLogits)
    assert _rel(aux["outputs"]["dist_logits"], plain["dist_logits"]) < 1e-6


def test_base_network_runs_its_2d_trunk_on_the_kernels(testdata):
    import dataclasses

    from foldnet.model import PRESETS, build_model
    from model_fixtures import make_batch

    batch = make_batch(testdata, 2, 24, seed=1)
    model = build_model(dataclasses.replace(PRESETS["base"], dtype="bfloat16"))  # CPU computes bf16 in f32
    params = model.init(jax.random.PRNGKey(0), batch, train=False)["params"]
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, batch, train=False))(params))
    # one fused block per 2D block: two convolutions and two LayerNorm-ELUs each
    assert jaxpr.count("foldnet_conv2d_fwd") == 2 * PRESETS["base"].blocks_2d
    assert jaxpr.count("foldnet_norm_elu_fwd") >= 2 * PRESETS["base"].blocks_2d


@pytest.mark.parametrize("length", [37, 64])
def test_fold_pair_terms_equal_the_jnp_reference(monkeypatch, length):
    # The folding potential's distogram + clash kernel against potential._pair_terms: energies,
    # gradients in the coordinates and in the predicted distogram (through the knots), on
    # NeRF-built chains (bonded neighbours, clashes) with masked padding residues, an odd packed
    # size (37) and the separation ramp's reduced weights.
    from foldnet.geometry import build_backbone
    from foldnet.structure import FoldConfig, make_potential
    from foldnet.structure import potential as pot

    rng = np.random.default_rng(length)
    real = length - 5
    probs = rng.dirichlet(np.full(65, 0.3), (length, length)).astype(np.float32)
    phi_p = rng.dirichlet(np.ones(36), length).astype(np.float32)
    psi_p = rng.dirichlet(np.ones(36), length).astype(np.float32)
    mask = (np.arange(length) < real).astype(np.float32)
    cfg = FoldConfig()
    tors = jnp.asarray(rng.uniform(-np.pi, np.pi, (4, length, 3)).astype(np.float32)).at[..., 2].set(np.pi)
    coords = jax.vmap(build_backbone)(tors)
    phi, psi = tors[..., 0], tors[..., 1]

    def energies(x, p, kernel, ramp):
        monkeypatch.setattr(pot, "USE_CPU_KERNEL", kernel)
        potential = make_potential(p, phi_p, psi_p, cfg, residue_mask=mask)
        if ramp:
            i, j = pot.packed_pair_indices(length)
            potential = potential._replace(dist_weight=potential.dist_weight * ((j - i) <= 9))
        terms = pot.batched_energy_terms(potential, x, phi, psi, cfg)
        return terms["distogram"], terms["clash"]

    w = jnp.asarray([1.0, -0.5, 2.0, 0.25])
    for ramp in (False, True):
        got, want = [jax.jit(lambda x, p, k=k: energies(x, p, k, ramp))(coords, jnp.asarray(probs))
                     for k in (True, False)]
        assert float(jnp.max(want[1])) > 0  # the random chains clash somewhere
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-3)
        grads = [jax.jit(jax.grad(lambda x, p, k=k: jnp.sum(w * sum(energies(x, p, k, ramp))), argnums=(0, 1)))(
            coords, jnp.asarray(probs)) for k in (True, False)]
        assert _rel(grads[0][0], grads[1][0]) < 1e-4  # coordinates (Gram vs direct distances)
        assert _rel(grads[0][1], grads[1][1]) < 1e-4  # predicted distogram
        assert float(jnp.max(jnp.abs(grads[0][0][:, real:]))) == 0.0  # masked residues feel nothing


def test_folding_descent_runs_the_pair_kernel():
    from foldnet.structure import FoldConfig, descend, make_potential

    rng = np.random.default_rng(0)
    L = 20
    potential = make_potential(rng.dirichlet(np.ones(65), (L, L)).astype(np.float32),
                               rng.dirichlet(np.ones(36), L).astype(np.float32),
                               rng.dirichlet(np.ones(36), L).astype(np.float32), FoldConfig())
    start = jnp.zeros((2, L))
    jaxpr = str(jax.make_jaxpr(lambda p: descend(p, start, start, FoldConfig(num_restarts=2, num_steps=3)))(potential))
    assert "foldnet_pair_terms" in jaxpr

_OTHER_ISA_CHECK = r"""
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from foldnet.model import cpu_kernels as ck
assert ck.available()
rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
k = jax.random.split(jax.random.PRNGKey(0), 4)
x = jax.random.normal(k[0], (2, 13, 19, 32))
w = 0.1 * jax.random.normal(k[1], (3, 3, 32, 32))
g = jax.random.normal(k[2], (2, 13, 19, 32))
conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
b = jax.vjp(conv, x, w)
errs = []
for ck.WINOGRAD in (True, False):  # the Winograd and the direct forward kernel
    a = jax.vjp(lambda x, w: ck.conv2d(x, w, (2, 2)), x, w)
    errs += [rel(a[0], b[0])] + [rel(u, v) for u, v in zip(a[1](g), b[1](g))]
m = (jax.random.uniform(k[3], (2, 13, 19, 1)) > 0.2).astype(jnp.float32)
s, bb = 3.0 * jnp.ones(32), jnp.linspace(-1, 1, 32)
def ref(x, s, bb):
    mu = x.mean(-1, keepdims=True); var = jnp.maximum(0.0, (x * x).mean(-1, keepdims=True) - mu ** 2)
    return jax.nn.elu((x - mu) * lax.rsqrt(var + 1e-5) * s + bb) * m
a = jax.vjp(lambda *t: ck.norm_elu_mask(*t, m, 1e-5), x, s, bb)
b = jax.vjp(ref, x, s, bb)
errs += [rel(a[0], b[0])] + [rel(u, v) for u, v in zip(a[1](g), b[1](g))]
xs, wd, bd = jax.random.normal(k[0], (2, 150, 32)), 0.3 * jax.random.normal(k[1], (32, 65)), jnp.linspace(-1, 1, 65)
lab = jax.random.randint(k[2], (2, 150), 0, 65)
pm = m.reshape(2, -1)[:, :150]
def ce(x, w, b):
    logp = jax.nn.log_softmax(x @ w + b)
    return jnp.sum(-jnp.take_along_axis(logp, lab[..., None], -1)[..., 0] * pm, -1)
a = jax.vjp(lambda *t: ck.dense_masked_nll(*t, lab, pm), xs, wd, bd)
b = jax.vjp(ce, xs, wd, bd)
gb = jnp.asarray([1.0, -2.0])
errs += [rel(a[0], b[0])] + [rel(u, v) for u, v in zip(a[1](gb), b[1](gb))]
print("vector_width", ck._load(), "max_rel_err", max(errs))
"""


@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"), reason="x86 instruction sets")
@pytest.mark.parametrize("march,width", [("x86-64-v3", 8), ("x86-64", 4)])
def test_kernels_built_for_other_instruction_sets(tmp_path, march, width):
    # The AVX2 (8 floats) and SSE2 (4 floats) builds take their own register tiles; a
    # machine without AVX-512 gets one of them from -march=native.
    import subprocess
    import sys

    env = dict(os.environ, FOLDNET_KERNEL_MARCH=march, FOLDNET_KERNEL_CACHE=str(tmp_path), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _OTHER_ISA_CHECK], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    width_seen, err = out.stdout.split()[1], float(out.stdout.split()[3])
    assert int(width_seen) == width
    assert err < 1e-5
