// foldnet's CPU kernels for XLA:CPU, called through the XLA FFI: the 2D trunk's dilated
// convolutions and its LayerNorm -> ELU -> mask pre-activations, the pair heads' dense layer ->
// cross-entropy, and the folding potential's pair terms (at the end of the file).
//
// foldnet/model/cpu_kernels.py compiles this file on first use (with -march=native, so the
// vector width is the machine's: 16 floats with AVX-512, 8 with AVX2, 4 otherwise) and
// registers the handlers:
//
//   foldnet_conv2d_fwd:   y[b,h,w,o]  = (sum_{i,j,c} x[b, h+dh(i-rh), w+dw(j-rw), c] * k[i,j,c,o]
//                                        + bias[o] + res[b,h,w,o]) * mask[b,h,w]
//   foldnet_conv2d_wgrad: dk[i,j,c,o] = sum_{b,h,w} x[b, h+dh(i-rh), w+dw(j-rw), c] * g[b,h,w,o],
//                         dbias[o]    = sum_{b,h,w} g[b,h,w,o]
//   foldnet_norm_elu_fwd / _bwd: elu(LayerNorm(x) * scale + bias) * mask and its gradients
//
// x: [B, H, W, Ci] (NHWC), k: [KH, KW, Ci, Co] (HWIO), y and g: [B, H, W, Co], stride 1,
// odd kernel sizes, zero padding rh = dh*(KH-1)/2 (the 'SAME' padding of a dilated
// convolution); bias, res and mask are optional (empty buffers). The input gradient is
// the forward kernel applied to g with the kernel flipped and transposed (done in Python).
// 3x3 kernels whose channels fill the vector registers take the Winograd F(2x2, 3x3)
// forward (below; attribute winograd=false forces the direct one).
//
// Why not XLA's own convolution: XLA:CPU runs the filter gradient as a convolution with
// the batch as the contracted feature axis and a 128 x 128 window, 2-3x slower than the
// forward convolution (docs/model.md, "CPU kernels"). Here both are register-blocked
// outer products over rows that stay in L1: the forward keeps a tile of P output pixels
// x 2 vectors of output channels in registers and streams the 3x3xCi taps; the filter
// gradient keeps a block of CB input channels x 2 vectors of output channels in
// registers and streams the W pixels of one row. Work is split over image rows on
// XLA's intra-op thread pool; each worker sums its own filter gradient, reduced at
// the end in a fixed order, so results do not depend on thread timing.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int VL = 16;  // floats per vector register
constexpr int P = 12;   // output pixels per forward tile (2 x 12 accumulators of 32 registers)
constexpr int CB = 12;  // input channels per filter-gradient block
#elif defined(__AVX__)
constexpr int VL = 8;
constexpr int P = 6;  // 2 x 6 accumulators of 16 registers
constexpr int CB = 6;
#else
constexpr int VL = 4;
constexpr int P = 6;
constexpr int CB = 6;
#endif
constexpr int NV = 2;  // output-channel vectors per register tile

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef float vfu __attribute__((vector_size(VL * sizeof(float)), aligned(4)));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
// a in every lane. Written as a - 0 (exact for every a, so the compiler drops it): a + 0
// is not (-0 + 0 = +0) and would stay an add before each broadcast, on the ports the
// FMAs need.
inline vf splat(float a) { return a - vf{}; }

struct Geometry {
  int64_t B, H, W, Ci, Co, KH, KW, dh, dw;
  int64_t rows() const { return B * H; }
};

// Runs fn(task) for task in [0, n) on the calling thread and up to `workers` pool
// threads. Tasks are claimed from a shared counter, so the caller finishes the work
// alone if no pool thread ever starts (no deadlock when the pool is busy).
template <typename Fn>
void parallel_for(ffi::ThreadPool* pool, int64_t n, int64_t workers, Fn fn) {
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  if (pool == nullptr || workers <= 1 || n <= 1) {
    for (int64_t t = 0; t < n; ++t) fn(t);
    return;
  }
  auto shared = std::make_shared<Shared>();
  auto run = [shared, n, &fn]() {
    int64_t t;
    while ((t = shared->next.fetch_add(1)) < n) {
      fn(t);
      if (shared->done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(shared->mu);
        shared->cv.notify_all();
      }
    }
  };
  // Helpers capture fn by reference: they only touch it after claiming a task, and the
  // caller does not return before every claimed task is done.
  for (int64_t i = 1; i < std::min(workers, n); ++i) {
    auto task = run;
    pool->Schedule(std::move(task));
  }
  run();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done.load() == n; });
}

// Workers for a fixed partition of the work (the reductions, whose partial sums must not
// depend on timing): one per pool thread, the caller being one of them. The pool has a
// thread per core, so one more worker would leave one core two shares and the call would
// take 2/3 of the serial time instead of 1/2 (measured: filter gradient at batch 4, crop
// 128 on 2 cores, 4.5 vs 5.7-6.1 ms).
int64_t fixed_workers(const ffi::ThreadPool& pool) {
  return std::max<int64_t>(1, pool.num_threads());
}

// fixed_workers for a reduction over n rows, with at least 256 rows each (fewer workers
// for small inputs: a share's partial sums are not worth the pool round trip).
int64_t row_workers(const ffi::ThreadPool& pool, int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(fixed_workers(pool), n / 256));
}

// ---------------------------------------------------------------- forward

