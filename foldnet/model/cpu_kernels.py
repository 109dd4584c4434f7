"""foldnet's CPU kernels (``cpu_kernels.cc``): built on first use, called through the XLA FFI.

* ``conv2d(x, k, dilation)``: a 'SAME', stride-1, dilated NHWC x HWIO convolution in
  float32 with its own backward pass -- the forward kernel applied to the cotangent
  with the kernel flipped and transposed (input gradient) and a register-blocked filter
  gradient. XLA:CPU's filter gradient of ``lax.conv_general_dilated`` is 2-3x slower
  than its forward pass (a convolution with the batch as the contracted feature axis).
  3x3 kernels with channels that fill the vector registers (foldnet's 2D trunk) run the
  forward and input gradient as Winograd F(2x2, 3x3): 2.25x fewer multiply-adds.
* ``norm_elu_mask``: ``elu(LayerNorm(x) * scale + bias) * mask`` (the residual blocks'
  pre-activation; ELU optional) in one pass each way.
* ``dense_masked_nll``: a dense layer's logits -> masked cross-entropy summed per example
  (the pair heads' training loss), forward and backward without materialising the logits.
* ``pair_terms``: the folding potential's distogram and clash terms of R structures and
  their coordinate gradients in one pass over the residue pairs (``foldnet.structure``).
* ``residual_block``: the whole 2D ``ResidualBlock`` as one custom VJP over those kernels,
  so that XLA cannot re-fuse the residual stream into every consumer.

docs/model.md ("CPU kernels") has the design and the measurements.

The C++ source ships with the package and is compiled once per machine with the
system's C++ compiler (``$CXX``, else ``c++``) and ``-march=native`` (or
``$FOLDNET_KERNEL_MARCH``) into
``$FOLDNET_KERNEL_CACHE`` (default ``~/.cache/foldnet/kernels``), keyed by the
source, the compiler flags, jaxlib's version and the CPU's feature flags. Without a
compiler -- or with ``FOLDNET_CPU_KERNELS=0`` -- ``available()`` is False, a warning
says why once, and ``foldnet.model`` keeps XLA's own operations: same values, slower
step.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("cpu_kernels.cc")
_TARGETS = ("foldnet_conv2d_fwd", "foldnet_conv2d_wgrad", "foldnet_norm_elu_fwd", "foldnet_norm_elu_bwd",
            "foldnet_dense_ce_fwd", "foldnet_dense_ce_bwd", "foldnet_pair_terms")
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")


def enabled_by_env() -> bool:
    """False when ``FOLDNET_CPU_KERNELS`` is 0/false/no/off (XLA's convolution is used)."""
    return os.environ.get("FOLDNET_CPU_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    env = os.environ.get("FOLDNET_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "foldnet" / "kernels"


def _cpu_flags() -> str:
    """The CPU's feature flags (part of the cache key: -march=native code is machine-specific)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _flags() -> tuple[str, ...]:
    """Compiler flags; ``FOLDNET_KERNEL_MARCH`` (default ``native``) picks the instruction set,
    e.g. ``x86-64-v3`` (AVX2) for a library shared by machines of different generations."""
    return _FLAGS + (f"-march={os.environ.get('FOLDNET_KERNEL_MARCH', 'native')}",)


def library_path() -> Path:
    """Where the compiled kernels for this source, compiler, jaxlib and CPU live."""
    import jaxlib

    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join((_compiler(),) + _flags()).encode(),
                 jaxlib.__version__.encode(), _cpu_flags().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"foldnet_cpu_kernels-{key.hexdigest()[:16]}.so"


def build() -> Path:
    """Compile ``cpu_kernels.cc`` unless this machine's library exists; returns its path.

    Written to a temporary file in the cache folder and renamed into place, so a
    concurrent build (two test workers) or an interrupted one never leaves a
    half-written library. Raises RuntimeError with the compiler's output on failure.
    """
    out = library_path()
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.stem + ".", suffix=".tmp.so", dir=out.parent)
    os.close(fd)
    cmd = [_compiler(), *_flags(), f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE} failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
        os.replace(tmp, out)
    except FileNotFoundError as e:  # no compiler on PATH
        raise RuntimeError(f"no C++ compiler to build {SOURCE}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.cache
def _load() -> int:
    """Builds, loads and registers the kernels; their vector width in floats, 0 if unavailable."""
    import ctypes

    try:
        lib = ctypes.cdll.LoadLibrary(str(build()))
        for name in _TARGETS:
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
        return int(lib.foldnet_vector_width())
    except (RuntimeError, OSError, AttributeError) as e:
        warnings.warn(f"foldnet: CPU kernels unavailable, using XLA's own operations "
                      f"(same values, slower training step): {e}", RuntimeWarning, stacklevel=3)
        return 0


def available() -> bool:
    """Whether the kernels are enabled, built and registered (builds them on first call)."""
    return enabled_by_env() and _load() > 0


def norm_elu_supported(channels: int) -> bool:
    """Whether ``norm_elu_mask`` handles this channel count (a multiple of the vector width, <= 16 vectors)."""
    return available() and channels % _load() == 0 and channels <= 16 * _load()


def dense_ce_supported(channels: int, bins: int) -> bool:
    """Whether ``dense_masked_nll`` handles this input width and bin count (channels a multiple
    of the vector width, <= 16 vectors; bins <= 17 vectors: 65 bins even with SSE)."""
    return (available() and channels % _load() == 0 and channels <= 16 * _load()
            and 1 <= bins <= 17 * _load())


def _require() -> None:
    if not _load():
        raise RuntimeError("foldnet's CPU kernels are not available (see the warning above)")


_EMPTY = np.zeros((0,), np.float32)


def _opt(a):
    """An optional kernel operand: the array, or an empty one (the kernel leaves the term out)."""
    return _EMPTY if a is None else a


# 3x3 convolutions whose channels fill the vector registers run the Winograd F(2x2, 3x3)
# algorithm (2.25x fewer multiply-adds); False forces the direct kernel (tests compare both).
WINOGRAD = True


def _ffi_conv(x, k, dilation, bias=None, res=None, mask=None):
    """(conv(x, k) + bias + res) * mask, the optional terms left out when None."""
    _require()
    out = jax.ShapeDtypeStruct(x.shape[:3] + (k.shape[3],), jnp.float32)
    return jax.ffi.ffi_call("foldnet_conv2d_fwd", out, vmap_method="sequential")(
        x, k, _opt(bias), _opt(res), _opt(mask), dh=np.int64(dilation[0]), dw=np.int64(dilation[1]),
        winograd=bool(WINOGRAD))


def _ffi_filter_grad(x, g, kshape: tuple, dilation):
    """(filter gradient, bias gradient) of conv(x, k) + bias for the output cotangent g."""
    _require()
    out = (jax.ShapeDtypeStruct(kshape, jnp.float32), jax.ShapeDtypeStruct(kshape[-1:], jnp.float32))
    return jax.ffi.ffi_call("foldnet_conv2d_wgrad", out, vmap_method="sequential")(
        x, g, dh=np.int64(dilation[0]), dw=np.int64(dilation[1]))


def _input_grad(g, k, dilation):
    # The input gradient of a 'SAME' convolution with odd kernels is the same
    # convolution of the cotangent with the kernel flipped in space and its
    # input/output channels swapped.
    return _ffi_conv(g, jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2), dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jnp.ndarray, k: jnp.ndarray, dilation: tuple[int, int]) -> jnp.ndarray:
    """'SAME' stride-1 dilated convolution, x [B, H, W, Ci] f32, k [KH, KW, Ci, Co] f32 (odd KH, KW).

    Equals ``lax.conv_general_dilated(x, k, (1, 1), "SAME", rhs_dilation=dilation,
    dimension_numbers=("NHWC", "HWIO", "NHWC"))`` to float rounding; needs ``available()``.
    """
    return _ffi_conv(x, k, dilation)


def _conv2d_fwd(x, k, dilation):
    return _ffi_conv(x, k, dilation), (x, k)


def _conv2d_bwd(dilation, res, g):
    x, k = res
    return _input_grad(g, k, dilation), _ffi_filter_grad(x, g, k.shape, dilation)[0]


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


# ------------------------------------------------------------------ LayerNorm -> ELU -> mask


def _ffi_norm_elu(x, scale, bias, mask, epsilon, elu=True):
    _require()
    return jax.ffi.ffi_call("foldnet_norm_elu_fwd", jax.ShapeDtypeStruct(x.shape, jnp.float32),
                            vmap_method="sequential")(x, scale, bias, mask, eps=np.float32(epsilon), elu=elu)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def norm_elu_mask(x, scale, bias, mask, epsilon: float, elu: bool = True):
    """``elu(LayerNorm(x) * scale + bias) * mask`` over the last axis, f32, one pass each way.

    x [..., C], scale and bias [C], mask [..., 1] (constant: zero cotangent). The
    LayerNorm is flax's (fast variance E[x^2] - E[x]^2 clamped at 0, eps inside the
    rsqrt); equals ``foldnet.model.layers._norm_elu_mask`` to float rounding. The
    backward pass recomputes the statistics from x instead of saving normalised
    copies. ``elu=False``: ``(LayerNorm(x) * scale + bias) * mask``. Needs
    ``norm_elu_supported(C)``.
    """
    return _ffi_norm_elu(x, scale, bias, mask, epsilon, elu)


def _norm_elu_fwd(x, scale, bias, mask, epsilon, elu):
    return _ffi_norm_elu(x, scale, bias, mask, epsilon, elu), (x, scale, bias, mask)


def _ffi_norm_elu_grad(x, scale, bias, mask, g, acc, epsilon, elu=True):
    """(acc + dx, dscale, dbias) of ``norm_elu_mask`` for the output cotangent g."""
    out = (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(scale.shape, jnp.float32),
           jax.ShapeDtypeStruct(bias.shape, jnp.float32))
    return jax.ffi.ffi_call("foldnet_norm_elu_bwd", out, vmap_method="sequential")(
        x, scale, bias, mask, g, _opt(acc), eps=np.float32(epsilon), elu=elu)


def _norm_elu_bwd(epsilon, elu, res, g):
    x, scale, bias, mask = res
    dx, dscale, dbias = _ffi_norm_elu_grad(x, scale, bias, mask, g, None, epsilon, elu)
    return dx, dscale, dbias, jnp.zeros_like(mask)


norm_elu_mask.defvjp(_norm_elu_fwd, _norm_elu_bwd)


# ------------------------------------------------------------------ the 2D residual block


@functools.partial(jax.custom_vjp, nondiff_argnums=(11, 12))
def residual_block(x, mask, norm_a, norm_a_bias, kernel_a, bias_a, norm_b, norm_b_bias, kernel_b, bias_b,
                   drop, dilation: tuple[int, int], epsilon: float):
    """``foldnet.model.layers.ResidualBlock`` on [B, H, W, C] in f32, as five kernel calls each way.

    h1 = elu(LN_a(x)) * m; c1 = conv_a(h1) + bias_a; h2 = elu(LN_b(c1)) * m * drop;
    returns (x + conv_b(h2) + bias_b) * m. ``drop`` is the dropout multiplier (0 or
    1 / keep, from ``layers.Dropout``) or None; ``mask`` [B, H, W, 1] and ``drop`` are
    constants (zero cotangents).

    Why one custom VJP for the whole block: every tensor the block hands on is then a
    kernel's output, so XLA:CPU cannot fuse the residual stream's chain of adds and
    masks into each consumer -- it did, re-reading all earlier blocks' outputs in every
    block, forward and backward -- and the residual cotangent is added inside the
    LayerNorm backward pass instead of in a pass of its own.
    """
    return _block_fwd(x, mask, norm_a, norm_a_bias, kernel_a, bias_a, norm_b, norm_b_bias, kernel_b, bias_b,
                      drop, dilation, epsilon)[0]


def _block_fwd(x, mask, norm_a, norm_a_bias, kernel_a, bias_a, norm_b, norm_b_bias, kernel_b, bias_b, drop,
               dilation, epsilon):
    h1 = _ffi_norm_elu(x, norm_a, norm_a_bias, mask, epsilon)
    c1 = _ffi_conv(h1, kernel_a, dilation, bias=bias_a)
    h2 = _ffi_norm_elu(c1, norm_b, norm_b_bias, mask, epsilon)
    if drop is not None:
        h2 = h2 * drop
    out = _ffi_conv(h2, kernel_b, dilation, bias=bias_b, res=x, mask=mask)
    return out, (x, mask, norm_a, norm_a_bias, kernel_a, h1, c1, norm_b, norm_b_bias, kernel_b, h2, drop)


def _block_bwd(dilation, epsilon, res, g):
    x, mask, norm_a, norm_a_bias, kernel_a, h1, c1, norm_b, norm_b_bias, kernel_b, h2, drop = res
    gm = g * mask
    dkernel_b, dbias_b = _ffi_filter_grad(h2, gm, kernel_b.shape, dilation)
    dh2 = _input_grad(gm, kernel_b, dilation)
    if drop is not None:
        dh2 = dh2 * drop
    dc1, dnorm_b, dnorm_b_bias = _ffi_norm_elu_grad(c1, norm_b, norm_b_bias, mask, dh2, None, epsilon)
    dkernel_a, dbias_a = _ffi_filter_grad(h1, dc1, kernel_a.shape, dilation)
    dh1 = _input_grad(dc1, kernel_a, dilation)
    # the residual path's cotangent gm is added inside the LayerNorm backward pass
    dx, dnorm_a, dnorm_a_bias = _ffi_norm_elu_grad(x, norm_a, norm_a_bias, mask, dh1, gm, epsilon)
    return (dx, jnp.zeros_like(mask), dnorm_a, dnorm_a_bias, dkernel_a, dbias_a, dnorm_b, dnorm_b_bias,
            dkernel_b, dbias_b, None if drop is None else jnp.zeros_like(drop))


residual_block.defvjp(_block_fwd, _block_bwd)


# ------------------------------------------------------------------ dense -> masked cross-entropy


def _ffi_dense_ce(x, kernel, bias, labels, mask):
    _require()
    return jax.ffi.ffi_call("foldnet_dense_ce_fwd", jax.ShapeDtypeStruct(x.shape[:1], jnp.float32),
                            vmap_method="sequential")(x, kernel, bias, labels, mask)


@jax.custom_vjp
def dense_masked_nll(x, kernel, bias, labels, mask):
    """Per-example sum of mask * cross-entropy of the logits ``x @ kernel + bias``, f32.

    x [B, P, C], kernel [C, K], bias [K], labels [B, P] int32 in [0, K), mask [B, P]
    (constant: zero cotangent). Returns [B]: ``sum_p mask * (logsumexp(l_p) - l_p[label_p])``
    over the rows with mask != 0 (others contribute 0, whatever their values). Equals the
    dense layer followed by ``log_softmax`` and a one-hot pick to float rounding (the sums
    accumulate in double); the backward pass recomputes the logits row by row instead of
    keeping [B, P, K] of them. Needs ``dense_ce_supported(C, K)``.
    """
    return _ffi_dense_ce(x, kernel, bias, labels, mask)


def _dense_nll_fwd(x, kernel, bias, labels, mask):
    return _ffi_dense_ce(x, kernel, bias, labels, mask), (x, kernel, bias, labels, mask)


def _dense_nll_bwd(res, g):
    x, kernel, bias, labels, mask = res
    out = (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(kernel.shape, jnp.float32),
           jax.ShapeDtypeStruct(bias.shape, jnp.float32))
    dx, dkernel, dbias = jax.ffi.ffi_call("foldnet_dense_ce_bwd", out, vmap_method="sequential")(
        x, kernel, bias, labels, mask, g)
    return dx, dkernel, dbias, None, jnp.zeros_like(mask)


dense_masked_nll.defvjp(_dense_nll_fwd, _dense_nll_bwd)


# ------------------------------------------------------------------ folding: distogram + clash pair terms


def pair_terms(cb, ca, knots, dist_weight, clash_weight, grid_start: float, width: float, t_ca: float, t_cb: float):
    """The folding potential's distogram and clash energies of R structures and their
    coordinate gradients, f32 (not differentiable itself: ``foldnet.structure.potential``
    wraps it in a custom VJP).

    cb, ca [R, M, 3] (M even), knots [M/2 * M * 68] spline knots in the packed pair layout
    of ``foldnet.structure.potential`` (grid from ``grid_start``, spacing ``width``),
    dist_weight and clash_weight [M/2, M]. Returns (energies [2, R]: distogram, clash;
    d distogram / d cb, d clash / d cb, d clash / d ca, each [R, M, 3]). The energies are
    ``potential._pair_terms``' with distances taken directly from the coordinate
    differences (the reference uses Gram matrices: equal to f32 rounding).
    """
    _require()
    r, m, _ = cb.shape
    grad = jax.ShapeDtypeStruct((r, m, 3), jnp.float32)
    out = (jax.ShapeDtypeStruct((2, r), jnp.float32), grad, grad, grad)
    return jax.ffi.ffi_call("foldnet_pair_terms", out, vmap_method="sequential")(
        cb, ca, knots, dist_weight, clash_weight, grid_start=np.float32(grid_start), width=np.float32(width),
        t_ca=np.float32(t_ca), t_cb=np.float32(t_cb))
