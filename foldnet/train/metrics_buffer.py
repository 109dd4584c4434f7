"""Step metrics kept on the device and fetched in one transfer at log points.

Turning a metric into a Python number every step makes the host wait for that
step to finish before it can dispatch the next one, so the input pipeline and
the device never overlap (and an accelerator idles between steps). As in the
flax ImageNet example and big_vision, the training loop appends each step's
metrics (device arrays, not yet computed) here and ``flush`` fetches all the
pending steps at once -- at every log step, before validation and checkpoints,
and at the end -- then replays them in order: skipped steps are reported with
their example ids, the others summed into the interval means.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np

# Step metrics averaged into the "train" lines, besides every head's "<name>_loss" (the rest
# are counters or per example).
MEAN_KEYS = ("loss", "grad_norm", "param_norm", "update_norm", "learning_rate")


class MetricsBuffer:
    """Pending per-step metrics and the running sums of the current log interval.

    Args:
      on_skip: called as ``on_skip(step, metrics)`` (host numpy values) for each
        step whose update was skipped, in step order; it may raise to stop training.
    """

    def __init__(self, on_skip: Callable[[int, dict], None]):
        self._on_skip = on_skip
        self._pending: list[tuple[int, dict]] = []
        self._sums: dict[str, float] = {}
        self._n = 0
        self.first_loss: Optional[float] = None
        self.last_loss = float("nan")
        self.last: Optional[dict] = None  # host metrics of the newest flushed step

    def append(self, step: int, metrics: dict) -> None:
        """Record one step's (device) metrics; nothing is fetched."""
        self._pending.append((step, metrics))

    def flush(self) -> None:
        """Fetch every pending step in one transfer and replay them in order."""
        if not self._pending:
            return
        steps = [s for s, _ in self._pending]
        fetched = jax.device_get([m for _, m in self._pending])
        self._pending = []
        for step, m in zip(steps, fetched):
            self.last = m
            if m["skipped"] > 0:
                self._on_skip(step, m)
                continue
            for k in m:
                if k in MEAN_KEYS or k.endswith("_loss"):
                    self._sums[k] = self._sums.get(k, 0.0) + float(m[k])
            self._n += 1
            self.last_loss = float(m["loss"])
            if self.first_loss is None:
                self.first_loss = self.last_loss

    def interval_means(self) -> dict[str, Any]:
        """Flush, then return the means over the non-skipped steps since the last call, and reset."""
        self.flush()
        entry = {k: v / self._n for k, v in self._sums.items()} if self._n else {}
        self._sums, self._n = {}, 0
        if self.last is not None:
            entry["total_skips"] = int(np.asarray(self.last["total_skips"]))
        return entry
