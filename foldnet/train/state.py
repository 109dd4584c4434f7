"""The explicit training state: a pytree the pure step maps to its successor."""

from __future__ import annotations

import functools
import re
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from foldnet.model.config import ModelConfig
from foldnet.model.model import FoldNet, build_model
from foldnet.train.optim import OptimConfig, make_optimizer


@flax.struct.dataclass
class TrainState:
    """Everything a training step reads and writes (big_vision / flax-examples style).

    Attributes:
      step: int32 scalar, number of steps taken (skipped steps included).
      params: model parameters (f32).
      opt_state: optimiser state.
      rng: base PRNG key (raw uint32[2]); each step folds in ``step`` (never reused).
      consecutive_skips: int32, current run of non-finite (skipped) steps.
      total_skips: int32, all skipped steps so far.
      ema_params: exponential moving average of ``params`` (``optim.ema_decay`` > 0), else None.
    """

    step: jnp.ndarray
    params: Any
    opt_state: Any
    rng: jax.Array
    consecutive_skips: jnp.ndarray
    total_skips: jnp.ndarray
    ema_params: Any = None

    @property
    def eval_params(self) -> Any:
        """The parameters to validate and export: the average when there is one."""
        return self.params if self.ema_params is None else self.ema_params


def init_params(model: FoldNet, key: jax.Array, example_batch: dict) -> Any:
    """Initialise parameters from a batch's shapes (jitted: op-by-op init is slow).

    Args:
      model: the FoldNet.
      key: init PRNG key.
      example_batch: any batch with the training shapes (only shapes matter).
    Returns:
      the "params" collection.
    """
    batch = {k: jnp.asarray(v) for k, v in example_batch.items()}
    return _jitted_init(model)(key, batch)


@functools.lru_cache(maxsize=16)
def _jitted_init(model: FoldNet):
    # One compiled init per model config (modules hash by their config), so building
    # several states for the same model (restarts, tests, benchmarks) compiles once.
    # Init runs once, so its speed is irrelevant: backend optimisation level 0 cuts its
    # compile time (~3x on XLA:CPU).
    return jax.jit(
        lambda key, b: model.init(key, b, train=False)["params"],
        compiler_options={"xla_backend_optimization_level": 0},
    )


def create_train_state(
    model_cfg: ModelConfig, optim_cfg: OptimConfig, seed: int, example_batch: dict
) -> tuple[FoldNet, optax.GradientTransformation, TrainState]:
    """Build the model, the optimiser and the initial state.

    Args:
      model_cfg: model config.
      optim_cfg: optimiser config.
      seed: derives the init key and the training (dropout) key, independently.
      example_batch: a batch with the training shapes (e.g. the loader's first batch).
    Returns:
      (model, optimizer, state) with state.step = 0.
    """
    model = build_model(model_cfg)
    optimizer = make_optimizer(optim_cfg)
    # Init uses the "rbg" PRNG (XLA RngBitGenerator): compiling flax init with
    # threefry-hashed initialisers costs ~3x more CPU time for identical semantics.
    params = init_params(model, jax.random.key(seed, impl="rbg"), example_batch)
    # The training (dropout) key: a raw uint32[2] threefry key, so checkpoints store a
    # plain array; derived from the seed independently of the init key.
    train_key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=train_key,
        consecutive_skips=jnp.zeros((), jnp.int32),
        total_skips=jnp.zeros((), jnp.int32),
        # A copy, not the same buffers: the step donates the state.
        ema_params=jax.tree_util.tree_map(jnp.copy, params) if optim_cfg.ema_decay > 0 else None,
    )
    return model, optimizer, state


# The last layer of a residual branch: ResidualBlock's second convolution, BottleneckBlock's
# up-projection, a triangle update's output projection. Zero there makes a block
# the identity.
_LAST_LAYERS = ("conv_b", "up", "outgoing']['out", "incoming']['out")


def _new_block(name: str) -> str | None:
    """The residual or triangle block (``...['block_k']``, ``...['triangle_k']``) a
    parameter path lies in, else None."""
    m = re.match(r"(.*\['(?:block|triangle)_\d+'\])\[", name)
    return m.group(1) if m else None


def warm_start(state: TrainState, optimizer: optax.GradientTransformation, params: Any, source: str,
               grow: bool = False) -> TrainState:
    """``state`` with ``params`` (a trained network's) in place of its random init.

    The optimiser state and the EMA start afresh from ``params`` (a warm restart: the new
    run's schedule, warm-up included, applies from its step 0); step, RNG and skip
    counters are the fresh state's.

    With ``grow``, the model may have whole residual blocks that ``params`` lacks (a deeper
    trunk, blocks appended after the trained ones): they keep their fresh init except the
    last layer (``conv_b``; ``up`` in bottleneck blocks), which starts at zero, so each new
    block starts as the identity and the grown network computes exactly what the trained one
    did (He et al.'s pre-activation blocks; zero-initialised residual branches as in Goyal
    et al. 2017).

    Raises:
      ValueError: naming ``source`` and the first differing parameter, if ``params`` does
        not have the parameter names and shapes of ``state.params`` (values are cast to
        its dtypes: a float32 export initialises any run), or, with ``grow``, if a
        parameter is missing outside a block that is missing as a whole.
    """
    want = jax.tree_util.tree_flatten_with_path(state.params)[0]
    got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    got = {jax.tree_util.keystr(k): v for k, v in got.items()}
    got_blocks = {_new_block(n) for n in got} - {None}
    values = []
    for path, leaf in want:
        name = jax.tree_util.keystr(path)
        if name not in got:
            block = _new_block(name)
            if grow and block is not None and block not in got_blocks:
                zero = any(name.startswith(f"{block}['{last}']") for last in _LAST_LAYERS)
                values.append(jnp.zeros_like(leaf) if zero else leaf)
                continue
            raise ValueError(f"init_from {source}: it has no parameter {name} (another architecture?"
                             + ("" if grow else " a deeper trunk needs init_grow=true") + ")")
        if tuple(np.shape(got[name])) != tuple(leaf.shape):
            raise ValueError(f"init_from {source}: parameter {name} has shape {tuple(np.shape(got[name]))}, "
                             f"the model needs {tuple(leaf.shape)}")
        values.append(jnp.asarray(got[name], leaf.dtype))
    extra = sorted(set(got) - {jax.tree_util.keystr(p) for p, _ in want})
    if extra:
        raise ValueError(f"init_from {source}: parameters the model does not have: {', '.join(extra[:3])}")
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state.params), values)
    ema = None if state.ema_params is None else jax.tree_util.tree_map(jnp.copy, params)
    return state.replace(params=params, opt_state=optimizer.init(params), ema_params=ema)
