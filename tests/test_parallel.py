"""Data parallelism on 2 simulated CPU devices: shard_map and pmap equal one device.

With plain SGD at learning rate 1 the parameter change of one step *is* the
(global-batch) gradient, so comparing updated parameters compares gradients;
f32 throughout, since bf16 rounding would hide real bugs.
"""

from __future__ import annotations


import jax
import numpy as np
import optax
import pytest

from foldnet.train.parallel import ParallelConfig, make_mesh, parallelize_train_step, resolve
from foldnet.train.state import create_train_state
from model_fixtures import FAST_COMPILE, make_batch, parallel_test_batches, parallel_test_configs, single_device_reference

B, CROP = 4, 16


def _sgd():
    # inject_hyperparams: the step reads the learning rate from the optimiser state.
    return optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)


@pytest.fixture(scope="module")
def batch(testdata):
    return make_batch(testdata, B, CROP, seed=7)


@pytest.fixture(scope="module")
def reference(batch):
    """One single-device SGD step: initial params, gradient (= -update), metrics."""
    assert jax.device_count() == 2, "conftest must give 2 CPU devices"
    model_cfg, optim_cfg = parallel_test_configs()
    model, _, state = create_train_state(model_cfg, optim_cfg, 0, batch)
    init = jax.tree_util.tree_map(lambda x: np.array(x, copy=True), state.params)
    pstep = parallelize_train_step(model, _sgd(), ParallelConfig(mode="none"), compiler_options=FAST_COMPILE)
    state = pstep.replicate(state.replace(opt_state=_sgd().init(state.params)))
    new, metrics = pstep.step(state, pstep.shard_batch(batch))
    grads = jax.tree_util.tree_map(lambda a, b: b - a, pstep.unreplicate(new.params), init)
    evaluated = pstep.eval(pstep.replicate(init), pstep.shard_batch(batch))
    return model, init, grads, metrics, evaluated


def test_mesh_spans_all_devices():
    mesh = make_mesh(ParallelConfig(mode="shard_map"))
    assert mesh.axis_names == ("data",) and mesh.devices.size == 2
    assert make_mesh(ParallelConfig(mode="shard_map", num_devices=1)).devices.size == 1
    with pytest.raises(ValueError, match="num_devices"):
        make_mesh(ParallelConfig(mode="shard_map", num_devices=3))
    with pytest.raises(ValueError, match="mode"):
        ParallelConfig(mode="dp")


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_gradient_and_metrics_equal_single_device(mode, reference, batch):
    model, init, ref_grads, ref_metrics, ev_ref = reference
    model_cfg, optim_cfg = parallel_test_configs()
    _, _, state = create_train_state(model_cfg, optim_cfg, 0, batch)
    pstep = parallelize_train_step(model, _sgd(), ParallelConfig(mode=mode), compiler_options=FAST_COMPILE)
    assert pstep.num_devices == 2
    state = pstep.replicate(state.replace(opt_state=_sgd().init(state.params)))
    new, metrics = pstep.step(state, pstep.shard_batch(batch))
    grads = jax.tree_util.tree_map(lambda a, b: b - a, pstep.unreplicate(new.params), init)
    # The gradient really is non-trivial, and equal to the single-device one.
    assert metrics["grad_norm"] > 0.1
    jax.tree_util.tree_map(lambda g, r: np.testing.assert_allclose(g, r, atol=1e-5, rtol=0), grads, ref_grads)
    for k in ("loss", "distogram_loss", "torsion_loss", "grad_norm", "param_norm", "update_norm"):
        assert metrics[k] == pytest.approx(ref_metrics[k], rel=1e-5, abs=1e-6), k
    assert int(pstep.unreplicate(new.step)) == 1

    # NaN in one example on the second device: the whole global step is skipped on
    # every device, and the id comes back in global-batch order.
    bad = {k: np.array(v, copy=True) for k, v in batch.items()}
    bad["profile"][3, 0, 0] = np.nan
    before = pstep.unreplicate(new.params)
    new2, m2 = pstep.step(new, pstep.shard_batch(bad))
    assert m2["skipped"] == 1.0 and m2["consecutive_skips"] == 1
    np.testing.assert_array_equal(m2["nonfinite_example_ids"], [-1, -1, -1, int(bad["example_id"][3])])
    jax.tree_util.tree_map(np.testing.assert_array_equal, pstep.unreplicate(new2.params), before)

    # The eval step returns per-example outputs over the whole batch, in order.
    ev = pstep.eval(pstep.replicate(init), pstep.shard_batch(batch))
    assert ev["dist_probs"].shape == (B, CROP, CROP, 65)
    np.testing.assert_allclose(ev["loss_per_example"], ev_ref["loss_per_example"], rtol=1e-5)
    np.testing.assert_allclose(ev["phi"], ev_ref["phi"], atol=1e-5)
    assert ev["loss"] == pytest.approx(ev_ref["loss"], rel=1e-5)


