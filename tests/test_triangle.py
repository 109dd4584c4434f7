"""Triangle multiplicative updates (foldnet.model.triangle): the product against explicit loops,
identity at init, equivariance under a permutation of the residues, the parameter count by
hand, padding independence inside the whole network, and the config's checks."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foldnet.model import PRESETS, ModelConfig, build_model, count_params, get_policy
from foldnet.model.triangle import TriangleBlock, TriangleMultiplication, triangle_product
from model_fixtures import FAST_COMPILE, example_from_protein, load_chains, make_batch, perturbed


def test_triangle_product_matches_explicit_sums():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 2, 5, 5, 3)).astype(np.float32)
    out = np.asarray(triangle_product(jnp.asarray(a), jnp.asarray(b), True))
    inc = np.asarray(triangle_product(jnp.asarray(a), jnp.asarray(b), False))
    want_out = np.zeros_like(a)
    want_in = np.zeros_like(a)
    for n in range(2):
        for i in range(5):
            for j in range(5):
                for k in range(5):
                    want_out[n, i, j] += a[n, i, k] * b[n, j, k]
                    want_in[n, i, j] += a[n, k, i] * b[n, k, j]
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inc, want_in, rtol=1e-5, atol=1e-5)


def test_new_block_is_the_identity_and_learns():
    """At init the output projection is zero: the block returns its (masked) input exactly, and
    the loss still has a gradient for that projection, so the block can leave the identity."""
    block = TriangleBlock(4, 0.0, get_policy("float32"))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 6, 6, 8))
    mask = jnp.ones((1, 6, 6, 1)).at[:, 5].set(0.0).at[:, :, 5].set(0.0)
    params = block.init(jax.random.PRNGKey(0), x, mask, train=False)["params"]
    y = block.apply({"params": params}, x, mask, train=False)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x * mask))
    g = jax.grad(lambda p: jnp.sum(block.apply({"params": p}, x, mask, train=False) ** 3))(params)
    assert np.abs(np.asarray(g["outgoing"]["out"]["kernel"])).max() > 1e-3
    assert np.abs(np.asarray(g["incoming"]["out"]["kernel"])).max() > 1e-3
    y2 = block.apply({"params": perturbed(params)}, x, mask, train=False)
    assert np.abs(np.asarray(y2 - x * mask)).max() > 0.1


@pytest.mark.parametrize("outgoing", [True, False])
def test_update_is_equivariant_to_permuting_residues(outgoing):
    """Relabelling the residues by a permutation relabels the output the same way: the sum over
    the third residue k has no order."""
    layer = TriangleMultiplication(3, outgoing, 0.0, get_policy("float32"))
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 7, 7, 6))
    mask = jnp.ones((1, 7, 7, 1))
    params = perturbed(layer.init(jax.random.PRNGKey(0), x, mask, train=False)["params"])
    perm = np.random.default_rng(1).permutation(7)
    y = np.asarray(layer.apply({"params": params}, x, mask, train=False))
    yp = np.asarray(layer.apply({"params": params}, x[:, perm][:, :, perm], mask, train=False))
    np.testing.assert_allclose(yp, y[:, perm][:, :, perm], rtol=1e-5, atol=1e-5)


def test_trunk_with_triangle_blocks_count_and_padding(testdata):
    plain = dataclasses.replace(PRESETS["tiny"], dtype="float32")  # C2 = 8, 2 blocks
    cfg = dataclasses.replace(plain, triangle_every=1, triangle_channels=4)
    batch = make_batch(testdata, 2, 24, seed=1)
    count = lambda c: count_params(jax.eval_shape(  # noqa: E731
        lambda: build_model(c).init(jax.random.PRNGKey(0), batch, train=False))["params"])
    c2, c = 8, 4
    layer = 2 * c2 + (c2 * 4 * c + 4 * c) + 2 * c + (c2 * c2 + c2) + (c * c2 + c2)
    assert count(cfg) - count(plain) == 2 * 2 * layer  # a block after each of the 2 residual blocks

    from foldnet.train.state import init_params

    model = build_model(cfg)
    params = init_params(model, jax.random.key(0, impl="rbg"), batch)
    assert set(params["trunk_2d"]) >= {"triangle_0", "triangle_1"}
    params = perturbed(params)
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False), compiler_options=FAST_COMPILE)
    d = np.asarray(apply(params, batch)["dist_logits"])
    np.testing.assert_array_equal(d, np.swapaxes(d, 1, 2))
    p = load_chains(str(testdata), 4)[2]
    a = {k: v[None] for k, v in example_from_protein(p, 18, 5, 0, max_residues=18).items()}
    b = {k: v[None] for k, v in example_from_protein(p, 32, 5, 0, max_residues=18).items()}
    oa, ob = apply(params, a), apply(params, b)
    np.testing.assert_allclose(ob["dist_logits"][0, :18, :18], oa["dist_logits"][0, :18, :18], atol=1e-4)
    # garbage in the padding changes nothing on the real residues
    rng = np.random.default_rng(0)
    junk = dict(b, aatype=b["aatype"].copy(), profile=b["profile"].copy())
    junk["aatype"][0, 18:] = rng.integers(0, 20, 32 - 18)
    junk["profile"][0, 18:] = rng.random((32 - 18, b["profile"].shape[-1]))
    np.testing.assert_array_equal(np.asarray(apply(params, junk)["dist_logits"])[0, :18, :18],
                                  np.asarray(ob["dist_logits"])[0, :18, :18])


def test_triangle_after_places_and_names_blocks(testdata):
    """``triangle_after`` blocks follow the ``triangle_every`` ones in naming, not in placement:
    every=2 plus after=(0,) is the trunk of every=1 with triangle_0 and triangle_1 swapped, and
    its new triangle_1 at init leaves the every=2 trunk's function unchanged (a grown model)."""
    plain = dataclasses.replace(PRESETS["tiny"], dtype="float32", triangle_channels=4)  # 2 blocks
    every2 = dataclasses.replace(plain, triangle_every=2)
    grown = dataclasses.replace(every2, triangle_after=(0,))
    every1 = dataclasses.replace(plain, triangle_every=1)
    assert grown.triangle_positions() == (1, 0) and every1.triangle_positions() == (0, 1)
    batch = make_batch(testdata, 2, 24, seed=1)

    def run(cfg, params):
        return np.asarray(build_model(cfg).apply({"params": params}, batch, train=False)["dist_logits"])

    p_grown = build_model(grown).init(jax.random.PRNGKey(0), batch, train=False)["params"]
    p_every2 = perturbed(p_grown)
    p_every2["trunk_2d"] = {k: v for k, v in p_every2["trunk_2d"].items() if k != "triangle_1"}
    p_grown = dict(p_every2, trunk_2d=dict(p_every2["trunk_2d"], triangle_1=p_grown["trunk_2d"]["triangle_1"]))
    np.testing.assert_allclose(run(grown, p_grown), run(every2, p_every2), rtol=0, atol=1e-5)

    p_grown = perturbed(p_grown, seed=4)
    t = p_grown["trunk_2d"]
    p_swapped = dict(p_grown, trunk_2d=dict(t, triangle_0=t["triangle_1"], triangle_1=t["triangle_0"]))
    out = run(grown, p_grown)
    np.testing.assert_allclose(run(every1, p_swapped), out, rtol=0, atol=1e-5)
    assert np.abs(run(every1, p_grown) - out).max() > 1e-3  # the order of the two blocks matters


def test_config_checks():
    with pytest.raises(ValueError, match="triangle_every"):
        ModelConfig(triangle_every=-1)
    with pytest.raises(ValueError, match="triangle_channels"):
        ModelConfig(triangle_every=2, triangle_channels=0)
    with pytest.raises(ValueError, match="repeats a block"):
        ModelConfig(blocks_2d=6, triangle_every=3, triangle_after=(4, 2))
    with pytest.raises(ValueError, match="block 6 is not one of the 6"):
        ModelConfig(blocks_2d=6, triangle_after=(6,))
    assert ModelConfig(blocks_2d=6, triangle_every=3, triangle_after=[4, 0]).triangle_positions() == (2, 5, 4, 0)
