"""The mixed-precision policy, written down once.

Following AlphaFold (``model/utils.py``: bf16 activations, f32 normalisation
and losses) and flax's ``dtype`` / ``param_dtype`` convention:

* parameters are always float32 (``param_dtype``), so the optimiser state and
  the updates are full precision;
* convolutions and dense layers inside the trunks compute in the policy's
  ``compute_dtype`` (bfloat16 by default): flax casts inputs and kernels to it;
* LayerNorm statistics, the logits of every head, softmax and the losses are
  float32 (``norm_dtype`` / ``output_dtype``), because bf16 has 8 bits of
  mantissa and cross-entropies over 65 bins lose accuracy there;
* everything the model returns is float32.

``dtype: float32`` in the model config gives a pure-f32 policy (used by the
data-parallel equivalence tests, where bf16 rounding would hide real bugs).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which dtype each kind of tensor uses.

    Attributes:
      param_dtype: storage dtype of parameters (always float32).
      compute_dtype: dtype of convolution / dense activations in the trunks.
      norm_dtype: dtype LayerNorm computes and returns in.
      output_dtype: dtype of logits, probabilities and losses.
    """

    param_dtype: jnp.dtype = jnp.float32
    compute_dtype: jnp.dtype = jnp.bfloat16
    norm_dtype: jnp.dtype = jnp.float32
    output_dtype: jnp.dtype = jnp.float32

    def cast_compute(self, x: jnp.ndarray) -> jnp.ndarray:
        """Cast an activation to the compute dtype (the input of a conv / dense)."""
        return x.astype(self.compute_dtype)

    def cast_output(self, x: jnp.ndarray) -> jnp.ndarray:
        """Cast to the output dtype (logits, losses)."""
        return x.astype(self.output_dtype)


# Backends whose convolutions and dense layers run the bf16 policy in bf16. XLA:CPU
# (XNNPACK/YNNPACK kernels on the 2-core dev box, which has AVX512-BF16) is no faster in
# bf16 than in f32 and sometimes slower (docs/bench/peers_intel_xeon.md), so on CPU the "bfloat16"
# policy computes its trunks in f32 -- same parameters, checkpoints and code path, f32
# numerics -- and keeps bf16 activations for GPUs and TPUs. Read at trace time.
BF16_COMPUTE_BACKENDS = {"gpu", "tpu", "cuda", "rocm"}


def get_policy(dtype: str, backend: str | None = None) -> Policy:
    """The policy for a ModelConfig.dtype string.

    Args:
      dtype: "bfloat16" (mixed precision) or "float32" (everything f32).
      backend: the JAX backend the model will run on (default: ``jax.default_backend()``);
        "bfloat16" computes in bf16 only on ``BF16_COMPUTE_BACKENDS``.
    Returns:
      The Policy.
    """
    if dtype == "bfloat16":
        if (backend or jax.default_backend()) not in BF16_COMPUTE_BACKENDS:
            return Policy(compute_dtype=jnp.float32)
        return Policy(compute_dtype=jnp.bfloat16)
    if dtype == "float32":
        return Policy(compute_dtype=jnp.float32)
    raise ValueError(f"unknown precision {dtype!r}: use 'bfloat16' or 'float32'")