// One tile: NP (<= P) output pixels starting at column w0 of output row (b, h), output
// channels [o0, o0 + NV*VL). xrows[i] is the input row h + dh(i - rh) or null (padding).
template <int NP>
inline void fwd_tile(const Geometry& g, const float* const* xrows, const float* k, float* yrow,
                     int64_t w0, int64_t o0) {
  vf acc[NP][NV];
  for (int p = 0; p < NP; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = vf{};
  const int64_t Ci = g.Ci, Co = g.Co, W = g.W;
  for (int64_t i = 0; i < g.KH; ++i) {
    const float* xr = xrows[i];
    if (xr == nullptr) continue;
    for (int64_t j = 0; j < g.KW; ++j) {
      const int64_t off = g.dw * (j - (g.KW - 1) / 2);
      const float* kt = k + ((i * g.KW + j) * Ci) * Co + o0;
      // Fast path: every pixel of the tile reads a real input column.
      if (w0 + off >= 0 && w0 + NP - 1 + off < W) {
        const float* xb = xr + (w0 + off) * Ci;
        for (int64_t c = 0; c < Ci; ++c) {
          vf kv[NV];
          for (int v = 0; v < NV; ++v) kv[v] = load(kt + c * Co + v * VL);
          for (int p = 0; p < NP; ++p) {
            const vf xv = splat(xb[p * Ci + c]);
            for (int v = 0; v < NV; ++v) acc[p][v] += xv * kv[v];
          }
        }
      } else {
        for (int p = 0; p < NP; ++p) {
          const int64_t ws = w0 + p + off;
          if (ws < 0 || ws >= W) continue;
          const float* xp = xr + ws * Ci;
          for (int64_t c = 0; c < Ci; ++c) {
            const vf xv = splat(xp[c]);
            for (int v = 0; v < NV; ++v) acc[p][v] += xv * load(kt + c * Co + v * VL);
          }
        }
      }
    }
  }
  for (int p = 0; p < NP; ++p)
    for (int v = 0; v < NV; ++v) store(yrow + (w0 + p) * Co + o0 + v * VL, acc[p][v]);
}

template <int NP>
inline void fwd_tail(const Geometry& g, const float* const* xrows, const float* k, float* yrow,
                     int64_t w0, int64_t o0, int64_t n) {
  if constexpr (NP > 0) {
    if (n == NP) return fwd_tile<NP>(g, xrows, k, yrow, w0, o0);
    fwd_tail<NP - 1>(g, xrows, k, yrow, w0, o0, n);
  }
}

// Output channels that are not a multiple of NV*VL: plain loops (not used by foldnet's
// presets, kept for correctness).
void fwd_row_scalar(const Geometry& g, const float* const* xrows, const float* k, float* yrow,
                    int64_t o_begin) {
  for (int64_t w = 0; w < g.W; ++w)
    for (int64_t o = o_begin; o < g.Co; ++o) {
      float s = 0.f;
      for (int64_t i = 0; i < g.KH; ++i) {
        if (xrows[i] == nullptr) continue;
        for (int64_t j = 0; j < g.KW; ++j) {
          const int64_t ws = w + g.dw * (j - (g.KW - 1) / 2);
          if (ws < 0 || ws >= g.W) continue;
          for (int64_t c = 0; c < g.Ci; ++c)
            s += xrows[i][ws * g.Ci + c] * k[((i * g.KW + j) * g.Ci + c) * g.Co + o];
        }
      }
      yrow[w * g.Co + o] = s;
    }
}

// What the forward adds after the convolution, per output row while it is in L1:
// y = (conv + bias + res) * mask, each term optional (null).
struct Epilogue {
  const float* bias = nullptr;  // [Co]
  const float* res = nullptr;   // [B, H, W, Co]
  const float* mask = nullptr;  // [B, H, W]

  // (v + bias[o:o+VL] + res[pix, o:o+VL]) * mask[pix] for output pixel pix (flat over B, H, W)
  vf apply(vf v, int64_t pix, int64_t Co, int64_t o) const {
    if (bias != nullptr) v += load(bias + o);
    if (res != nullptr) v += load(res + pix * Co + o);
    return mask == nullptr ? v : v * splat(mask[pix]);
  }
};

void fwd_row(const Geometry& g, const float* x, const float* k, float* y, int64_t row, const Epilogue& ep) {
  const int64_t b = row / g.H, h = row % g.H;
  std::vector<const float*> xrows(g.KH);
  for (int64_t i = 0; i < g.KH; ++i) {
    const int64_t hs = h + g.dh * (i - (g.KH - 1) / 2);
    xrows[i] = (hs < 0 || hs >= g.H) ? nullptr : x + ((b * g.H + hs) * g.W) * g.Ci;
  }
  float* yrow = y + row * g.W * g.Co;
  const int64_t co_vec = g.Co - g.Co % (NV * VL);
  for (int64_t o0 = 0; o0 < co_vec; o0 += NV * VL) {
    int64_t w0 = 0;
    for (; w0 + P <= g.W; w0 += P) fwd_tile<P>(g, xrows.data(), k, yrow, w0, o0);
    if (w0 < g.W) fwd_tail<P - 1>(g, xrows.data(), k, yrow, w0, o0, g.W - w0);
  }
  if (co_vec < g.Co) fwd_row_scalar(g, xrows.data(), k, yrow, co_vec);
  if (ep.bias == nullptr && ep.res == nullptr && ep.mask == nullptr) return;
  const float* rrow = ep.res == nullptr ? nullptr : ep.res + row * g.W * g.Co;
  if (g.Co % VL == 0) {
    for (int64_t w = 0; w < g.W; ++w)
      for (int64_t o = 0; o < g.Co; o += VL) {
        float* yp = yrow + w * g.Co + o;
        store(yp, ep.apply(load(yp), row * g.W + w, g.Co, o));
      }
    return;
  }
  for (int64_t w = 0; w < g.W; ++w) {
    const float m = ep.mask == nullptr ? 1.f : ep.mask[row * g.W + w];
    float* yp = yrow + w * g.Co;
    for (int64_t o = 0; o < g.Co; ++o) {
      float v = yp[o];
      if (ep.bias != nullptr) v += ep.bias[o];
      if (rrow != nullptr) v += rrow[w * g.Co + o];
      yp[o] = v * m;
    }
  }
}

// ---------------------------------------------------------------- Winograd forward, 3x3
//
// F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
// a 2x2 block of outputs is A^T [(G k G^T) . (B^T d B)] A for the 4x4 input patch d, so
// the 3x3xCi taps of four outputs cost 16 Ci-long products instead of 36: the
// multiply-adds drop 2.25x and the transforms are adds. A dilated convolution is an
// undilated one on each of the dh x dw interleaved sub-grids, so a tile's outputs and
// its input patch are simply dh / dw apart. Per tile row, chunks of WT tiles go through
// three stages that stay in L1/L2: input transform -> 16 register-blocked
// [WT x Ci] x [Ci x Co] products (the direct kernel's tile shape) -> output transform
// and epilogue. The transforms' constants are 0, +-1 and 1/2, so the rounding differs
// from the direct sum by a few ulps (tested against XLA to 1e-5).

constexpr int WT = P;  // tiles per register block

// U[xi][c][o] = (G k[:, :, c, o] G^T)[xi], xi = 4 * row + column of the 4x4 transform,
// VL (c, o) pairs per step: the 9 taps and 16 outputs are 4 KB apart for 32 x 32 channels,
// so a scalar loop's 25 streams fight over one L1 set (68 us per call, measured).
void winograd_filter(const Geometry& g, const float* k, float* U) {
  const int64_t CC = g.Ci * g.Co;  // a multiple of VL (winograd_ok)
  const vf half = splat(0.5f);
  for (int64_t e = 0; e < CC; e += VL) {
    vf t[4][3];
    for (int j = 0; j < 3; ++j) {
      const vf k0 = load(k + j * CC + e), k1 = load(k + (3 + j) * CC + e), k2 = load(k + (6 + j) * CC + e);
      t[0][j] = k0;
      t[1][j] = half * (k0 + k1 + k2);
      t[2][j] = half * (k0 - k1 + k2);
      t[3][j] = k2;
    }
    for (int i = 0; i < 4; ++i) {
      store(U + (i * 4 + 0) * CC + e, t[i][0]);
      store(U + (i * 4 + 1) * CC + e, half * (t[i][0] + t[i][1] + t[i][2]));
      store(U + (i * 4 + 2) * CC + e, half * (t[i][0] - t[i][1] + t[i][2]));
      store(U + (i * 4 + 3) * CC + e, t[i][2]);
    }
  }
}

// The first index of every 2-output tile along an axis of length n with dilation d: the
// sub-grid a (indices a, a + d, ...) pairs its indices as (a + 2kd, a + (2k+1)d); a
// tile whose second index falls outside the axis computes it and drops it.
// In increasing order, so a chunk of tiles (and a task's tile rows) reads nearby inputs:
// sub-grid by sub-grid, a chunk of 12 dilation-8 tiles would span 12 x 16 columns.
std::vector<int64_t> tile_starts(int64_t n, int64_t d) {
  std::vector<int64_t> s;
  for (int64_t a = 0; a < std::min(n, d); ++a)
    for (int64_t i = a; i < n; i += 2 * d) s.push_back(i);
  std::sort(s.begin(), s.end());
  return s;
}

// M[xi][t][o0:o0+NV*VL] = sum_c V[xi][t][c] U[xi][c][o0:...] for NT tiles. CI > 0 is Ci
// as a compile-time constant: the NT broadcasts then address V at fixed offsets from one
// pointer (with a run-time Ci the compiler keeps NT offsets and spills them to the stack).
template <int NT, int CI>
inline void wino_gemm(const float* V, const float* U, float* M, int64_t Ci_rt, int64_t Co) {
  const int64_t Ci = CI > 0 ? CI : Ci_rt;
  for (int xi = 0; xi < 16; ++xi) {
    const float* Vx = V + xi * WT * Ci;
    const float* Ux = U + xi * Ci * Co;
    float* Mx = M + xi * WT * Co;
    for (int64_t o0 = 0; o0 < Co; o0 += NV * VL) {
      vf acc[NT][NV];
      for (int t = 0; t < NT; ++t)
        for (int v = 0; v < NV; ++v) acc[t][v] = vf{};
      for (int64_t c = 0; c < Ci; ++c) {
        vf kv[NV];
        for (int v = 0; v < NV; ++v) kv[v] = load(Ux + c * Co + o0 + v * VL);
        const float* vc = Vx + c;
        for (int t = 0; t < NT; ++t) {
          const vf xv = splat(vc[t * Ci]);
          for (int v = 0; v < NV; ++v) acc[t][v] += xv * kv[v];
        }
      }
      for (int t = 0; t < NT; ++t)
        for (int v = 0; v < NV; ++v) store(Mx + t * Co + o0 + v * VL, acc[t][v]);
    }
  }
}

template <int NT, int CI>
inline void wino_gemm_tail(const float* V, const float* U, float* M, int64_t Ci, int64_t Co, int n) {
  if constexpr (NT > 0) {
    if (n == NT) return wino_gemm<NT, CI>(V, U, M, Ci, Co);
    wino_gemm_tail<NT - 1, CI>(V, U, M, Ci, Co, n);
  }
}

inline void wino_gemm_any(const float* V, const float* U, float* M, int64_t Ci, int64_t Co, int n) {
  switch (Ci) {
    case 32: return wino_gemm_tail<WT, 32>(V, U, M, Ci, Co, n);
    case 64: return wino_gemm_tail<WT, 64>(V, U, M, Ci, Co, n);
    case 128: return wino_gemm_tail<WT, 128>(V, U, M, Ci, Co, n);
    default: return wino_gemm_tail<WT, 0>(V, U, M, Ci, Co, n);
  }
}

// One tile row (output rows h and h + dh of image b) for output columns starting at
// cols[0..ncols). V and M are scratch of 16 * WT * Ci and 16 * WT * Co floats.
void wino_tile_row(const Geometry& g, const float* x, const float* U, float* y, int64_t b, int64_t h,
                   const std::vector<int64_t>& cols, const Epilogue& ep, float* V, float* M) {
  const int64_t Ci = g.Ci, Co = g.Co, W = g.W, dh = g.dh, dw = g.dw;
  const float* xrow[4];
  for (int i = 0; i < 4; ++i) {
    const int64_t hs = h + dh * (i - 1);
    xrow[i] = (hs < 0 || hs >= g.H) ? nullptr : x + ((b * g.H + hs) * W) * Ci;
  }
  const vf zero = vf{};
  for (size_t t0 = 0; t0 < cols.size(); t0 += WT) {
    const int nt = static_cast<int>(std::min<size_t>(WT, cols.size() - t0));
    // input transform: V[xi][t][c] = (B^T d B)[xi], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
    for (int t = 0; t < nt; ++t) {
      const float* xp[4][4];
      for (int j = 0; j < 4; ++j) {
        const int64_t ws = cols[t0 + t] + dw * (j - 1);
        const bool in = ws >= 0 && ws < W;
        for (int i = 0; i < 4; ++i) xp[i][j] = (in && xrow[i] != nullptr) ? xrow[i] + ws * Ci : nullptr;
      }
      for (int64_t c = 0; c < Ci; c += VL) {
        vf d[4][4];
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) d[i][j] = xp[i][j] == nullptr ? zero : load(xp[i][j] + c);
        vf r[4][4];
        for (int j = 0; j < 4; ++j) {
          r[0][j] = d[0][j] - d[2][j];
          r[1][j] = d[1][j] + d[2][j];
          r[2][j] = d[2][j] - d[1][j];
          r[3][j] = d[1][j] - d[3][j];
        }
        for (int i = 0; i < 4; ++i) {
          float* v = V + (i * 4) * WT * Ci + t * Ci + c;
          store(v, r[i][0] - r[i][2]);
          store(v + WT * Ci, r[i][1] + r[i][2]);
          store(v + 2 * WT * Ci, r[i][2] - r[i][1]);
          store(v + 3 * WT * Ci, r[i][1] - r[i][3]);
        }
      }
    }
    wino_gemm_any(V, U, M, Ci, Co, nt);
    // output transform: A^T = [1 1 1 0; 0 1 -1 -1], then bias + res and mask
    for (int t = 0; t < nt; ++t) {
      const int64_t w0 = cols[t0 + t];
      for (int64_t o = 0; o < Co; o += VL) {
        vf s[4][2];
        for (int i = 0; i < 4; ++i) {
          const float* m = M + (i * 4) * WT * Co + t * Co + o;
          const vf m0 = load(m), m1 = load(m + WT * Co), m2 = load(m + 2 * WT * Co), m3 = load(m + 3 * WT * Co);
          s[i][0] = m0 + m1 + m2;
          s[i][1] = m1 - m2 - m3;
        }
        for (int ii = 0; ii < 2; ++ii) {
          const int64_t hh = h + ii * dh;
          if (hh >= g.H) continue;
          const int64_t row = b * g.H + hh;
          for (int jj = 0; jj < 2; ++jj) {
            const int64_t ww = w0 + jj * dw;
            if (ww >= W) continue;
            const vf v = ii == 0 ? s[0][jj] + s[1][jj] + s[2][jj] : s[1][jj] - s[2][jj] - s[3][jj];
            const int64_t pix = row * W + ww;
            store(y + pix * Co + o, ep.apply(v, pix, Co, o));
          }
        }
      }
    }
  }
}

