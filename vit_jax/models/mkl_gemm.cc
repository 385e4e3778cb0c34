// Float32 kernels through Intel MKL, as XLA FFI custom calls for the CPU.
//
// VitJaxMklGemm: c (m, n) = op(a) · op(b), op a transpose when asked: the
// three products of a dense layer's forward and backward (x·W, dy·Wᵀ, xᵀ·dy)
// without the layout copies XLA puts in front of its own GEMM for the
// transposed operands.
//
// VitJaxMklAttention / VitJaxMklAttentionTrain / VitJaxMklAttentionBackward:
// softmax(q·kᵀ)·v per (batch, head) on head-major (B, N, T, h) or
// token-major (B, T, N, h) operands, q already scaled. One head's T × T
// weights stay in cache between the two products and the softmax (XLA:CPU runs these per-head matmuls at a third
// of MKL's rate). The training forward also returns the weights for the
// backward, which needs no recomputation. Heads run in parallel (OpenMP);
// MKL runs single-threaded inside the parallel loop.
//
// Built and loaded by vit_jax/models/mkl_matmul.py; see its docstring for why.

#include <omp.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

extern "C" {
// From mkl_cblas.h, declared here so that the build needs MKL's runtime only.
void cblas_sgemm(int layout, int transa, int transb, int m, int n, int k, float alpha,
                 const float* a, int lda, const float* b, int ldb, float beta, float* c,
                 int ldc);
}

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// Row-major c (m × n, rows ldc apart) = op(a) · op(b).
void Product(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b,
             int ldb, float* c, int ldc) {
  cblas_sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, 1.0f, a, lda,
              b, ldb, 0.0f, c, ldc);
}

ffi::Error Gemm(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                ffi::ResultBuffer<ffi::F32> c, bool transpose_a, bool transpose_b) {
  auto a_dims = a.dimensions(), b_dims = b.dimensions(), c_dims = c->dimensions();
  if (a_dims.size() != 2 || b_dims.size() != 2 || c_dims.size() != 2) {
    return ffi::Error::InvalidArgument("mkl_gemm takes rank-2 operands");
  }
  const int64_t m = transpose_a ? a_dims[1] : a_dims[0];
  const int64_t k = transpose_a ? a_dims[0] : a_dims[1];
  const int64_t k_b = transpose_b ? b_dims[1] : b_dims[0];
  const int64_t n = transpose_b ? b_dims[0] : b_dims[1];
  if (k != k_b || c_dims[0] != m || c_dims[1] != n) {
    return ffi::Error::InvalidArgument("mkl_gemm: operand shapes do not match");
  }
  Product(transpose_a, transpose_b, static_cast<int>(m), static_cast<int>(n),
          static_cast<int>(k), a.typed_data(), static_cast<int>(a_dims[1]), b.typed_data(),
          static_cast<int>(b_dims[1]), c->typed_data(), static_cast<int>(n));
  return ffi::Error::Success();
}

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

// Each row of the (t × t) logits in place → its softmax.
void SoftmaxRows(float* p, int t) {
  for (int i = 0; i < t; ++i) {
    float* row = p + static_cast<int64_t>(i) * t;
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
  int Ld() const { return token_major ? num_heads * h : h; }
};

HeadShape ShapeOf(const ffi::Buffer<ffi::F32>& x, bool token_major) {  // jax checks the rank.
  auto d = x.dimensions();
  const int num_heads = static_cast<int>(token_major ? d[2] : d[1]);
  const int t = static_cast<int>(token_major ? d[1] : d[2]);
  return HeadShape{d[0] * num_heads, num_heads, t, static_cast<int>(d[3]), token_major};
}

// out = softmax(q·kᵀ)·v; the weights go to `weights` when given, else to a
// per-thread scratch buffer.
void AttentionForward(const float* q, const float* k, const float* v, float* out,
                      float* weights, HeadShape s) {
  const int64_t tt = static_cast<int64_t>(s.t) * s.t;
  const int ld = s.Ld();
#pragma omp parallel
  {
    std::vector<float> scratch(weights == nullptr ? tt : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s.heads; ++i) {
      const int64_t at = s.Offset(i);
      float* p = weights == nullptr ? scratch.data() : weights + i * tt;
      Product(false, true, s.t, s.t, s.h, q + at, ld, k + at, ld, p, s.t);
      SoftmaxRows(p, s.t);
      Product(false, false, s.t, s.h, s.t, p, s.t, v + at, ld, out + at, ld);
    }
  }
}

ffi::Error Attention(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                     ffi::ResultBuffer<ffi::F32> out, bool token_major) {
  AttentionForward(q.typed_data(), k.typed_data(), v.typed_data(), out->typed_data(), nullptr,
                   ShapeOf(q, token_major));
  return ffi::Error::Success();
}

ffi::Error AttentionTrain(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                          ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> out,
                          ffi::ResultBuffer<ffi::F32> weights, bool token_major) {
  AttentionForward(q.typed_data(), k.typed_data(), v.typed_data(), out->typed_data(),
                   weights->typed_data(), ShapeOf(q, token_major));
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
  const int64_t tt = static_cast<int64_t>(s.t) * s.t;
  const int ld = s.Ld();
  const float *qd = q.typed_data(), *kd = k.typed_data(), *vd = v.typed_data();
  const float *pd = weights.typed_data(), *dod = d_out.typed_data();
  float *dqd = dq->typed_data(), *dkd = dk->typed_data(), *dvd = dv->typed_data();
#pragma omp parallel
  {
    std::vector<float> ds(tt);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s.heads; ++i) {
      const int64_t at = s.Offset(i);
      const float* p = pd + i * tt;
      Product(true, false, s.t, s.h, s.t, p, s.t, dod + at, ld, dvd + at, ld);
      Product(false, true, s.t, s.t, s.h, dod + at, ld, vd + at, ld, ds.data(), s.t);
      for (int r = 0; r < s.t; ++r) {
        const float* p_row = p + static_cast<int64_t>(r) * s.t;
        float* ds_row = ds.data() + static_cast<int64_t>(r) * s.t;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int c = 0; c < s.t; ++c) dot += p_row[c] * ds_row[c];
#pragma omp simd
        for (int c = 0; c < s.t; ++c) ds_row[c] = p_row[c] * (ds_row[c] - dot);
      }
      Product(false, false, s.t, s.h, s.t, ds.data(), s.t, kd + at, ld, dqd + at, ld);
      Product(true, false, s.t, s.h, s.t, ds.data(), s.t, qd + at, ld, dkd + at, ld);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxMklAttention, Attention,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("token_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxMklAttentionTrain, AttentionTrain,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("token_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxMklAttentionBackward, AttentionBackward,
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxMklGemm, Gemm,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));
