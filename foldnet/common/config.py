"""The two config mechanisms every typed config shares (numpy-free, jax-free).

* ``from_mapping``: a config dataclass from a mapping (a hydra/OmegaConf node turned into a
  dict, a saved run's section), unknown keys an error naming the valid ones.
* ``writable_schema``: a dataclass as the typed DictConfig hydra's ConfigStore holds.
  OmegaConf makes every node of a frozen dataclass read-only, and no public API clears a
  flag the children carry themselves (``OmegaConf.set_readonly`` reaches the root only), so
  ``unfrozen`` uses ``Node._set_flag`` / ``_get_node``; omegaconf is pinned for it and
  tests/test_dependency_internals.py names the two calls.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any]) -> T:
    """``cls(**values)`` for a dataclass ``cls``; unknown keys raise ``ValueError``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; valid keys are {sorted(names)}")
    return cls(**dict(values))


def unfrozen(node: Any) -> Any:
    """Clear the read-only flag OmegaConf puts on nodes built from frozen dataclasses."""
    from omegaconf import DictConfig, ListConfig

    node._set_flag("readonly", None)  # noqa: SLF001 - no public API clears an inherited flag
    if isinstance(node, DictConfig):
        for key in node.keys():
            unfrozen(node._get_node(key))  # noqa: SLF001
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            unfrozen(node._get_node(i))  # noqa: SLF001
    return node


def writable_schema(cls: type) -> Any:
    """A dataclass as a typed, writable DictConfig (what the ConfigStore holds)."""
    from omegaconf import OmegaConf

    return unfrozen(OmegaConf.structured(cls))
