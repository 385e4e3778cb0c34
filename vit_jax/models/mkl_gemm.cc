// The dense layers' float32 GEMM through Intel MKL, as an XLA FFI custom
// call for the CPU (matmul_impl="mkl").
//
// VitJaxMklGemm: c (m, n) = op(a) · op(b), op a transpose when asked: the
// three products of a dense layer's forward and backward (x·W, dy·Wᵀ, xᵀ·dy)
// without the layout copies XLA puts in front of its own GEMM for the
// transposed operands.
//
// Built and loaded by vit_jax/models/mkl_matmul.py; see its docstring for why.

#include <cstdint>

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

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitJaxMklGemm, Gemm,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));