bool winograd_ok(const Geometry& g) {
  return g.KH == 3 && g.KW == 3 && g.Ci % VL == 0 && g.Co % (NV * VL) == 0;
}

void winograd_fwd(ffi::ThreadPool* pool, const Geometry& g, const float* x, const float* k, float* y,
                  const Epilogue& ep) {
  std::vector<float> U(16 * g.Ci * g.Co);
  winograd_filter(g, k, U.data());
  const std::vector<int64_t> rows = tile_starts(g.H, g.dh), cols = tile_starts(g.W, g.dw);
  const int64_t per_image = static_cast<int64_t>(rows.size());
  const int64_t n = g.B * per_image;
  // a task is a few tile rows, like the direct kernel's kRowsPerTask image rows
  constexpr int64_t kTileRowsPerTask = 4;
  const int64_t tasks = (n + kTileRowsPerTask - 1) / kTileRowsPerTask;
  parallel_for(pool, tasks, pool->num_threads() + 1, [&](int64_t task) {
    std::vector<float> V(16 * WT * g.Ci), M(16 * WT * g.Co);
    const int64_t end = std::min(n, (task + 1) * kTileRowsPerTask);
    for (int64_t r = task * kTileRowsPerTask; r < end; ++r)
      wino_tile_row(g, x, U.data(), y, r / per_image, rows[r % per_image], cols, ep, V.data(), M.data());
  });
}

// ---------------------------------------------------------------- filter gradient

// dk[i, j, c0:c0+NC, o0:o0+NV*VL] += sum_w xrow[w + off, c] * grow[w, o] for one row pair.
template <int NC>
inline void wgrad_block(const Geometry& g, const float* xr, const float* gr, float* dk_tap,
                        int64_t off, int64_t c0, int64_t o0) {
  vf acc[NC][NV];
  for (int c = 0; c < NC; ++c)
    for (int v = 0; v < NV; ++v) acc[c][v] = vf{};
  const int64_t Ci = g.Ci, Co = g.Co;
  const int64_t w_begin = std::max<int64_t>(0, -off), w_end = std::min<int64_t>(g.W, g.W - off);
  const float* xb = xr + off * Ci + c0;
  for (int64_t w = w_begin; w < w_end; ++w) {
    vf gv[NV];
    for (int v = 0; v < NV; ++v) gv[v] = load(gr + w * Co + o0 + v * VL);
    for (int c = 0; c < NC; ++c) {
      const vf xv = splat(xb[w * Ci + c]);
      for (int v = 0; v < NV; ++v) acc[c][v] += xv * gv[v];
    }
  }
  for (int c = 0; c < NC; ++c)
    for (int v = 0; v < NV; ++v) {
      float* d = dk_tap + (c0 + c) * Co + o0 + v * VL;
      store(d, load(d) + acc[c][v]);
    }
}

