// Fused float32 attention for XLA:CPU, as XLA FFI custom calls
// (config.attention="cpu", vit_jax/kernels/cpu_attention.py).
//
// VitJaxCpuAttention / VitJaxCpuAttentionTrain / VitJaxCpuAttentionBackward:
// softmax(q·kᵀ)·v per (batch, head) on head-major (B, N, T, h) or
// token-major (B, T, N, h) operands, q already scaled. One head's T × T
// weights stay in cache between the two products and the softmax, where
// XLA:CPU runs these small batched products at a third of the dense layers'
// rate and writes the (B, N, T, T) logits, exponentials and weights to memory
// between separate loops. The training forward also returns the weights for
// the backward, which needs no recomputation. Heads run in parallel (OpenMP),
// one thread each; the products are the register-blocked SmallGemm below.
//
// Built and loaded by vit_jax/models/cpu_attention.py.

#include <omp.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// exp(x) for the softmax's x ≤ 0, in plain arithmetic that the compiler
// vectorises inside the row loop: x·log2(e) = n + f with n an integer and
// |f| ≤ 1/2, 2^n built in the exponent bits, e^(f·ln 2) by its Taylor
// polynomial to degree 7 (truncation < 6e-9, below float32 rounding). MKL's
// vsExp took 3.4× as long on a ViT-B row block on the AMD EPYC VM (84 against
// 25 µs for 197 × 197, whatever its accuracy mode): there it was a third of
// the attention's time. Below −87 the result is clamped to ≈ 1.6e-38, not 0.
inline float SoftmaxExp(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // Round to nearest (1.5 · 2^23).
  const float y = (t - n) * 0.693147180559945309f;
  const float poly =
      1.0f + y * (1.0f + y * (0.5f + y * (1.0f / 6 + y * (1.0f / 24 + y * (1.0f / 120 +
                 y * (1.0f / 720 + y * (1.0f / 5040)))))));
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return poly * scale;
}

// The attention's per-head products: a register-blocked GEMM in GCC vector
// extensions (AVX-512 under -march=native where the CPU has it, else half
// width). C (m × n) = A · B with A(r, p) = a[r·ars + p·aps], so a transposed
// A is a stride swap, and B's rows ldb apart, its n columns contiguous (kᵀ and
// vᵀ are packed first). Each step of the inner loop loads kVecs vectors of a
// B row, broadcasts kRows values of A and does kRows × kVecs FMAs into
// registers. Single-threaded MKL ran these shapes (197 × 197 × 64 and
// 197 × 64 × 197) at 78-89 GFLOP/s on the AMD EPYC VM where this kernel runs
// them at 98-110 (docs/performance.md).
// The register block is kRows × kVecs accumulators: 24 of AVX-512's 32
// registers, 12 of AVX2's 16 (the B vectors and the broadcast take the rest).
#ifdef __AVX512F__
constexpr int kLanes = 16, kVecs = 4;
#else
constexpr int kLanes = 8, kVecs = 2;
#endif
constexpr int kRows = 6;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

// Loads and stores of one vector; `lanes` < kLanes touches only that many
// floats (a head width that is not a multiple of the vector width).
template <bool kPartial>
inline Vec LoadVec(const float* p, int lanes) {
  Vec v = Vec{};
  std::memcpy(&v, p, (kPartial ? lanes : kLanes) * sizeof(float));
  return v;
}

template <bool kPartial>
inline void StoreVec(float* p, Vec v, int lanes) {
  std::memcpy(p, &v, (kPartial ? lanes : kLanes) * sizeof(float));
}

struct Operands {
  const float* a;
  int64_t ars, aps;  // A(r, p) = a[r·ars + p·aps]
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  int k;
  int tail;  // lanes of the last vector (kLanes when n fills it)
};

