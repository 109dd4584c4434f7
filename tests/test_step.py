"""The pure train / eval step: metrics by hand, learning, donation, RNG, NaN guard, optimiser."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from foldnet.model import PRESETS, loss_fn
from foldnet.train.optim import OptimConfig, make_optimizer, make_schedule
from foldnet.train.state import TrainState, create_train_state
from foldnet.train.step import make_eval_step, make_train_step
from model_fixtures import FAST_COMPILE, make_batch

CROP = 16
OPT = OptimConfig(learning_rate=3e-3, warmup_steps=2, total_steps=40, clip_norm=1.0, weight_decay=1e-4)


@pytest.fixture(scope="module")
def batch(testdata):
    return make_batch(testdata, 4, CROP, seed=3)


@pytest.fixture(scope="module")
def setup(batch):
    cfg = dataclasses.replace(PRESETS["tiny"], dtype="float32", dropout=0.1)
    model, opt, state = create_train_state(cfg, OPT, 0, batch)
    step = jax.jit(make_train_step(model, opt), donate_argnums=0, compiler_options=FAST_COMPILE)
    return model, opt, state, step


def _copy(state: TrainState) -> TrainState:
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), state)


def test_state_layout(setup):
    _, _, state, _ = setup
    assert state.step.dtype == jnp.int32 and int(state.step) == 0
    assert int(state.consecutive_skips) == 0 and int(state.total_skips) == 0
    assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))


def test_metrics_match_hand_computation_and_state_is_donated(setup, batch):
    model, opt, state0, step = setup
    state = _copy(state0)
    # np.array copies: a zero-copy np.asarray view would pin the buffer and block donation.
    old_params = jax.tree_util.tree_map(lambda x: np.array(x, copy=True), state.params)
    rng = jax.random.fold_in(state.rng, state.step)  # the key the step must use
    (loss, aux), grads = jax.jit(jax.value_and_grad(
        lambda p: loss_fn(model, p, batch, rng, train=True), has_aux=True), compiler_options=FAST_COMPILE)(state.params)
    new, m = step(state, batch)
    assert state.params["trunk_1d"]["input"]["kernel"].is_deleted()  # donated
    np.testing.assert_allclose(m["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(m["distogram_loss"], jnp.mean(aux["distogram_loss"]), rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
    delta = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - b, new.params, old_params)
    np.testing.assert_allclose(m["update_norm"], optax.tree.norm(delta), rtol=1e-4)
    np.testing.assert_allclose(m["param_norm"], optax.tree.norm(new.params), rtol=1e-6)
    assert m["learning_rate"] == pytest.approx(float(make_schedule(OPT)(0)))
    assert int(new.step) == 1 and float(m["skipped"]) == 0.0
    np.testing.assert_array_equal(m["nonfinite_example_ids"], [-1, -1, -1, -1])


def test_dropout_key_folds_in_the_step(setup, batch):
    _, _, state0, step = setup
    s0 = _copy(state0)
    s0b = _copy(state0)
    s1 = _copy(state0).replace(step=jnp.ones((), jnp.int32))
    l0 = float(step(s0, batch)[1]["loss"])
    l0b = float(step(s0b, batch)[1]["loss"])
    l1 = float(step(s1, batch)[1]["loss"])
    assert l0 == l0b  # same step -> same key -> same dropout masks
    assert l0 != l1  # next step -> fresh masks


def test_training_reduces_loss(setup, batch):
    _, _, state0, step = setup
    state = _copy(state0)
    losses = []
    for _ in range(25):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    # Overfitting one real batch: the tiny model must lose > 15 % of its initial loss.
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:2]), losses


def test_nonfinite_guard_skips_and_reports(setup, batch):
    _, _, state0, step = setup
    bad = {k: np.array(v, copy=True) for k, v in batch.items()}
    bad["profile"][2, 3, 5] = np.nan  # one residue of example 2
    state = _copy(state0)
    before = jax.tree_util.tree_map(lambda x: np.array(x, copy=True), (state.params, state.opt_state))
    state, m = step(state, bad)
    after = jax.tree_util.tree_map(np.asarray, (state.params, state.opt_state))
    jax.tree_util.tree_map(np.testing.assert_array_equal, after, before)  # untouched, bit for bit
    assert float(m["skipped"]) == 1.0 and not math.isfinite(m["loss"])
    np.testing.assert_array_equal(m["nonfinite_example_ids"], [-1, -1, int(bad["example_id"][2]), -1])
    assert int(state.step) == 1 and int(state.consecutive_skips) == 1 and int(state.total_skips) == 1
    state, m = step(state, bad)
    assert int(state.consecutive_skips) == 2 and m["consecutive_skips"] == 2
    state, m = step(state, batch)  # a clean batch resets the run, keeps the total
    assert float(m["skipped"]) == 0.0 and math.isfinite(m["loss"])
    assert int(state.consecutive_skips) == 0 and int(state.total_skips) == 2 and int(state.step) == 3
    assert not np.array_equal(np.asarray(state.params["trunk_1d"]["input"]["kernel"]),
                              before[0]["trunk_1d"]["input"]["kernel"])


def test_eval_step(setup, batch):
    model, _, state0, _ = setup
    out = jax.jit(make_eval_step(model), compiler_options=FAST_COMPILE)(state0.params, batch)
    np.testing.assert_allclose(np.sum(out["dist_probs"], -1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.sum(out["phi_probs"], -1), 1.0, rtol=1e-5)
    assert out["phi"].shape == (4, CROP) and np.all(np.abs(out["psi"]) <= math.pi)
    loss, aux = jax.jit(lambda p: loss_fn(model, p, batch, None, train=False),
                        compiler_options=FAST_COMPILE)(state0.params)
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(out["loss_per_example"], aux["loss_per_example"], rtol=1e-5)


def test_schedule_clipping_and_decay_mask():
    cfg = OptimConfig(learning_rate=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1, clip_norm=1.0,
                      weight_decay=0.5)
    sched = make_schedule(cfg)
    # Update k uses ramp step k + 1: 0.1, ..., 0.5 at k = 4, the peak at k = 9.
    assert float(sched(0)) == pytest.approx(0.1) and float(sched(4)) == pytest.approx(0.5)
    assert float(sched(9)) == pytest.approx(1.0)
    # Half-way through the cosine: 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55.
    assert float(sched(59)) == pytest.approx(0.55, rel=1e-5)
    assert float(sched(109)) == pytest.approx(0.1, rel=1e-5)
    opt = make_optimizer(cfg)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
    state = opt.init(params)
    for _ in range(5):  # the fifth update (count 4) uses lr 0.5
        zero = jax.tree_util.tree_map(jnp.zeros_like, params)
        upd, state = opt.update(zero, state, params)
    # Zero gradient: only decoupled weight decay acts, on matrices, not on biases.
    np.testing.assert_allclose(upd["w"], -0.5 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_array_equal(upd["b"], 0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        OptimConfig(warmup_steps=5, total_steps=4)