template <int NC>
inline void wgrad_tail(const Geometry& g, const float* xr, const float* gr, float* dk_tap,
                       int64_t off, int64_t c0, int64_t o0, int64_t n) {
  if constexpr (NC > 0) {
    if (n == NC) return wgrad_block<NC>(g, xr, gr, dk_tap, off, c0, o0);
    wgrad_tail<NC - 1>(g, xr, gr, dk_tap, off, c0, o0, n);
  }
}

void wgrad_row(const Geometry& g, const float* x, const float* gy, float* dk, float* db, int64_t row) {
  const int64_t b = row / g.H, h = row % g.H;
  const int64_t Ci = g.Ci, Co = g.Co;
  const float* gr = gy + row * g.W * Co;
  for (int64_t w = 0; w < g.W; ++w)
    for (int64_t o = 0; o < Co; ++o) db[o] += gr[w * Co + o];
  const int64_t co_vec = Co - Co % (NV * VL);
  for (int64_t i = 0; i < g.KH; ++i) {
    const int64_t hs = h + g.dh * (i - (g.KH - 1) / 2);
    if (hs < 0 || hs >= g.H) continue;
    const float* xr = x + ((b * g.H + hs) * g.W) * Ci;
    for (int64_t j = 0; j < g.KW; ++j) {
      const int64_t off = g.dw * (j - (g.KW - 1) / 2);
      float* dk_tap = dk + ((i * g.KW + j) * Ci) * Co;
      for (int64_t o0 = 0; o0 < co_vec; o0 += NV * VL) {
        int64_t c0 = 0;
        for (; c0 + CB <= Ci; c0 += CB) wgrad_block<CB>(g, xr, gr, dk_tap, off, c0, o0);
        if (c0 < Ci) wgrad_tail<CB - 1>(g, xr, gr, dk_tap, off, c0, o0, Ci - c0);
      }
      if (co_vec < Co) {
        const int64_t w_begin = std::max<int64_t>(0, -off), w_end = std::min<int64_t>(g.W, g.W - off);
        for (int64_t c = 0; c < Ci; ++c)
          for (int64_t o = co_vec; o < Co; ++o) {
            float s = 0.f;
            for (int64_t w = w_begin; w < w_end; ++w) s += xr[(w + off) * Ci + c] * gr[w * Co + o];
            dk_tap[c * Co + o] += s;
          }
      }
    }
  }
}

// ---------------------------------------------------------------- FFI entry points

ffi::Error geometry(const ffi::Buffer<ffi::F32>& x, const ffi::Buffer<ffi::F32>& k,
                    int64_t dh, int64_t dw, Geometry* g) {
  auto xd = x.dimensions();
  auto kd = k.dimensions();
  if (xd.size() != 4 || kd.size() != 4)
    return ffi::Error::InvalidArgument("foldnet conv2d: expected x [B,H,W,Ci] and k [KH,KW,Ci,Co]");
  if (kd[2] != xd[3])
    return ffi::Error::InvalidArgument("foldnet conv2d: input channels of x and k differ");
  if (kd[0] % 2 == 0 || kd[1] % 2 == 0)
    return ffi::Error::InvalidArgument("foldnet conv2d: kernel sizes must be odd");
  *g = Geometry{xd[0], xd[1], xd[2], xd[3], kd[3], kd[0], kd[1], dh, dw};
  return ffi::Error::Success();
}

// Rows are handed out in chunks so a task is a few hundred microseconds of work.
constexpr int64_t kRowsPerTask = 8;

ffi::Error Conv2dFwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                     ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> res, ffi::Buffer<ffi::F32> mask,
                     ffi::ResultBuffer<ffi::F32> y, int64_t dh, int64_t dw, bool winograd) {
  Geometry g;
  if (auto err = geometry(x, k, dh, dw, &g); err.failure()) return err;
  // bias, res and mask are optional: an empty buffer leaves the term out.
  Epilogue ep;
  if (bias.element_count() != 0) {
    if (bias.element_count() != g.Co) return ffi::Error::InvalidArgument("foldnet conv2d: bias must be [Co]");
    ep.bias = bias.typed_data();
  }
  if (res.element_count() != 0) {
    if (res.element_count() != g.rows() * g.W * g.Co)
      return ffi::Error::InvalidArgument("foldnet conv2d: res must have the output's shape");
    ep.res = res.typed_data();
  }
  if (mask.element_count() != 0) {
    if (mask.element_count() != g.rows() * g.W)
      return ffi::Error::InvalidArgument("foldnet conv2d: mask must be [B, H, W(, 1)]");
    ep.mask = mask.typed_data();
  }
  const float* xp = x.typed_data();
  const float* kp = k.typed_data();
  float* yp = y->typed_data();
  if (winograd && winograd_ok(g)) {
    winograd_fwd(&pool, g, xp, kp, yp, ep);
    return ffi::Error::Success();
  }
  const int64_t tasks = (g.rows() + kRowsPerTask - 1) / kRowsPerTask;
  parallel_for(&pool, tasks, pool.num_threads() + 1, [&](int64_t t) {
    const int64_t end = std::min(g.rows(), (t + 1) * kRowsPerTask);
    for (int64_t r = t * kRowsPerTask; r < end; ++r) fwd_row(g, xp, kp, yp, r, ep);
  });
  return ffi::Error::Success();
}

ffi::Error Conv2dWgrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gy,
                       ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dbias, int64_t dh,
                       int64_t dw) {
  auto kd = dk->dimensions();
  auto xd = x.dimensions();
  auto gd = gy.dimensions();
  if (kd.size() != 4 || xd.size() != 4 || gd.size() != 4)
    return ffi::Error::InvalidArgument("foldnet conv2d wgrad: x, g and dk must be rank 4");
  Geometry g{xd[0], xd[1], xd[2], xd[3], kd[3], kd[0], kd[1], dh, dw};
  if (gd[0] != g.B || gd[1] != g.H || gd[2] != g.W || gd[3] != g.Co || kd[2] != g.Ci ||
      dbias->element_count() != g.Co)
    return ffi::Error::InvalidArgument("foldnet conv2d wgrad: shapes of x, g, dk and dbias disagree");
  if (g.KH % 2 == 0 || g.KW % 2 == 0)
    return ffi::Error::InvalidArgument("foldnet conv2d wgrad: kernel sizes must be odd");
  const float* xp = x.typed_data();
  const float* gp = gy.typed_data();
  const int64_t ksize = g.KH * g.KW * g.Ci * g.Co + g.Co;  // filter gradient, then bias gradient
  const int64_t workers = std::max<int64_t>(1, std::min(fixed_workers(pool), g.rows()));
  // Worker w sums the rows [w * rows / workers, (w + 1) * rows / workers): a fixed
  // partition, and the partial sums are added in worker order.
  std::vector<float> partial(static_cast<size_t>(workers) * ksize, 0.f);
  parallel_for(&pool, workers, workers, [&](int64_t w) {
    const int64_t begin = w * g.rows() / workers, end = (w + 1) * g.rows() / workers;
    float* dst = partial.data() + w * ksize;
    for (int64_t r = begin; r < end; ++r) wgrad_row(g, xp, gp, dst, dst + ksize - g.Co, r);
  });
  for (int64_t w = 1; w < workers; ++w)
    for (int64_t e = 0; e < ksize; ++e) partial[e] += partial[w * ksize + e];
  std::memcpy(dk->typed_data(), partial.data(), (ksize - g.Co) * sizeof(float));
  std::memcpy(dbias->typed_data(), partial.data() + ksize - g.Co, g.Co * sizeof(float));
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- LayerNorm -> ELU -> mask
//
// out = elu(LayerNorm(x) * scale + bias) * mask per position (x [..., C], mask [...]); with
// elu=false the ELU is left out (the trunks' final norms).

// expm1 of every lane, for y <= 0 (ELU's negative branch; larger lanes give expm1(0)):
// exp(y) = 2^n exp(t), n = round(y / ln2), |t| <= ln2/2, with a degree-7 Taylor
// polynomial for expm1(t) (truncation error below 2e-8 relative on that interval), so
// lanes with n = 0 keep expm1's accuracy near zero. Lanes below -88 give -1.
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));

