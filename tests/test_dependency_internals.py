"""The two private dependency APIs foldnet relies on, pinned in pyproject.toml.

* OmegaConf ``Node._set_flag`` / ``Container._get_node`` (``foldnet.common.config.unfrozen``):
  no public API clears the read-only flag OmegaConf puts on every node of a frozen dataclass
  (``OmegaConf.set_readonly`` sets the root's flag only; children keep their own).
* Orbax ``CheckpointManager._checkpoints`` (``Checkpointer.best_step``): the in-memory step
  records with the ranking metrics (``best_step()`` needs ``best_fn``, which foldnet's
  combined LatestN + BestN preservation policy does not set).

When an upgrade breaks one of these, this test names it; move the pin only after fixing it.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import orbax.checkpoint as ocp
from omegaconf import DictConfig, OmegaConf

from foldnet.common.config import unfrozen


@dataclasses.dataclass(frozen=True)
class _Inner:
    x: int = 1


@dataclasses.dataclass(frozen=True)
class _Outer:
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    y: list = dataclasses.field(default_factory=lambda: [1, 2])


def test_omegaconf_flag_internals():
    node = OmegaConf.structured(_Outer)
    assert OmegaConf.is_readonly(node.inner)
    OmegaConf.set_readonly(node, None)
    assert OmegaConf.is_readonly(node.inner)  # the public call does not reach the children
    assert hasattr(node, "_set_flag") and isinstance(node._get_node("inner"), DictConfig)
    node = unfrozen(OmegaConf.structured(_Outer))
    node.inner.x = 5
    node.y[0] = 3
    assert node.inner.x == 5 and node.y[0] == 3


def test_orbax_checkpoint_records(tmp_path):
    mngr = ocp.CheckpointManager(tmp_path, options=ocp.CheckpointManagerOptions(create=True),
                                 item_names=("state",))
    mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave({"a": jnp.ones(2)})), metrics={"loss": 1.5})
    mngr.wait_until_finished()
    records = list(mngr._checkpoints)
    assert [(r.step, r.metrics) for r in records] == [(3, {"loss": 1.5})]
    mngr.close()
