"""``lax.conv_general_dilated`` with a backward pass that XLA:CPU runs fast.

Same signature and values as ``lax.conv_general_dilated`` (pass it to flax as
``nn.Conv(..., conv_general_dilated=conv_general_dilated)``, so parameter names,
shapes and initialisation stay those of ``nn.Conv``); only the backward pass is
written out: JAX's own transposed convolutions for both cotangents, with the
two operands of the filter gradient (the saved input and the incoming
cotangent) first passed through a product with the identity matrix.

Why: XLA computes a filter gradient as a convolution over [C, H, W, B]
transposed copies of both operands. XLA:CPU fuses whatever elementwise chain
produced an operand into that transposing copy and duplicates it there -- the
LayerNorm/ELU of the block, the whole residual stream of the earlier blocks,
the LayerNorm/ELU backward of the cotangent -- re-reading up to six arrays with
a strided access pattern for every element. A dot is never fused into a loop
fusion, so ``x @ I`` pins each operand to one materialised array, and XLA then
folds the transposition into that dot. On the 2-core dev box (base preset, crop
128, batch 4, f32) the transposing fusions took 0.6-1.1 s of a 1.8-2.9 s step
before and are gone after (docs/model.md, "CPU kernels").
``x @ I`` is exact for finite x (every output is 1 * x_i plus exact zeros).

On the CPU backend the case foldnet's 2D trunk uses -- f32, 'SAME', stride 1, odd
kernel -- goes to foldnet's own convolution kernel instead
(``cpu_kernels.conv2d``, when it is built); the path above serves everything else.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from foldnet.model import cpu_kernels


def _conv(spec: tuple, lhs, rhs):
    return lax.conv_general_dilated(lhs, rhs, **dict(spec))


# Whether the backward pass pins its operands (read at trace time). XLA on GPU/TPU
# does not duplicate producers into layout copies this way, so only CPU needs it.
PIN_OPERANDS = {"cpu": True}


def _pin_enabled() -> bool:
    return PIN_OPERANDS.get(jax.default_backend(), False)


def _pinned(a: jnp.ndarray) -> jnp.ndarray:
    """``a`` itself, as the output of a dot (see the module docstring)."""
    if not _pin_enabled():
        return a
    return jnp.matmul(a, jnp.eye(a.shape[-1], dtype=a.dtype))


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv_pinned_grad(spec: tuple, lhs, rhs):
    return _conv(spec, lhs, rhs)


def _fwd(spec, lhs, rhs):
    return _conv(spec, lhs, rhs), (lhs, rhs)


def _bwd(spec, res, g):
    lhs, rhs = res
    (dlhs,) = jax.vjp(lambda x: _conv(spec, x, rhs), lhs)[1](g)
    (drhs,) = jax.vjp(lambda w: _conv(spec, _pinned(lhs), w), rhs)[1](_pinned(g))
    return dlhs, drhs


_conv_pinned_grad.defvjp(_fwd, _bwd)


# Whether 2D convolutions the CPU kernels cover go to them (read at trace time; tests
# and benchmarks switch it off to compare against XLA's convolution).
USE_CPU_KERNELS = True


def _use_cpu_kernel(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                    feature_group_count, batch_group_count, preferred_element_type) -> bool:
    """True for the case ``cpu_kernels.conv2d`` implements, on the CPU backend, when it is built.

    That case: float32 NHWC x HWIO, stride 1, 'SAME' padding (as a string or as the
    equivalent pairs), odd kernel, no input dilation or grouping -- every 2D
    convolution of foldnet's trunks. Everything else stays with XLA.
    """
    if not USE_CPU_KERNELS or jax.default_backend() != "cpu":
        return False
    if lhs.ndim != 4 or rhs.ndim != 4 or lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
        return False
    if preferred_element_type not in (None, jnp.float32) or feature_group_count != 1 or batch_group_count != 1:
        return False
    if any(s != 1 for s in window_strides) or any(d != 1 for d in (lhs_dilation or (1, 1))):
        return False
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if dn != lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")):
        return False
    kh, kw = rhs.shape[0], rhs.shape[1]
    if kh % 2 == 0 or kw % 2 == 0:
        return False
    dh, dw = rhs_dilation or (1, 1)
    same = ((dh * (kh - 1) // 2,) * 2, (dw * (kw - 1) // 2,) * 2)
    if isinstance(padding, str):
        if padding.upper() != "SAME":
            return False
    elif tuple(tuple(p) for p in padding) != same:
        return False
    return cpu_kernels.available()


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """Drop-in ``lax.conv_general_dilated`` (same arguments and values); see the module docstring."""
    if _use_cpu_kernel(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                       feature_group_count, batch_group_count, preferred_element_type):
        return cpu_kernels.conv2d(lhs, rhs, tuple(int(d) for d in rhs_dilation or (1, 1)))
    spec = (
        ("window_strides", tuple(window_strides)),
        ("padding", padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)),
        ("lhs_dilation", None if lhs_dilation is None else tuple(lhs_dilation)),
        ("rhs_dilation", None if rhs_dilation is None else tuple(rhs_dilation)),
        ("dimension_numbers", dimension_numbers),
        ("feature_group_count", feature_group_count),
        ("batch_group_count", batch_group_count),
        ("precision", precision),
        ("preferred_element_type", preferred_element_type),
    )
    return _conv_pinned_grad(spec, lhs, rhs)