inline vf vexpm1(vf y) {
  y = y < splat(-88.f) ? splat(-88.f) : y;
  y = y > splat(0.f) ? splat(0.f) : y;
  // round half away from zero (the conversion truncates); y <= 0 here
  const vf n = __builtin_convertvector(__builtin_convertvector(y * 1.44269504088896341f - 0.5f, vi), vf);
  const vf t = (y - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  vf p = splat(1.f / 5040.f);
  p = p * t + 1.f / 720.f;
  p = p * t + 1.f / 120.f;
  p = p * t + 1.f / 24.f;
  p = p * t + 1.f / 6.f;
  p = p * t + 0.5f;
  p = p * t * t + t;  // expm1(t)
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return two_n * p + (two_n - 1.f);
}

// Sum of the lanes as a tree of shuffles (log2(VL) dependent adds, not VL): the
// LayerNorm kernels take four of these per position.
inline float hsum(vf v) {
#if defined(__AVX512F__)
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
#elif defined(__AVX__)
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 2, 3, 0, 1);
#else
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1);
#endif
  return v[0] + v[1];
}

constexpr int kMaxVecs = 16;  // channels up to 16 * VL

// Per position: mean and flax's "fast variance" E[x^2] - E[x]^2 clamped at 0.
inline void moments(const float* xp, int nv, int64_t C, vf* xv, float* mean, float* r, float eps) {
  vf s = vf{}, s2 = vf{};
  for (int v = 0; v < nv; ++v) {
    xv[v] = load(xp + v * VL);
    s += xv[v];
    s2 += xv[v] * xv[v];
  }
  const float m = hsum(s) / C;
  const float var = std::max(0.f, hsum(s2) / C - m * m);
  *mean = m;
  *r = 1.f / std::sqrt(var + eps);
}