def test_adamw_params_after_three_steps_equal_single_device(reference, testdata):
    """The real optimiser (AdamW + clipping) under shard_map vs one device, 3 steps."""
    model, init, *_ = reference
    ref = single_device_reference(str(testdata), 3)
    model_cfg, optim_cfg = parallel_test_configs()
    batches = parallel_test_batches(testdata, 3)
    _, opt, state = create_train_state(model_cfg, optim_cfg, 0, batches[0])
    pstep = parallelize_train_step(model, opt, ParallelConfig(mode="shard_map"), compiler_options=FAST_COMPILE)
    state = pstep.replicate(state)
    for b in batches:
        state, m = pstep.step(state, pstep.shard_batch(b))
    params = pstep.unreplicate(state.params)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(ref["params"]), jax.tree_util.tree_leaves(init)))
    assert moved > 1e-3  # three AdamW steps at lr 1e-2 really move the parameters
    assert m["loss"] == pytest.approx(ref["losses"][-1], rel=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), params, ref["params"])


def test_shard_batch_rejects_indivisible_batch(reference, batch):
    model, *_ = reference
    pstep = parallelize_train_step(model, _sgd(), ParallelConfig(mode="shard_map"), compiler_options=FAST_COMPILE)
    odd = {k: v[:3] for k, v in batch.items()}
    with pytest.raises(ValueError, match="not divisible"):
        pstep.shard_batch(odd)


@pytest.mark.parametrize("batch_size, num_devices, mode, n", [
    (4, None, "shard_map", 2),  # the batch splits over both devices
    (3, None, "none", None),  # an odd batch cannot: one device
    (4, 1, "none", None),  # capped at one device
])
def test_auto_mode_takes_the_devices_the_batch_divides_over(batch_size, num_devices, mode, n):
    got = resolve(ParallelConfig(mode="auto", num_devices=num_devices), batch_size)
    assert (got.mode, got.num_devices) == (mode, n)


@pytest.mark.parametrize("batch_size, crop, min_pairs, mode, n", [
    (4, 64, 16384, "none", None),  # 2 x 64^2 = 8,192 pairs per device: too little to split
    (2, 128, 16384, "shard_map", 2),  # one 128^2 crop per device: split
    (4, 96, 16384, "shard_map", 2),  # 2 x 96^2 = 18,432
    (4, 64, 8192, "shard_map", 2),  # the threshold is inclusive
    (4, 64, 0, "shard_map", 2),  # 0: split whenever the batch divides
])
def test_auto_mode_splits_only_steps_large_enough(batch_size, crop, min_pairs, mode, n):
    got = resolve(ParallelConfig(mode="auto", min_pairs_per_device=min_pairs), batch_size,
                  crop_size=crop)
    assert (got.mode, got.num_devices) == (mode, n)
    # explicit modes ignore the rule
    assert resolve(ParallelConfig(mode="shard_map", min_pairs_per_device=min_pairs), batch_size,
                   crop_size=crop).mode == "shard_map"
    with pytest.raises(ValueError, match="min_pairs_per_device"):
        ParallelConfig(min_pairs_per_device=-1)


def test_auto_mode_keeps_explicit_modes_and_rejects_missing_devices():
    assert resolve(ParallelConfig(mode="pmap"), 3).mode == "pmap"
    with pytest.raises(ValueError, match="concrete mode"):
        parallelize_train_step(None, _sgd(), ParallelConfig(mode="auto"))
    # 4 devices asked for on conftest's 2: the same clear error as an explicit mode
    with pytest.raises(ValueError, match="only 2 devices"):
        make_mesh(resolve(ParallelConfig(mode="auto", num_devices=4), 4))
