"""Data parallelism over every device: one per-device step, three ways to run it.

* ``auto`` (the default): ``shard_map`` over as many local devices as divide the
  per-process batch and leave each at least ``min_pairs_per_device`` residue pairs,
  ``none`` when that is one (``resolve``). On a CPU host the train CLI exposes one JAX
  device per core, so this splits large batches over the cores: XLA:CPU runs each
  convolution on one thread at a time more efficiently than on two (docs/model.md, "CPU:
  one device per core"); a small step is faster on one device, whose kernels spread over
  the cores themselves (``scripts/bench_placement.py``).
* ``none``: the step jitted on one device (the default device).
* ``shard_map``: the same step under ``jax.shard_map`` over a 1-D ``data`` mesh
  of all (global) devices; the state is replicated (``P()``), the batch split
  along its leading axis (``P("data")``), gradients ``lax.pmean``-ed inside.
* ``pmap``: the same step under ``jax.pmap`` with ``axis_name="data"`` over the
  local devices (across processes when ``jax.distributed`` is initialised).

``ParallelStep`` hides the differences (placement of the state and the batch,
gathering metrics back to the host) so the training loop is identical in all
three modes. The pattern is the one of JAX's "Introduction to parallel
programming" / shard_map guides; multi-host follows "Multi-process" (each
process feeds its own slice of the global batch).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from foldnet.model.model import FoldNet
from foldnet.train.state import TrainState
from foldnet.train.step import PER_EXAMPLE_METRICS, make_eval_step, make_train_step

AXIS = "data"
MODES = ("auto", "none", "shard_map", "pmap")


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    """How to spread the step over devices (and processes).

    Attributes:
      mode: "auto", "none", "shard_map" or "pmap" (see the module docstring).
      num_devices: devices to use per process (None = all local devices); only
        meaningful in a single process (multi-process runs use every device).
      distributed: call ``jax.distributed.initialize`` first (multi-host).
      coordinator_address: "host:port" of process 0 (else JAX_COORDINATOR_ADDRESS).
      num_processes: total processes (else JAX_NUM_PROCESSES / cluster auto-detection).
      process_id: this process (else JAX_PROCESS_ID / cluster auto-detection).
      initialization_timeout: seconds to wait for all processes to connect.
      min_pairs_per_device: ``auto`` splits the batch only while every device keeps at least
        this many residue pairs (batch x crop^2 / devices); 0 = split whenever the batch
        divides. Explicit modes ignore it.
    """

    mode: str = "auto"
    num_devices: Optional[int] = None
    distributed: bool = False
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    initialization_timeout: int = 300
    # Measured on 2-core CPUs (docs/bench/placement.md): below one 128 x 128 crop per
    # device, the collectives and the halved kernel work cost more than the split saves.
    min_pairs_per_device: int = 16384

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"ParallelConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.num_devices is not None and self.num_devices < 1:
            raise ValueError(f"ParallelConfig.num_devices must be >= 1, got {self.num_devices}")
        if self.min_pairs_per_device < 0:
            raise ValueError(f"ParallelConfig.min_pairs_per_device must be >= 0, got {self.min_pairs_per_device}")


def resolve(cfg: ParallelConfig, batch_size: int, crop_size: Optional[int] = None) -> ParallelConfig:
    """``cfg`` with mode ``auto`` replaced by the concrete mode and device count.

    Args:
      cfg: the ParallelConfig.
      batch_size: the per-process batch size (the split must be even).
      crop_size: residues of one example (its crop), which has crop_size^2 pairs; None = do
        not apply ``cfg.min_pairs_per_device``.
    Returns:
      ``cfg`` itself unless its mode is ``auto``; then ``shard_map`` over the largest
      number of devices (at most ``num_devices``, else all local ones) that divides
      ``batch_size`` and leaves each device ``min_pairs_per_device`` pairs, or ``none``
      when that number is 1. Multi-process runs always take ``shard_map`` over every device.
    """
    if cfg.mode != "auto":
        return cfg
    if jax.process_count() > 1:
        return dataclasses.replace(cfg, mode="shard_map")
    pairs = batch_size * crop_size ** 2 if crop_size else None
    # more num_devices than exist is left for make_mesh to reject, as in the explicit modes
    n = max(k for k in range(1, (cfg.num_devices or jax.local_device_count()) + 1)
            if batch_size % k == 0 and (k == 1 or pairs is None or pairs // k >= cfg.min_pairs_per_device))
    if n == 1:
        return dataclasses.replace(cfg, mode="none", num_devices=None)
    return dataclasses.replace(cfg, mode="shard_map", num_devices=n)


def _devices(cfg: ParallelConfig) -> list:
    """The devices the mesh spans: all global devices, or the first num_devices local ones."""
    if jax.process_count() > 1:
        if cfg.num_devices is not None and cfg.num_devices != jax.local_device_count():
            raise ValueError(
                f"ParallelConfig.num_devices={cfg.num_devices}: multi-process runs use all "
                f"{jax.local_device_count()} local devices of every process"
            )
        return list(jax.devices())
    local = jax.local_devices()
    n = cfg.num_devices or len(local)
    if n > len(local):
        raise ValueError(f"ParallelConfig.num_devices={n} but only {len(local)} devices: {local}")
    return local[:n]


def make_mesh(cfg: ParallelConfig) -> Mesh:
    """A 1-D mesh with axis "data" over all global devices (or ``num_devices`` local ones)."""
    return Mesh(np.asarray(_devices(cfg)), (AXIS,))


def _to_host(x: jax.Array) -> np.ndarray:
    """One host copy of a replicated array (works for non-fully-addressable arrays)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x))


