// Float32 kernels through Intel MKL, as XLA FFI custom calls for the CPU.
//
// VitJaxMklGemm: c (m, n) = op(a) · op(b), op a transpose when asked: the
// three products of a dense layer's forward and backward (x·W, dy·Wᵀ, xᵀ·dy)
// without the layout copies XLA puts in front of its own GEMM for the
// transposed operands.
//
// VitJaxMklAttention / VitJaxMklAttentionTrain / VitJaxMklAttentionBackward:
// softmax(q·kᵀ)·v per (batch, head) on head-major (B, N, T, h) operands, q
// already scaled. One head's T × T weights stay in cache between the two
// products and the softmax (XLA:CPU runs these per-head matmuls at a third
// of MKL's rate). The training forward also returns the weights for the
// backward, which needs no recomputation. Heads run in parallel (OpenMP);
// MKL runs single-threaded inside the parallel loop.
//
// Built and loaded by vit_jax/models/mkl_matmul.py; see its docstring for why.

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

extern "C" {
// From mkl_cblas.h, declared here so that the build needs MKL's runtime only.
void cblas_sgemm(int layout, int transa, int transb, int m, int n, int k, float alpha,
                 const float* a, int lda, const float* b, int ldb, float beta, float* c,
                 int ldc);
void vsExp(int n, const float* a, float* y);  // MKL's vector math.
}

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

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
  cblas_sgemm(kRowMajor, transpose_a ? kTrans : kNoTrans, transpose_b ? kTrans : kNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f,
              a.typed_data(), static_cast<int>(a_dims[1]), b.typed_data(),
              static_cast<int>(b_dims[1]), 0.0f, c->typed_data(), static_cast<int>(n));
  return ffi::Error::Success();
}

// Row-major c (m × n) = op(a) · op(b), a's and b's rows contiguous.
void Product(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b,
             int ldb, float* c) {
  cblas_sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, 1.0f, a, lda,
              b, ldb, 0.0f, c, n);
}

// Each row of the (t × t) logits in place → its softmax.
void SoftmaxRows(float* p, int t) {
  for (int i = 0; i < t; ++i) {
    float* row = p + static_cast<int64_t>(i) * t;
    const float top = *std::max_element(row, row + t);
    for (int j = 0; j < t; ++j) row[j] -= top;
    vsExp(t, row, row);
    float sum = 0.0f;
    for (int j = 0; j < t; ++j) sum += row[j];
    const float inverse = 1.0f / sum;
    for (int j = 0; j < t; ++j) row[j] *= inverse;
  }
}

struct HeadShape {
  int64_t heads;  // batch × heads
  int t, h;
};

HeadShape ShapeOf(const ffi::Buffer<ffi::F32>& x) {  // x is (B, N, T, h): jax checks the rank.
  auto d = x.dimensions();
  return HeadShape{d[0] * d[1], static_cast<int>(d[2]), static_cast<int>(d[3])};
}

// out = softmax(q·kᵀ)·v; the weights go to `weights` when given, else to a
// per-thread scratch buffer.
void AttentionForward(const float* q, const float* k, const float* v, float* out,
                      float* weights, HeadShape s) {
  const int64_t th = static_cast<int64_t>(s.t) * s.h, tt = static_cast<int64_t>(s.t) * s.t;
#pragma omp parallel
  {
    std::vector<float> scratch(weights == nullptr ? tt : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s.heads; ++i) {
      float* p = weights == nullptr ? scratch.data() : weights + i * tt;
      Product(false, true, s.t, s.t, s.h, q + i * th, s.h, k + i * th, s.h, p);
      SoftmaxRows(p, s.t);
      Product(false, false, s.t, s.h, s.t, p, s.t, v + i * th, s.h, out + i * th);
    }
  }
}

ffi::Error Attention(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                     ffi::ResultBuffer<ffi::F32> out) {
  AttentionForward(q.typed_data(), k.typed_data(), v.typed_data(), out->typed_data(), nullptr,
                   ShapeOf(q));
  return ffi::Error::Success();
}

ffi::Error AttentionTrain(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                          ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> out,
                          ffi::ResultBuffer<ffi::F32> weights) {
  AttentionForward(q.typed_data(), k.typed_data(), v.typed_data(), out->typed_data(),
                   weights->typed_data(), ShapeOf(q));
  return ffi::Error::Success();
}

// With P the weights and dO the output's cotangent, per head:
//   dV = Pᵀ·dO,  dP = dO·vᵀ,  dS = P ∘ (dP − rowsum(P ∘ dP)),  dq = dS·k,  dk = dSᵀ·q.
ffi::Error AttentionBackward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                             ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> weights,
                             ffi::Buffer<ffi::F32> d_out, ffi::ResultBuffer<ffi::F32> dq,
                             ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  const HeadShape s = ShapeOf(q);
  const int64_t th = static_cast<int64_t>(s.t) * s.h, tt = static_cast<int64_t>(s.t) * s.t;
  const float *qd = q.typed_data(), *kd = k.typed_data(), *vd = v.typed_data();
  const float *pd = weights.typed_data(), *dod = d_out.typed_data();
  float *dqd = dq->typed_data(), *dkd = dk->typed_data(), *dvd = dv->typed_data();
#pragma omp parallel
  {
    std::vector<float> ds(tt);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s.heads; ++i) {
      const float* p = pd + i * tt;
      Product(true, false, s.t, s.h, s.t, p, s.t, dod + i * th, s.h, dvd + i * th);
      Product(false, true, s.t, s.t, s.h, dod + i * th, s.h, vd + i * th, s.h, ds.data());
      for (int r = 0; r < s.t; ++r) {
        const float* p_row = p + static_cast<int64_t>(r) * s.t;
        float* ds_row = ds.data() + static_cast<int64_t>(r) * s.t;
        float dot = 0.0f;
        for (int c = 0; c < s.t; ++c) dot += p_row[c] * ds_row[c];
        for (int c = 0; c < s.t; ++c) ds_row[c] = p_row[c] * (ds_row[c] - dot);
      }
      Product(false, false, s.t, s.h, s.t, ds.data(), s.t, kd + i * th, s.h, dqd + i * th);
      Product(true, false, s.t, s.h, s.t, ds.data(), s.t, qd + i * th, s.h, dkd + i * th);
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
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxMklAttentionTrain, AttentionTrain,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxMklAttentionBackward, AttentionBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxMklGemm, Gemm,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));