// C rows [0, R) × vectors [0, NV) of the block at `o`; the last vector holds
// o.tail lanes when kPartial.
template <int R, int NV, bool kPartial>
inline void Block(const Operands& o) {
  Vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = Vec{};
  for (int p = 0; p < o.k; ++p) {
    const float* b_row = o.b + p * o.ldb;
    Vec b[NV];
    for (int v = 0; v < NV; ++v)
      b[v] = (kPartial && v == NV - 1) ? LoadVec<true>(b_row + v * kLanes, o.tail)
                                       : LoadVec<false>(b_row + v * kLanes, kLanes);
    for (int r = 0; r < R; ++r) {
      const Vec a = Vec{} + o.a[r * o.ars + p * o.aps];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    float* c_row = o.c + r * o.ldc;
    for (int v = 0; v < NV; ++v) {
      if (kPartial && v == NV - 1) {
        StoreVec<true>(c_row + v * kLanes, acc[r][v], o.tail);
      } else {
        StoreVec<false>(c_row + v * kLanes, acc[r][v], kLanes);
      }
    }
  }
}

// All m rows of one column block, kRows at a time, then the remainder.
template <int NV, bool kPartial>
void Column(int m, Operands o) {
  int r = 0;
  for (; r + kRows <= m; r += kRows) {
    Block<kRows, NV, kPartial>(o);
    o.a += kRows * o.ars;
    o.c += kRows * o.ldc;
  }
  switch (m - r) {
    case 5: Block<5, NV, kPartial>(o); break;
    case 4: Block<4, NV, kPartial>(o); break;
    case 3: Block<3, NV, kPartial>(o); break;
    case 2: Block<2, NV, kPartial>(o); break;
    case 1: Block<1, NV, kPartial>(o); break;
    default: break;
  }
}

template <bool kPartial>
void ColumnOf(int width, int m, const Operands& o) {
  switch (width) {
    case 4: Column<4, kPartial>(m, o); break;
    case 3: Column<3, kPartial>(m, o); break;
    case 2: Column<2, kPartial>(m, o); break;
    default: Column<1, kPartial>(m, o); break;
  }
}

// C (m × n) = A (m × k) · B (k × n), in as few column blocks of at most
// kVecs vectors as there can be, of even widths: 13 vectors at kVecs 4 are
// 4 + 3 + 3 + 3, not 4 + 4 + 4 + 1 (a 1-vector block is bound by its loads).
void SmallGemm(int m, int n, int k, const float* a, int64_t ars, int64_t aps, const float* b,
               int64_t ldb, float* c, int64_t ldc) {
  const int vectors = (n + kLanes - 1) / kLanes;
  const int tail = n - (vectors - 1) * kLanes;
  Operands o{a, ars, aps, b, ldb, c, ldc, k, tail};
  for (int left = vectors, blocks = (vectors + kVecs - 1) / kVecs; left > 0; --blocks) {
    const int width = (left + blocks - 1) / blocks;
    left -= width;
    if (left == 0 && tail != kLanes) {
      ColumnOf<true>(width, m, o);
    } else {
      ColumnOf<false>(width, m, o);
    }
    o.b += width * kLanes;
    o.c += width * kLanes;
  }
}

// Each row of the (t × t) logits, rows ld apart, in place → its softmax.
void SoftmaxRows(float* p, int t, int64_t ld) {
  for (int i = 0; i < t; ++i) {
    float* row = p + i * ld;
    float top = row[0];
#pragma omp simd reduction(max : top)
    for (int j = 0; j < t; ++j) top = top > row[j] ? top : row[j];
#pragma omp simd
    for (int j = 0; j < t; ++j) row[j] = SoftmaxExp(row[j] - top);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < t; ++j) sum += row[j];
    const float inverse = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j < t; ++j) row[j] *= inverse;
  }
}

// Where head i (of batch × heads) of a q/k/v/output operand lies: head-major
// (B, N, T, h), or token-major (B, T, N, h), the layout of the projections'
// GEMM output, read in place with rows N·h apart (no transposes around).
struct HeadShape {
  int64_t heads;  // batch × heads
  int num_heads, t, h;
  bool token_major;
  int64_t Offset(int64_t i) const {
    if (!token_major) return i * t * h;
    return (i / num_heads) * t * num_heads * h + (i % num_heads) * h;
  }
  int64_t Ld() const { return token_major ? static_cast<int64_t>(num_heads) * h : h; }
};

HeadShape ShapeOf(const ffi::Buffer<ffi::F32>& x, bool token_major) {  // jax checks the rank.
  auto d = x.dimensions();
  const int num_heads = static_cast<int>(token_major ? d[2] : d[1]);
  const int t = static_cast<int>(token_major ? d[1] : d[2]);
  return HeadShape{d[0] * num_heads, num_heads, t, static_cast<int>(d[3]), token_major};
}

// The rows of one head's weights and logits: t rounded up to a whole number
// of vectors, so that the products write whole vectors; attention.py makes
// the training weights this wide (16 floats, a multiple of every kLanes).
int64_t PaddedLd(int t) { return (t + 15) / 16 * 16; }

// One head's (t × h) operand x, rows ld apart → xᵀ (h × ld_t), its columns
// past t left as they are (zero from the allocation).
void PackTransposed(const float* x, int t, int h, int64_t ld, float* xt, int64_t ld_t) {
  for (int row = 0; row < t; ++row)
    for (int d = 0; d < h; ++d) xt[d * ld_t + row] = x[row * ld + d];
}