def _metrics_to_host(metrics: dict, gather: Callable[[jax.Array], np.ndarray]) -> dict:
    out = {}
    for k, v in metrics.items():
        if k in PER_EXAMPLE_METRICS:
            out[k] = gather(v)
        else:
            a = _to_host(v)
            out[k] = a.item() if a.ndim == 0 else a
    return out


class ParallelStep:
    """A train step placed on devices, with the helpers the loop needs.

    Use:
      pstep = parallelize_train_step(model, optimizer, cfg)
      state = pstep.replicate(state)                 # once
      state, metrics = pstep.step(state, pstep.shard_batch(host_batch))
      host_state = pstep.unreplicate(state)          # for checkpoints

    ``host_batch`` is this process's numpy slice of the global batch (the loader
    built with process_index / process_count); its leading size must divide by
    the local device count. ``metrics`` are python floats, except
    ``nonfinite_example_ids``: a numpy array over the global batch.
    """

    def __init__(
        self,
        model: FoldNet,
        optimizer: optax.GradientTransformation,
        cfg: ParallelConfig,
        compiler_options: Optional[dict] = None,
        ema_decay: float = 0.0,
        relabel: Optional[Callable[[dict, jax.Array], dict]] = None,
    ):
        if cfg.mode == "auto":
            raise ValueError("ParallelStep needs a concrete mode: pass parallel.resolve(cfg, batch_size)")
        self.cfg = cfg
        self.compiler_options = compiler_options
        self.mode = cfg.mode
        self.model = model
        self.mesh = make_mesh(cfg)
        self.devices = list(self.mesh.devices.flat)
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
        self.num_devices = len(self.devices)
        self.num_local_devices = len(self.local_devices)
        if self.mode == "none":
            if self.num_devices != 1 and cfg.num_devices not in (None, 1):
                raise ValueError("mode 'none' runs on one device; set num_devices: 1 or null")
            self.devices = self.local_devices = [jax.local_devices()[0]]
            self.num_devices = self.num_local_devices = 1
            if jax.process_count() > 1:
                raise ValueError("mode 'none' cannot run multi-process; use shard_map or pmap")
        self._build(functools.partial(make_train_step, ema_decay=ema_decay, relabel=relabel), optimizer)

    # -- construction ---------------------------------------------------------------------------
    def _build(self, make_step, optimizer) -> None:
        mode = self.mode
        if mode == "none":
            self._step = jax.jit(
                make_step(self.model, optimizer), donate_argnums=0, compiler_options=self.compiler_options
            )
            self._eval = jax.jit(make_eval_step(self.model), compiler_options=self.compiler_options)
        elif mode == "shard_map":
            per_device = make_step(self.model, optimizer, axis_name=AXIS)
            metric_specs = None  # filled lazily: P() for scalars, P("data") per example

            def specs_for(metrics_shape: dict) -> dict:
                return {k: (P(AXIS) if k in PER_EXAMPLE_METRICS else P()) for k in metrics_shape}

            def sharded(state, batch):
                nonlocal metric_specs
                if metric_specs is None:
                    shapes = _per_device_shapes(per_device, state, batch, self.num_devices)
                    metric_specs = specs_for(shapes)
                # check_vma=False: with it on, the gradient w.r.t. the replicated params
                # would already be psum-ed by autodiff and the step's explicit pmean would
                # then leave a sum (N x the global-mean gradient). Off, shard_map has the
                # pmap semantics the per-device step is written for.
                f = jax.shard_map(
                    per_device,
                    mesh=self.mesh,
                    in_specs=(P(), P(AXIS)),
                    out_specs=(P(), metric_specs),
                    check_vma=False,
                )
                return f(state, batch)

            self._step = jax.jit(sharded, donate_argnums=0, compiler_options=self.compiler_options)
            eval_dev = make_eval_step(self.model, axis_name=AXIS)

            def eval_sharded(params, batch):
                shapes = _per_device_shapes(eval_dev, params, batch, self.num_devices)
                specs = {k: (P() if k == "loss" else P(AXIS)) for k in shapes}
                return jax.shard_map(
                    eval_dev, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=specs, check_vma=False
                )(
                    params, batch
                )

            self._eval = jax.jit(eval_sharded, compiler_options=self.compiler_options)
        else:  # pmap
            # pmap (now jit + shard_map underneath) wants its inputs stacked along a
            # leading axis of local-device size, sharded one slice per device.
            self._pmap_sharding = NamedSharding(Mesh(np.asarray(self.local_devices), (AXIS,)), P(AXIS))
            self._step = jax.pmap(
                make_step(self.model, optimizer, axis_name=AXIS),
                axis_name=AXIS,
                devices=self.devices if jax.process_count() == 1 else None,
                donate_argnums=0,
            )
            self._eval = jax.pmap(
                make_eval_step(self.model, axis_name=AXIS),
                axis_name=AXIS,
                devices=self.devices if jax.process_count() == 1 else None,
            )

    # -- placement ------------------------------------------------------------------------------
    def replicate(self, tree: Any) -> Any:
        """Place a host (or single-device) pytree, e.g. the TrainState, on every device."""
        if self.mode == "none":
            return jax.device_put(tree, self.devices[0])
        if self.mode == "pmap":
            n = self.num_local_devices
            stacked = jax.tree_util.tree_map(
                lambda x: np.broadcast_to(np.asarray(x)[None], (n,) + np.shape(x)), jax.device_get(tree)
            )
            return jax.device_put(stacked, self._pmap_sharding)
        sharding = NamedSharding(self.mesh, P())
        tree = jax.device_get(tree)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx, x=x: np.asarray(x)[idx]),
            tree,
        )

    def unreplicate(self, tree: Any) -> Any:
        """One host (numpy) copy of a replicated pytree (for checkpoints and evaluation)."""
        if self.mode == "pmap":
            # Stacked [local_devices, ...]: the first device's slice (its shard is [1, ...]).
            return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0))[0], tree)
        return jax.tree_util.tree_map(_to_host, tree)

    def shard_batch(self, host_batch: Mapping[str, np.ndarray]) -> dict:
        """Place this process's slice of the global batch, split over the devices.

        Args:
          host_batch: dict of numpy arrays with leading size B_process, divisible by
            the number of local devices.
        Returns:
          the device batch for ``step`` / ``eval``.
        """
        sizes = {np.shape(v)[0] for v in host_batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"batch arrays disagree on the batch size: {sorted(sizes)}")
        (b,) = sizes
        if b % self.num_local_devices:
            raise ValueError(
                f"per-process batch size {b} is not divisible by the {self.num_local_devices} "
                f"local devices (mode {self.mode!r})"
            )
        if self.mode == "none":
            return jax.device_put(dict(host_batch), self.devices[0])
        if self.mode == "pmap":
            n = self.num_local_devices
            return jax.device_put(
                {k: np.reshape(v, (n, b // n) + np.shape(v)[1:]) for k, v in host_batch.items()},
                self._pmap_sharding,
            )
        sharding = NamedSharding(self.mesh, P(AXIS))
        return {
            k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in host_batch.items()
        }

    # -- running --------------------------------------------------------------------------------
    def _gather(self, x: jax.Array) -> np.ndarray:
        """A per-example device array -> numpy over the global batch (all processes)."""
        if self.mode == "pmap":
            x = multihost_utils.process_allgather(x, tiled=False) if jax.process_count() > 1 else x
            return np.asarray(x).reshape(-1)
        if jax.process_count() > 1:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    def step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """One training step; ``state`` is donated (do not reuse it)."""
        new_state, metrics = self._step(state, batch)
        if self.mode == "pmap":
            metrics = {k: (v if k in PER_EXAMPLE_METRICS else v[0]) for k, v in metrics.items()}
        return new_state, _metrics_to_host(metrics, self._gather)

    def eval(self, params: Any, batch: dict) -> dict:
        """The eval step on replicated ``params`` and a sharded batch; numpy outputs over
        this process's examples (leading axis = the host batch), "loss" a float."""
        out = self._eval(params, batch)
        res = {}
        for k, v in out.items():
            if k == "loss":
                res[k] = float(_to_host(v[0] if self.mode == "pmap" else v))
            elif self.mode == "pmap":
                a = np.asarray(v)
                res[k] = a.reshape((-1,) + a.shape[2:])
            else:
                shards = sorted(v.addressable_shards, key=lambda s: s.index[0].start or 0)
                res[k] = np.concatenate([np.asarray(s.data) for s in shards], axis=0)
        return res


def _per_device_shapes(fn: Callable, replicated: Any, batch: dict, n: int) -> Any:
    """Output shapes of a per-device function (needs its axis bound: vmap provides it)."""
    stacked = {
        k: jax.ShapeDtypeStruct((n, v.shape[0] // n) + tuple(v.shape[1:]), v.dtype) for k, v in batch.items()
    }
    out = jax.eval_shape(jax.vmap(fn, in_axes=(None, 0), axis_name=AXIS, axis_size=n), replicated, stacked)
    return out[1] if isinstance(out, tuple) else out


def parallelize_train_step(
    model: FoldNet,
    optimizer: optax.GradientTransformation,
    cfg: ParallelConfig,
    *,
    compiler_options: Optional[dict] = None,
    ema_decay: float = 0.0,
    relabel: Optional[Callable[[dict, jax.Array], dict]] = None,
) -> ParallelStep:
    """The train (and eval) step for ``cfg.mode``, placed on the devices of this run.

    Args:
      model: the FoldNet.
      optimizer: the optax transformation (from ``make_optimizer``).
      cfg: the ParallelConfig.
      compiler_options: XLA options for the jitted steps (modes none / shard_map; pmap
        takes none), e.g. ``{"xla_backend_optimization_level": 0}``, which cuts XLA:CPU
        compile time ~3x at the cost of slower steps (tests, short debug runs).
      ema_decay: ``OptimConfig.ema_decay`` (the step then updates the parameter average).
      relabel: passed to ``make_train_step`` (distillation's teacher labels).
    Returns:
      a ParallelStep (``step``, ``eval``, ``shard_batch``, ``replicate``, ``unreplicate``).
    """
    return ParallelStep(model, optimizer, cfg, compiler_options=compiler_options, ema_decay=ema_decay,
                        relabel=relabel)
