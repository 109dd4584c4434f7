"""The pure training and evaluation steps (per-device code with an optional named axis).

``make_train_step`` returns ``step(state, batch) -> (state, metrics)``: no side
effects, no Python state, so it can be jitted with the state donated, run
under ``jax.shard_map`` or ``jax.pmap`` (``axis_name`` set: gradients and
metrics are ``lax.pmean``-ed over that axis, the JAX shard_map/pmap data-parallel
pattern), or called eagerly in tests.

Non-finite guard: when the (global) loss or any gradient is NaN/Inf the update
is skipped (params and optimiser state unchanged; only step and the skip
counters move) and the ids of the examples whose loss is non-finite are
reported, so the loop can log the culprits and stop after
``max_consecutive_skips``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax import lax

from foldnet.model.heads import TORSION_NAMES, torsion_circular_mean
from foldnet.model.model import FoldNet, head_losses, loss_fn
from foldnet.train.optim import current_learning_rate
from foldnet.train.state import TrainState

# Per-example metrics (shape [B]); everything else in the metrics is a scalar.
PER_EXAMPLE_METRICS = ("nonfinite_example_ids",)


def _tree_select(pred: jnp.ndarray, on_true: Any, on_false: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def make_train_step(
    model: FoldNet, optimizer: optax.GradientTransformation, *, axis_name: Optional[str] = None,
    ema_decay: float = 0.0, relabel: Optional[Callable[[dict, jax.Array], dict]] = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The pure per-device training step.

    Args:
      model: the FoldNet.
      optimizer: from ``make_optimizer`` (its state records the learning rate).
      axis_name: the data-parallel axis name when run under shard_map / pmap; the
        gradients and scalar metrics are averaged over it (each device holds an
        equal share of the global batch, so the mean of means is the global mean).
      ema_decay: the parameter average's decay (``OptimConfig.ema_decay``); the state must
        then carry ``ema_params``. Skipped steps leave the average unchanged.
      relabel: ``fn(batch, key) -> batch`` applied before the loss, outside the gradient
        (``foldnet.train.distill.make_relabel``: the teacher's labels); None = the native labels.
    Returns:
      step(state, batch) -> (new_state, metrics). Metrics (f32 scalars unless noted):
      loss, one "<head>_loss" per head, grad_norm, param_norm, update_norm,
      learning_rate, skipped (0/1), consecutive_skips, total_skips (int32) and
      nonfinite_example_ids ([B] int32: example_id where that example's loss is
      non-finite, else -1).
    """

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        if ema_decay > 0 and state.ema_params is None:
            raise ValueError("ema_decay > 0 but the train state has no ema_params (optim.ema_decay)")
        # A fresh key per step (and per device): never reuse dropout masks.
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, lax.axis_index(axis_name))
        if relabel is not None:
            rng, label_key = jax.random.split(rng)
            batch = relabel(batch, label_key)

        def objective(params):
            return loss_fn(model, params, batch, rng, train=True)

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        per_example = {k: v for k, v in aux.items() if k != "outputs"}
        means = {k if k.endswith("_loss") else "loss": jnp.mean(v) for k, v in per_example.items()}
        means["loss"] = loss
        if axis_name is not None:
            grads = lax.pmean(grads, axis_name)
            means = lax.pmean(means, axis_name)

        grad_norm = optax.tree.norm(grads)
        # NaN anywhere in grads makes the norm NaN, Inf makes it Inf: one check suffices.
        finite = jnp.isfinite(means["loss"]) & jnp.isfinite(grad_norm)
        safe_grads = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, 0.0), grads)
        updates, new_opt_state = optimizer.update(safe_grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)

        params = _tree_select(finite, new_params, state.params)
        opt_state = _tree_select(finite, new_opt_state, state.opt_state)
        ema = state.ema_params
        if ema_decay > 0:
            t = state.step.astype(jnp.float32)
            decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
            new_ema = jax.tree_util.tree_map(lambda e, q: decay * e + (1.0 - decay) * q, ema, params)
            ema = _tree_select(finite, new_ema, ema)
        skipped = jnp.logical_not(finite).astype(jnp.int32)
        consecutive = jnp.where(finite, 0, state.consecutive_skips + 1).astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            consecutive_skips=consecutive,
            total_skips=(state.total_skips + skipped).astype(jnp.int32),
            ema_params=ema,
        )
        metrics = dict(means)
        metrics.update(
            grad_norm=grad_norm,
            param_norm=optax.tree.norm(params),
            update_norm=jnp.where(finite, optax.tree.norm(updates), 0.0),
            learning_rate=current_learning_rate(new_opt_state),
            skipped=skipped.astype(jnp.float32),
            consecutive_skips=consecutive,
            total_skips=new_state.total_skips,
            nonfinite_example_ids=jnp.where(
                jnp.isfinite(per_example["loss_per_example"]), -1, batch["example_id"]
            ).astype(jnp.int32),
        )
        return new_state, metrics

    return step


def make_eval_step(model: FoldNet, *, axis_name: Optional[str] = None) -> Callable[[Any, dict], dict]:
    """The pure evaluation step: probabilities, circular-mean torsions and losses.

    Args:
      model: the FoldNet.
      axis_name: when run under shard_map / pmap, "loss" (the batch mean) is
        averaged over this axis; per-example outputs stay per device.
    Returns:
      eval_step(params, batch) -> dict of f32 arrays: "dist_probs" [B, N, N, 65],
      "<angle>_probs" [B, N, 36] and "<angle>" [B, N] (circular mean, radians) for
      each predicted angle, "ss8_probs" [B, N, 8] with the secondary-structure head,
      each head's per-example losses [B], "loss_per_example" [B] and "loss" (scalar).
    """

    def eval_step(params: Any, batch: dict) -> dict:
        outputs = model.apply({"params": params}, batch, train=False)
        out = head_losses(model.config, outputs, batch)
        for key, logits in outputs.items():
            name = key[: -len("_logits")]
            # The auxiliary pair heads (CA distogram, orientations) are scored by their
            # losses only: their [B, N, N, bins] probabilities would be host traffic for nothing.
            if name in ("dist", "ss8") or name in TORSION_NAMES:
                out[f"{name}_probs"] = jax.nn.softmax(logits, axis=-1)
            if name in TORSION_NAMES:
                out[name] = torsion_circular_mean(logits)
        loss = jnp.mean(out["loss_per_example"])
        out["loss"] = lax.pmean(loss, axis_name) if axis_name is not None else loss
        return out

    return eval_step