// out = softmax(q·kᵀ)·v; the weights (rows PaddedLd(t) apart) go to
// `weights` when given, else to a per-thread scratch buffer.
void AttentionForward(const float* q, const float* k, const float* v, float* out,
                      float* weights, HeadShape s) {
  const int64_t ld_p = PaddedLd(s.t), size_p = s.t * ld_p;
  const int64_t ld = s.Ld();
#pragma omp parallel
  {
    std::vector<float> kt(static_cast<int64_t>(s.h) * ld_p, 0.0f);
    std::vector<float> scratch(weights == nullptr ? size_p : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s.heads; ++i) {
      const int64_t at = s.Offset(i);
      float* p = weights == nullptr ? scratch.data() : weights + i * size_p;
      PackTransposed(k + at, s.t, s.h, ld, kt.data(), ld_p);
      SmallGemm(s.t, static_cast<int>(ld_p), s.h, q + at, ld, 1, kt.data(), ld_p, p, ld_p);
      SoftmaxRows(p, s.t, ld_p);
      SmallGemm(s.t, s.h, s.t, p, ld_p, 1, v + at, ld, out + at, ld);
    }
  }
}

ffi::Error Attention(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                     ffi::ResultBuffer<ffi::F32> out, bool token_major) {
  AttentionForward(q.typed_data(), k.typed_data(), v.typed_data(), out->typed_data(), nullptr,
                   ShapeOf(q, token_major));
  return ffi::Error::Success();
}

ffi::Error CheckWeights(const ffi::AnyBuffer::Dimensions& d, const HeadShape& s) {
  if (d.size() != 4 || d[0] * d[1] != s.heads || d[2] != s.t || d[3] != PaddedLd(s.t)) {
    return ffi::Error::InvalidArgument(
        "cpu attention: the weights must be (B, N, T, T rounded up to 16)");
  }
  return ffi::Error::Success();
}

ffi::Error AttentionTrain(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                          ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> out,
                          ffi::ResultBuffer<ffi::F32> weights, bool token_major) {
  const HeadShape s = ShapeOf(q, token_major);
  if (ffi::Error error = CheckWeights(weights->dimensions(), s); error.failure()) return error;
  AttentionForward(q.typed_data(), k.typed_data(), v.typed_data(), out->typed_data(),
                   weights->typed_data(), s);
  return ffi::Error::Success();
}

// With P the weights and dO the output's cotangent, per head:
//   dV = Pᵀ·dO,  dP = dO·vᵀ,  dS = P ∘ (dP − rowsum(P ∘ dP)),  dq = dS·k,  dk = dSᵀ·q.
ffi::Error AttentionBackward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                             ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> weights,
                             ffi::Buffer<ffi::F32> d_out, ffi::ResultBuffer<ffi::F32> dq,
                             ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv,
                             bool token_major) {
  const HeadShape s = ShapeOf(q, token_major);
  if (ffi::Error error = CheckWeights(weights.dimensions(), s); error.failure()) return error;
  const int64_t ld_p = PaddedLd(s.t), size_p = s.t * ld_p;
  const int64_t ld = s.Ld();
  const int t = s.t, h = s.h;
  const float *qd = q.typed_data(), *kd = k.typed_data(), *vd = v.typed_data();
  const float *pd = weights.typed_data(), *dod = d_out.typed_data();
  float *dqd = dq->typed_data(), *dkd = dk->typed_data(), *dvd = dv->typed_data();
#pragma omp parallel
  {
    std::vector<float> ds(size_p), vt(static_cast<int64_t>(h) * ld_p, 0.0f);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s.heads; ++i) {
      const int64_t at = s.Offset(i);
      const float* p = pd + i * size_p;
      SmallGemm(t, h, t, p, 1, ld_p, dod + at, ld, dvd + at, ld);  // Pᵀ·dO
      PackTransposed(vd + at, t, h, ld, vt.data(), ld_p);
      SmallGemm(t, static_cast<int>(ld_p), h, dod + at, ld, 1, vt.data(), ld_p, ds.data(), ld_p);
      for (int r = 0; r < t; ++r) {
        const float* p_row = p + r * ld_p;
        float* ds_row = ds.data() + r * ld_p;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int c = 0; c < t; ++c) dot += p_row[c] * ds_row[c];
#pragma omp simd
        for (int c = 0; c < t; ++c) ds_row[c] = p_row[c] * (ds_row[c] - dot);
      }
      SmallGemm(t, h, t, ds.data(), ld_p, 1, kd + at, ld, dqd + at, ld);  // dS·k
      SmallGemm(t, h, t, ds.data(), 1, ld_p, qd + at, ld, dkd + at, ld);  // dSᵀ·q
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxCpuAttention, Attention,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("token_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxCpuAttentionTrain, AttentionTrain,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("token_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxCpuAttentionBackward, AttentionBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("token_major"));