ffi::Error NormEluFwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                      ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> mask,
                      ffi::ResultBuffer<ffi::F32> out, float eps, bool elu) {
  const int64_t C = scale.element_count();
  const int64_t n = mask.element_count();
  if (C % VL != 0 || C / VL > kMaxVecs || x.element_count() != n * C)
    return ffi::Error::InvalidArgument("foldnet norm_elu: unsupported channel count or shapes");
  const int nv = static_cast<int>(C / VL);
  const float *xp = x.typed_data(), *sp = scale.typed_data(), *bp = bias.typed_data(), *mp = mask.typed_data();
  float* op = out->typed_data();
  constexpr int64_t kPerTask = 1024;
  parallel_for(&pool, (n + kPerTask - 1) / kPerTask, pool.num_threads() + 1, [&](int64_t t) {
    vf xv[kMaxVecs];
    for (int64_t i = t * kPerTask, e = std::min(n, (t + 1) * kPerTask); i < e; ++i) {
      float mean, r;
      moments(xp + i * C, nv, C, xv, &mean, &r, eps);
      const float m = mp[i];
      for (int v = 0; v < nv; ++v) {
        const vf y = (xv[v] - mean) * r * load(sp + v * VL) + load(bp + v * VL);
        const vf h = !elu || y > splat(0.f) ? y : vexpm1(y);
        store(op + i * C + v * VL, h * m);
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error NormEluBwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                      ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> mask, ffi::Buffer<ffi::F32> g,
                      ffi::Buffer<ffi::F32> acc, ffi::ResultBuffer<ffi::F32> dx,
                      ffi::ResultBuffer<ffi::F32> dscale, ffi::ResultBuffer<ffi::F32> dbias, float eps,
                      bool elu) {
  const int64_t C = scale.element_count();
  const int64_t n = mask.element_count();
  if (C % VL != 0 || C / VL > kMaxVecs || x.element_count() != n * C || g.element_count() != n * C)
    return ffi::Error::InvalidArgument("foldnet norm_elu: unsupported channel count or shapes");
  if (acc.element_count() != 0 && acc.element_count() != n * C)
    return ffi::Error::InvalidArgument("foldnet norm_elu: acc must be empty or have x's shape");
  const int nv = static_cast<int>(C / VL);
  const float *xp = x.typed_data(), *sp = scale.typed_data(), *bp = bias.typed_data(), *mp = mask.typed_data(),
              *gp = g.typed_data();
  // dx = acc + the LayerNorm-ELU gradient: a residual stream's cotangent added in the
  // same pass.
  const float* ap = acc.element_count() == 0 ? nullptr : acc.typed_data();
  float* dxp = dx->typed_data();
  const int64_t workers = row_workers(pool, n);
  std::vector<float> partial(static_cast<size_t>(workers) * 2 * C, 0.f);
  parallel_for(&pool, workers, workers, [&](int64_t w) {
    vf xv[kMaxVecs], xh[kMaxVecs], dxh[kMaxVecs], ds[kMaxVecs], db[kMaxVecs];
    for (int v = 0; v < nv; ++v) ds[v] = db[v] = vf{};
    for (int64_t i = w * n / workers, e = (w + 1) * n / workers; i < e; ++i) {
      const float m = mp[i];
      if (m == 0.f) {  // masked position: no gradient through the norm
        for (int v = 0; v < nv; ++v) store(dxp + i * C + v * VL, ap ? load(ap + i * C + v * VL) : vf{});
        continue;
      }
      float mean, r;
      moments(xp + i * C, nv, C, xv, &mean, &r, eps);
      vf a = vf{}, b = vf{};
      for (int v = 0; v < nv; ++v) {
        xh[v] = (xv[v] - mean) * r;
        const vf y = xh[v] * load(sp + v * VL) + load(bp + v * VL);
        const vf slope = !elu || y > splat(0.f) ? splat(1.f) : vexpm1(y) + 1.f;
        const vf dy = load(gp + i * C + v * VL) * m * slope;
        ds[v] += dy * xh[v];
        db[v] += dy;
        dxh[v] = dy * load(sp + v * VL);
        a += dxh[v];
        b += dxh[v] * xh[v];
      }
      const float ma = hsum(a) / C, mb = hsum(b) / C;
      for (int v = 0; v < nv; ++v) {
        const vf d = (dxh[v] - ma - xh[v] * mb) * r;
        store(dxp + i * C + v * VL, ap ? d + load(ap + i * C + v * VL) : d);
      }
    }
    float* dst = partial.data() + w * 2 * C;
    for (int v = 0; v < nv; ++v) {
      store(dst + v * VL, ds[v]);
      store(dst + C + v * VL, db[v]);
    }
  });
  float *dsp = dscale->typed_data(), *dbp = dbias->typed_data();
  for (int64_t c = 0; c < C; ++c) {
    float s = 0.f, b = 0.f;
    for (int64_t w = 0; w < workers; ++w) {
      s += partial[w * 2 * C + c];
      b += partial[w * 2 * C + C + c];
    }
    dsp[c] = s;
    dbp[c] = b;
  }
  return ffi::Error::Success();
}


// ---------------------------------------------------------------- dense layer -> masked cross-entropy
//
// The pair heads' training loss in one pass each way, without the [rows, K] logits:
//   fwd: out[b] = sum_p mask[b,p] * (logsumexp_k l[b,p,k] - l[b,p,labels[b,p]]),
//        l = x[b,p,:] @ W + bias (x [B, P, C], W [C, K], bias [K]);
//   bwd: for the cotangent g [B] of out, dl = (softmax(l) - onehot(label)) * mask * g[b]:
//        dx = dl @ W^T, dW = sum x^T dl, dbias = sum dl.
// XLA runs this as a dense layer, log_softmax, a one-hot select and their transposes: a
// dozen passes over [rows, K] floats and a transposed copy for dW (about 15 % of the
// base network's training step at crop 128). Here the logits live in registers: K is
// padded to whole vectors, the padded lanes get bias -1e30 (exp underflows to 0) and
// weight 0. Rows with mask 0 contribute nothing (the reference's where(mask > 0, ...)).

constexpr int kMaxKV = 17;  // logit vectors per row (K up to 17 * VL: 65 bins even with SSE)
constexpr int kRowBlock = 64;  // rows per filter-gradient block (summed in f32, then into double)

struct DenseCeShape {
  int64_t B, P, C, K, KV;  // KV: logit vectors per row (padded_kv)
};

// The padded weights: w [C][KV * VL] (zero columns), wt its transpose [KV * VL][C], bias with
// -1e30 in the padding.
struct DenseCeWeights {
  std::vector<float> w, wt, b;
  DenseCeWeights(const float* kernel, const float* bias, int64_t C, int64_t K, int64_t KV) {
    const int64_t KP = KV * VL;
    w.assign(C * KP, 0.f);
    wt.assign(KP * C, 0.f);
    b.assign(KP, -1e30f);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < K; ++k) w[c * KP + k] = wt[k * C + c] = kernel[c * K + k];
    for (int64_t k = 0; k < K; ++k) b[k] = bias[k];
  }
};

// Logits of one row into l[KV] (two accumulator sets over even and odd channels: the FMA
// chains are C / 2 long instead of C); returns max and log(sum exp(l - max)).
template <int KV>
inline void row_logits(const DenseCeWeights& d, int64_t C, const float* xr, vf* l, float* mx, float* lse) {
  constexpr int64_t KP = KV * VL;
  vf a0[KV], a1[KV];
  for (int v = 0; v < KV; ++v) {
    a0[v] = load(d.b.data() + v * VL);
    a1[v] = vf{};
  }
  for (int64_t c = 0; c < C; c += 2) {
    const vf x0 = splat(xr[c]), x1 = splat(xr[c + 1]);
    const float* w0 = d.w.data() + c * KP;
    for (int v = 0; v < KV; ++v) {
      a0[v] += x0 * load(w0 + v * VL);
      a1[v] += x1 * load(w0 + KP + v * VL);
    }
  }
  vf m = l[0] = a0[0] + a1[0];
  for (int v = 1; v < KV; ++v) {
    l[v] = a0[v] + a1[v];
    m = m > l[v] ? m : l[v];
  }
  float mm = m[0];
  for (int i = 1; i < VL; ++i) mm = std::max(mm, m[i]);
  vf s = vf{};
  for (int v = 0; v < KV; ++v) s += vexpm1(l[v] - mm) + 1.f;
  *mx = mm;
  *lse = std::log(hsum(s));
}

template <int KV>
void dense_ce_fwd(ffi::ThreadPool& pool, const DenseCeShape& sh, const DenseCeWeights& d, const float* xp,
                  const int32_t* lp, const float* mp, int64_t workers, double* partial, std::atomic<bool>* bad) {
  const int64_t rows = sh.B * sh.P;
  parallel_for(&pool, workers, workers, [&](int64_t wk) {
    vf l[KV];
    float lv[KV * VL];
    for (int64_t r = wk * rows / workers, e = (wk + 1) * rows / workers; r < e; ++r) {
      const float m = mp[r];
      if (m == 0.f) continue;
      const int32_t t = lp[r];
      if (t < 0 || t >= sh.K) {
        *bad = true;
        continue;
      }
      float mx, lse;
      row_logits<KV>(d, sh.C, xp + r * sh.C, l, &mx, &lse);
      for (int v = 0; v < KV; ++v) store(lv + v * VL, l[v]);
      partial[wk * sh.B + r / sh.P] += static_cast<double>(m) * (lse - (lv[t] - mx));
    }
  });
}

// dW block update: acc[c][k] += sum_i xb[i][c] * dl[i][k] for the nb buffered rows (row C
// of acc: the bias gradient, x = 1). CBF channels at a time keep CBF * KV independent chains.
template <int KV>
void dense_ce_flush(const float* xb, const float* dlb, int nb, int64_t C, double* acc) {
  constexpr int64_t KP = KV * VL;
  constexpr int CBF = KV <= 6 ? 4 : (KV <= 12 ? 2 : 1);
  for (int64_t c0 = 0; c0 <= C; c0 += CBF) {
    const int nc = static_cast<int>(std::min<int64_t>(CBF, C + 1 - c0));
    vf s[CBF][KV];
    for (int j = 0; j < CBF; ++j)
      for (int v = 0; v < KV; ++v) s[j][v] = vf{};
    for (int i = 0; i < nb; ++i) {
      vf dl[KV];
      for (int v = 0; v < KV; ++v) dl[v] = load(dlb + i * KP + v * VL);
      for (int j = 0; j < CBF; ++j) {
        if (j >= nc) break;
        const vf xv = c0 + j < C ? splat(xb[i * C + c0 + j]) : splat(1.f);
        for (int v = 0; v < KV; ++v) s[j][v] += xv * dl[v];
      }
    }
    for (int j = 0; j < nc; ++j)
      for (int v = 0; v < KV; ++v) {
        double* a = acc + (c0 + j) * KP + v * VL;
        for (int q = 0; q < VL; ++q) a[q] += s[j][v][q];
      }
  }
}

template <int KV>
void dense_ce_bwd(ffi::ThreadPool& pool, const DenseCeShape& sh, const DenseCeWeights& d, const float* xp,
                  const int32_t* lp, const float* mp, const float* gp, float* dxp, int64_t workers,
                  double* partial, std::atomic<bool>* bad) {
  constexpr int64_t KP = KV * VL;
  const int64_t rows = sh.B * sh.P, C = sh.C, K = sh.K, NC = C / VL;
  parallel_for(&pool, workers, workers, [&](int64_t wk) {
    std::vector<float> xb(kRowBlock * C), dlb(kRowBlock * KP);
    double* acc = partial + wk * (C + 1) * KP;
    vf l[KV];
    int nb = 0;  // rows in the current block
    for (int64_t r = wk * rows / workers, e = (wk + 1) * rows / workers; r < e; ++r) {
      const int32_t t = lp[r];
      if (mp[r] == 0.f || t < 0 || t >= K) {
        if (mp[r] != 0.f) *bad = true;
        for (int64_t v = 0; v < NC; ++v) store(dxp + r * C + v * VL, vf{});
        continue;
      }
      const float m = mp[r] * gp[r / sh.P];
      float mx, lse;
      row_logits<KV>(d, C, xp + r * C, l, &mx, &lse);
      float* dl = dlb.data() + nb * KP;
      for (int v = 0; v < KV; ++v) store(dl + v * VL, (vexpm1(l[v] - (mx + lse)) + 1.f) * m);
      dl[t] -= m;
      // dx = dl @ W^T over the K real bins, four accumulator sets (chains K / 4 long)
      vf d0[kMaxVecs], d1[kMaxVecs], d2[kMaxVecs], d3[kMaxVecs];
      for (int64_t v = 0; v < NC; ++v) d0[v] = d1[v] = d2[v] = d3[v] = vf{};
      int64_t k = 0;
      for (; k + 4 <= K; k += 4) {
        const vf s0 = splat(dl[k]), s1 = splat(dl[k + 1]), s2 = splat(dl[k + 2]), s3 = splat(dl[k + 3]);
        const float* wr = d.wt.data() + k * C;
        for (int64_t v = 0; v < NC; ++v) {
          d0[v] += s0 * load(wr + v * VL);
          d1[v] += s1 * load(wr + C + v * VL);
          d2[v] += s2 * load(wr + 2 * C + v * VL);
          d3[v] += s3 * load(wr + 3 * C + v * VL);
        }
      }
      for (; k < K; ++k) {
        const vf s0 = splat(dl[k]);
        for (int64_t v = 0; v < NC; ++v) d0[v] += s0 * load(d.wt.data() + k * C + v * VL);
      }
      for (int64_t v = 0; v < NC; ++v) store(dxp + r * C + v * VL, (d0[v] + d1[v]) + (d2[v] + d3[v]));
      std::memcpy(xb.data() + nb * C, xp + r * C, C * sizeof(float));
      if (++nb == kRowBlock) {
        dense_ce_flush<KV>(xb.data(), dlb.data(), nb, C, acc);
        nb = 0;
      }
    }
    if (nb > 0) dense_ce_flush<KV>(xb.data(), dlb.data(), nb, C, acc);
  });
}

// The kernels are templates on KV, the logit vectors per row, so that the accumulators stay in
// registers. Only a few widths are built (each costs compile time on first use); a bin count
// takes the next one up, the extra lanes padded like the rest: 65 bins (the distograms) are
// exactly 5 / 9 / 17 vectors with AVX-512 / AVX2 / SSE, the orientation heads' 25 and 13
// bins 2 and 1 with AVX-512.
#define FOLDNET_FOR_KV(X) X(1) X(2) X(5) X(9) X(17)
static_assert(kMaxKV == 17, "FOLDNET_FOR_KV ends at kMaxKV");

inline int64_t padded_kv(int64_t K) {
  const int64_t kv = (K + VL - 1) / VL;
  for (int64_t w : {1, 2, 5, 9, 17})
    if (kv <= w) return w;
  return kv;  // > kMaxKV: rejected by dense_ce_shape
}

// The call's shapes from its buffers' sizes (B: the per-example buffer's), or false where the
// kernels do not take them.
inline bool dense_ce_shape(int64_t B, int64_t x_size, int64_t kernel_size, int64_t K, int64_t rows,
                           int64_t label_size, DenseCeShape* sh) {
  const int64_t C = K > 0 ? kernel_size / K : 0;
  if (!(B >= 1 && rows % B == 0 && C % VL == 0 && C / VL <= kMaxVecs && K >= 1 &&
        (K + VL - 1) / VL <= kMaxKV && x_size == rows * C && label_size == rows))
    return false;
  *sh = DenseCeShape{B, rows / B, C, K, padded_kv(K)};
  return true;
}

ffi::Error DenseCeFwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                      ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::S32> labels, ffi::Buffer<ffi::F32> mask,
                      ffi::ResultBuffer<ffi::F32> out) {
  DenseCeShape sh;
  if (!dense_ce_shape(out->element_count(), x.element_count(), kernel.element_count(), bias.element_count(),
                      mask.element_count(), labels.element_count(), &sh))
    return ffi::Error::InvalidArgument("foldnet dense_ce: unsupported channel/bin count or shapes");
  const int64_t B = sh.B;
  const DenseCeWeights d(kernel.typed_data(), bias.typed_data(), sh.C, sh.K, sh.KV);
  const int64_t workers = row_workers(pool, B * sh.P);
  // per worker and example, in double; the final sum runs in a fixed order
  std::vector<double> partial(static_cast<size_t>(workers * B), 0.0);
  std::atomic<bool> bad{false};
  switch (sh.KV) {
#define FOLDNET_CASE(N)                                                                                     \
  case N:                                                                                                   \
    dense_ce_fwd<N>(pool, sh, d, x.typed_data(), labels.typed_data(), mask.typed_data(), workers, partial.data(), \
                    &bad);                                                                                  \
    break;
    FOLDNET_FOR_KV(FOLDNET_CASE)
#undef FOLDNET_CASE
  }
  if (bad) return ffi::Error::InvalidArgument("foldnet dense_ce: a label outside [0, K)");
  for (int64_t b = 0; b < B; ++b) {
    double s = 0.0;
    for (int64_t wk = 0; wk < workers; ++wk) s += partial[wk * B + b];
    out->typed_data()[b] = static_cast<float>(s);
  }
  return ffi::Error::Success();
}

ffi::Error DenseCeBwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                      ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::S32> labels, ffi::Buffer<ffi::F32> mask,
                      ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dkernel,
                      ffi::ResultBuffer<ffi::F32> dbias) {
  DenseCeShape sh;
  if (!dense_ce_shape(g.element_count(), x.element_count(), kernel.element_count(), bias.element_count(),
                      mask.element_count(), labels.element_count(), &sh))
    return ffi::Error::InvalidArgument("foldnet dense_ce: unsupported channel/bin count or shapes");
  const int64_t C = sh.C, K = sh.K, KP = sh.KV * VL;
  const DenseCeWeights d(kernel.typed_data(), bias.typed_data(), C, K, sh.KV);
  const int64_t workers = row_workers(pool, sh.B * sh.P);
  // per worker: dW [C][KP] then dbias [KP], in double (blocks of kRowBlock rows are summed
  // in f32 registers first); reduced over workers in a fixed order
  std::vector<double> partial(static_cast<size_t>(workers * (C + 1) * KP), 0.0);
  std::atomic<bool> bad{false};
  switch (sh.KV) {
#define FOLDNET_CASE(N)                                                                                     \
  case N:                                                                                                   \
    dense_ce_bwd<N>(pool, sh, d, x.typed_data(), labels.typed_data(), mask.typed_data(), g.typed_data(),    \
                    dx->typed_data(), workers, partial.data(), &bad);                                       \
    break;
    FOLDNET_FOR_KV(FOLDNET_CASE)
#undef FOLDNET_CASE
  }
  if (bad) return ffi::Error::InvalidArgument("foldnet dense_ce: a label outside [0, K)");
  float *dkp = dkernel->typed_data(), *dbp = dbias->typed_data();
  for (int64_t c = 0; c <= C; ++c)
    for (int64_t k = 0; k < K; ++k) {
      double s = 0.0;
      for (int64_t wk = 0; wk < workers; ++wk) s += partial[wk * (C + 1) * KP + c * KP + k];
      (c < C ? dkp[c * K + k] : dbp[k]) = static_cast<float>(s);
    }
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- folding: distogram + clash pair terms
//
// The folding potential's pair terms of R structures of one chain, with their gradients,
// in one pass over the pairs (foldnet/structure/potential.py has the definitions and the
// jnp reference): for every pair i < j of the M (even) residues, in the packed [M/2, M]
// layout of potential.pack_pairs (slot i*M + j for i < M/2, else (M-1-i)*M + (M-1-j)),
//   distogram: w_d * V(d_cb), V the Catmull-Rom spline through the pair's 68 knots
//              (uniform grid from grid_start, spacing width; held constant outside knots 1..66)
//   clash:     w_c * (relu(t_ca - d_ca)^2 + relu(t_cb - d_cb)^2)
// Distances below 0.01 A count as 0.01 A with a zero gradient (the reference's floor).
// XLA's version gathered the four knots of every pair and restart, then recomputed the
// spline's slope in each of the four fusions that consume it (the gradient's paths into
// the two halves of the packed Gram matrices), ~40 % of a folding step.

struct PairShape {
  int64_t R, M, H;
};

void pair_terms(const PairShape& sh, int64_t r, const float* cb, const float* ca, const float* knots,
                const float* wd, const float* wc, float grid_start, float width, float t_ca, float t_cb,
                double* e_dist, double* e_clash, float* g_dist_cb, float* g_clash_cb, float* g_clash_ca) {
  const int64_t M = sh.M, H = sh.H;
  const float* xb = cb + r * M * 3;
  const float* xa = ca + r * M * 3;
  float* gd = g_dist_cb + r * M * 3;
  float* gcb = g_clash_cb + r * M * 3;
  float* gca = g_clash_ca + r * M * 3;
  std::fill(gd, gd + M * 3, 0.0f);
  std::fill(gcb, gcb + M * 3, 0.0f);
  std::fill(gca, gca + M * 3, 0.0f);
  const float inv_w = 1.0f / width;
  double ed = 0.0, ec = 0.0;
  for (int64_t i = 0; i < M; ++i) {
    const float bx = xb[3 * i], by = xb[3 * i + 1], bz = xb[3 * i + 2];
    const float ax = xa[3 * i], ay = xa[3 * i + 1], az = xa[3 * i + 2];
    float gdi[3] = {0, 0, 0}, gbi[3] = {0, 0, 0}, gai[3] = {0, 0, 0};
    float edi = 0.0f, eci = 0.0f;  // one row's sums (M terms) in f32, the rows' in double
    const bool top = i < H;
    const int64_t base = top ? i * M : (M - 1 - i) * M + (M - 1);
    for (int64_t j = i + 1; j < M; ++j) {
      const int64_t slot = top ? base + j : base - j;
      const float w_d = wd[slot], w_c = wc[slot];
      if (w_d == 0.0f && w_c == 0.0f) continue;
      const float dx = xb[3 * j] - bx, dy = xb[3 * j + 1] - by, dz = xb[3 * j + 2] - bz;
      const float d2 = dx * dx + dy * dy + dz * dz;
      const bool ok = d2 > 1e-4f;
      const float d = ok ? std::sqrt(d2) : 0.01f;
      float dedd = 0.0f;  // dE/dd of this pair's CB distance
      if (w_d != 0.0f) {
        const float u_raw = (d - grid_start) * inv_w;
        const float u = std::min(std::max(u_raw, 1.0f), 66.0f);
        const int k = static_cast<int>(std::min(std::max(std::floor(u), 1.0f), 65.0f));
        const float s = u - static_cast<float>(k);
        const float* q = knots + slot * 68 + (k - 1);
        const float p0 = q[0], p1 = q[1], p2 = q[2], p3 = q[3];
        const float c1 = 0.5f * (p2 - p0), c2 = 0.5f * (2.0f * p0 - 5.0f * p1 + 4.0f * p2 - p3),
                    c3 = 0.5f * (3.0f * p1 - p0 - 3.0f * p2 + p3);
        edi += w_d * (p1 + s * (c1 + s * (c2 + s * c3)));
        if (u_raw > 1.0f && u_raw < 66.0f) dedd = w_d * (c1 + s * (2.0f * c2 + 3.0f * s * c3)) * inv_w;
      }
      if (ok && dedd != 0.0f) {
        const float f = dedd / d;
        const float fx = f * dx, fy = f * dy, fz = f * dz;
        gd[3 * j] += fx; gd[3 * j + 1] += fy; gd[3 * j + 2] += fz;
        gdi[0] -= fx; gdi[1] -= fy; gdi[2] -= fz;
      }
      if (w_c == 0.0f) continue;
      if (d < t_cb) {
        const float v = t_cb - d;
        eci += w_c * v * v;
        if (ok) {
          const float f = -2.0f * w_c * v / d;
          const float fx = f * dx, fy = f * dy, fz = f * dz;
          gcb[3 * j] += fx; gcb[3 * j + 1] += fy; gcb[3 * j + 2] += fz;
          gbi[0] -= fx; gbi[1] -= fy; gbi[2] -= fz;
        }
      }
      const float ex = xa[3 * j] - ax, ey = xa[3 * j + 1] - ay, ez = xa[3 * j + 2] - az;
      const float a2 = ex * ex + ey * ey + ez * ez;
      const bool aok = a2 > 1e-4f;
      const float da = aok ? std::sqrt(a2) : 0.01f;
      if (da < t_ca) {
        const float v = t_ca - da;
        eci += w_c * v * v;
        if (aok) {
          const float f = -2.0f * w_c * v / da;
          const float fx = f * ex, fy = f * ey, fz = f * ez;
          gca[3 * j] += fx; gca[3 * j + 1] += fy; gca[3 * j + 2] += fz;
          gai[0] -= fx; gai[1] -= fy; gai[2] -= fz;
        }
      }
    }
    for (int c = 0; c < 3; ++c) {
      gd[3 * i + c] += gdi[c];
      gcb[3 * i + c] += gbi[c];
      gca[3 * i + c] += gai[c];
    }
    ed += edi;
    ec += eci;
  }
  e_dist[r] = ed;
  e_clash[r] = ec;
}

ffi::Error PairTerms(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> cb, ffi::Buffer<ffi::F32> ca,
                     ffi::Buffer<ffi::F32> knots, ffi::Buffer<ffi::F32> wd, ffi::Buffer<ffi::F32> wc,
                     ffi::ResultBuffer<ffi::F32> energies, ffi::ResultBuffer<ffi::F32> g_dist_cb,
                     ffi::ResultBuffer<ffi::F32> g_clash_cb, ffi::ResultBuffer<ffi::F32> g_clash_ca,
                     float grid_start, float width, float t_ca, float t_cb) {
  const auto dims = cb.dimensions();
  if (dims.size() != 3 || dims[2] != 3 || dims[1] % 2 != 0 || ca.element_count() != cb.element_count())
    return ffi::Error::InvalidArgument("foldnet pair_terms: cb and ca must be [R, M, 3] with M even");
  PairShape sh{dims[0], dims[1], dims[1] / 2};
  if (wd.element_count() != sh.H * sh.M || wc.element_count() != sh.H * sh.M ||
      knots.element_count() != sh.H * sh.M * 68 || energies->element_count() != 2 * sh.R)
    return ffi::Error::InvalidArgument("foldnet pair_terms: weights [M/2, M], knots [M/2 * M * 68], energies [2, R]");
  std::vector<double> ed(sh.R), ec(sh.R);
  // Restarts are independent; each writes its own gradient rows, so the split is free.
  parallel_for(&pool, sh.R, std::min<int64_t>(fixed_workers(pool), sh.R), [&](int64_t r) {
    pair_terms(sh, r, cb.typed_data(), ca.typed_data(), knots.typed_data(), wd.typed_data(), wc.typed_data(),
               grid_start, width, t_ca, t_cb, ed.data(), ec.data(), g_dist_cb->typed_data(),
               g_clash_cb->typed_data(), g_clash_ca->typed_data());
  });
  for (int64_t r = 0; r < sh.R; ++r) {
    energies->typed_data()[r] = static_cast<float>(ed[r]);
    energies->typed_data()[sh.R + r] = static_cast<float>(ec[r]);
  }
  return ffi::Error::Success();
}

}  // namespace

extern "C" int foldnet_vector_width() { return VL; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(foldnet_norm_elu_fwd, NormEluFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("eps")
                                  .Attr<bool>("elu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(foldnet_norm_elu_bwd, NormEluBwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // g
                                  .Arg<ffi::Buffer<ffi::F32>>()  // acc or empty
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("eps")
                                  .Attr<bool>("elu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(foldnet_conv2d_fwd, Conv2dFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // k
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias or empty
                                  .Arg<ffi::Buffer<ffi::F32>>()  // res or empty
                                  .Arg<ffi::Buffer<ffi::F32>>()  // mask or empty
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("dh")
                                  .Attr<int64_t>("dw")
                                  .Attr<bool>("winograd"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(foldnet_conv2d_wgrad, Conv2dWgrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // g
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dk
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dbias
                                  .Attr<int64_t>("dh")
                                  .Attr<int64_t>("dw"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(foldnet_dense_ce_fwd, DenseCeFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x [B, P, C]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // kernel [C, K]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias [K]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // labels [B, P]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // mask [B, P]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // [B]

XLA_FFI_DEFINE_HANDLER_SYMBOL(foldnet_dense_ce_bwd, DenseCeBwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // g [B]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dx
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dkernel
                                  .Ret<ffi::Buffer<ffi::F32>>());  // dbias

XLA_FFI_DEFINE_HANDLER_SYMBOL(foldnet_pair_terms, PairTerms,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // cb [R, M, 3]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // ca [R, M, 3]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // knots [M/2 * M * 68]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // distogram weights [M/2, M]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // clash weights [M/2, M]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // energies [2, R]: distogram, clash
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d distogram / d cb [R, M, 3]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d clash / d cb
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d clash / d ca
                                  .Attr<float>("grid_start")
                                  .Attr<float>("width")
                                  .Attr<float>("t_ca")
                                  .Attr<float>("t_cb"));
