// int4 weights (GGUF Q4_1 blocks) times int8 activations with AVX2 integer dot products:
// the kernel of kaito_cpu_runtime.int4_dot (see that module's docstring). Built at startup
// by that module with -mavx2 -mfma -ffp-contract=off; registered as kaito_int4::matmul.
//
// Per block of 32 inputs: w = code * d + m (codes 0..15), x ~ q * e (q = round(x / e),
// e = max|x| / 127), so sum(w * x) ~ d * e * sum(code * q) + m * e * sum(q). code * q
// pairs are u8 x s8 products summed in 16 bits by vpmaddubsw: at most 2 * 15 * 127, so
// they never saturate. Each output is computed by one thread in a fixed order, whatever
// the number of rows or threads: a row's numbers are its own.
#include <ATen/core/Tensor.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr int64_t kBlock = 32;

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline __m256i unpack(const uint8_t* raw16, __m256i mask) {
  __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(raw16));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), mask);
}

// One block of 32 activations as int8 codes (round to nearest even); its scale (NaN when
// a value is not finite, so the outputs are too) and scale * sum of its codes.
void quantize_block(const float* x, int8_t* q, float* d, float* s) {
  float amax = 0.f;
  for (int i = 0; i < kBlock; ++i) {
    const float v = std::fabs(x[i]);
    if (v > amax || std::isnan(v)) amax = v;  // a NaN stays
  }
  const float scale = std::isfinite(amax) ? amax / 127.f : std::nanf("");
  const float inverse = scale > 0.f ? 1.f / scale : 0.f;
  int sum = 0;
  for (int i = 0; i < kBlock; ++i) {
    const int v = static_cast<int>(std::nearbyint(x[i] * inverse));
    q[i] = static_cast<int8_t>(v);
    sum += v;
  }
  *d = scale;
  *s = scale * static_cast<float>(sum);
}

// Activations of one row as the kernel reads them: for each pair of blocks (b0, b1), 32
// bytes [b0 x0-15, b1 x0-15] then 32 bytes [b0 x16-31, b1 x16-31] (a lone last block:
// its 32 codes in order); the scale of each block; and scale * sum of its codes.
void quantize_row(const float* x, int64_t K, int8_t* q, float* d, float* s) {
  const int64_t nb = K / kBlock;
  int8_t block[kBlock];
  for (int64_t b = 0; b < nb; ++b) {
    quantize_block(x + b * kBlock, block, d + b, s + b);
    if (b == nb - 1 && nb % 2) {
      std::memcpy(q + b * kBlock, block, kBlock);
    } else {
      int8_t* base = q + (b / 2) * 64 + (b % 2) * 16;
      std::memcpy(base, block, 16);
      std::memcpy(base + 32, block + 16, 16);
    }
  }
}

inline __m256 pair_products(const uint8_t* raw32, const int8_t* x64, __m256i mask,
                            __m256i ones) {
  __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(raw32));
  __m256i lo = _mm256_and_si256(raw, mask);
  __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
  __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x64));
  __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x64 + 32));
  __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa), _mm256_maddubs_epi16(hi, xb));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
}


// Dots of one weight row with R activation rows (R = 1..4): each row's numbers go through
// the same operations in the same order whatever R is.
template <int R>
void dot_rows(const uint8_t* codes, const float* wd, const float* wm, const int8_t* const* xq,
              const float* const* xd, const float* const* xs, int64_t nb, float* out,
              int64_t out_stride) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R];
  __m256 macc[R];
  float tail[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm256_setzero_ps();
    macc[r] = _mm256_setzero_ps();
    tail[r] = 0.f;
  }
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    const __m256 wdv = _mm256_loadu_ps(wd + b);
    const __m256 wmv = _mm256_loadu_ps(wm + b);
    __m256 sc[R];
    for (int r = 0; r < R; ++r) {
      sc[r] = _mm256_mul_ps(wdv, _mm256_loadu_ps(xd[r] + b));
      macc[r] = _mm256_fmadd_ps(wmv, _mm256_loadu_ps(xs[r] + b), macc[r]);
    }
    for (int j = 0; j < 4; ++j) {
      const __m256i raw =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + (b + 2 * j) * 16));
      const __m256i lo = _mm256_and_si256(raw, mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
      const __m256i idx = _mm256_setr_epi32(2 * j, 2 * j, 2 * j, 2 * j, 2 * j + 1, 2 * j + 1,
                                            2 * j + 1, 2 * j + 1);
      for (int r = 0; r < R; ++r) {
        const int8_t* x64 = xq[r] + (b + 2 * j) * kBlock;
        const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x64));
        const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x64 + 32));
        const __m256i p =
            _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa), _mm256_maddubs_epi16(hi, xb));
        const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
        acc[r] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(sc[r], idx), f, acc[r]);
      }
    }
  }
  for (; b + 2 <= nb; b += 2) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + b * 16));
    const __m256i lo = _mm256_and_si256(raw, mask);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
    for (int r = 0; r < R; ++r) {
      const int8_t* x64 = xq[r] + b * kBlock;
      const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x64));
      const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x64 + 32));
      const __m256i p =
          _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa), _mm256_maddubs_epi16(hi, xb));
      const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
      const __m256 sc = _mm256_set_m128(_mm_set1_ps(wd[b + 1] * xd[r][b + 1]),
                                        _mm_set1_ps(wd[b] * xd[r][b]));
      acc[r] = _mm256_fmadd_ps(sc, f, acc[r]);
      tail[r] += wm[b] * xs[r][b];
      tail[r] += wm[b + 1] * xs[r][b + 1];
    }
  }
  if (b < nb) {
    const __m256i w = unpack(codes + b * 16, mask);
    for (int r = 0; r < R; ++r) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[r] + b * kBlock));
      const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), ones);
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * xd[r][b]), _mm256_cvtepi32_ps(p), acc[r]);
      tail[r] += wm[b] * xs[r][b];
    }
  }
  for (int r = 0; r < R; ++r) out[r * out_stride] = hsum(acc[r]) + hsum(macc[r]) + tail[r];
}

// x [M, K] float32 times the blocks' weights [N, K] transposed: [M, N] float32. codes is
// [N, K / 2] uint8 (each block's 16 bytes as in GGUF: code i in the low nibble of byte i,
// code i + 16 in its high nibble), scale and minimum [N, K / 32] float32.
at::Tensor matmul(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale,
                  const at::Tensor& minimum) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "kaito_int4::matmul: x must be a contiguous 2-D float32 tensor");
  const int64_t M = x.size(0), K = x.size(1), N = codes.size(0), nb = K / kBlock;
  TORCH_CHECK(K % kBlock == 0, "kaito_int4::matmul: inputs must be a multiple of 32");
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() &&
                  codes.dim() == 2 && codes.size(1) == K / 2,
              "kaito_int4::matmul: codes must be contiguous uint8 [out, in / 2]");
  for (const at::Tensor* t : {&scale, &minimum})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 2 &&
                    t->size(0) == N && t->size(1) == nb,
                "kaito_int4::matmul: scale and minimum must be contiguous float32 [out, in / 32]");
  auto xq = at::empty({M, K}, x.options().dtype(at::kChar));
  auto xd = at::empty({M, nb}, x.options());
  auto xs = at::empty({M, nb}, x.options());
  const float* xp = x.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m)
    quantize_row(xp + m * K, K, xq.data_ptr<int8_t>() + m * K,
                       xd.data_ptr<float>() + m * nb, xs.data_ptr<float>() + m * nb);
  auto out = at::empty({M, N}, x.options());
  const int8_t* qp = xq.data_ptr<int8_t>();
  const float* dp = xd.data_ptr<float>();
  const float* sp = xs.data_ptr<float>();
  const uint8_t* cp = codes.data_ptr<uint8_t>();
  const float* wd = scale.data_ptr<float>();
  const float* wm = minimum.data_ptr<float>();
  float* op = out.data_ptr<float>();
  constexpr int64_t T = 4;  // outputs per task of the thread pool
  at::parallel_for(0, (N + T - 1) / T, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin * T; n < std::min(end * T, N); ++n) {
      const uint8_t* c = cp + n * (K / 2);
      const float* d = wd + n * nb;
      const float* mn = wm + n * nb;
      for (int64_t m = 0; m < M; m += 4) {
        const int8_t* q[4];
        const float* xdr[4];
        const float* xsr[4];
        const int rows = static_cast<int>(std::min<int64_t>(4, M - m));
        for (int r = 0; r < rows; ++r) {
          q[r] = qp + (m + r) * K;
          xdr[r] = dp + (m + r) * nb;
          xsr[r] = sp + (m + r) * nb;
        }
        float* o = op + m * N + n;
        switch (rows) {
          case 4: dot_rows<4>(c, d, mn, q, xdr, xsr, nb, o, N); break;
          case 3: dot_rows<3>(c, d, mn, q, xdr, xsr, nb, o, N); break;
          case 2: dot_rows<2>(c, d, mn, q, xdr, xsr, nb, o, N); break;
          default: dot_rows<1>(c, d, mn, q, xdr, xsr, nb, o, N); break;
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(kaito_int4, m) {
  m.def("matmul(Tensor x, Tensor codes, Tensor scale, Tensor minimum) -> Tensor");
}
TORCH_LIBRARY_IMPL(kaito_int4, CPU, m) { m.impl("matmul", &matmul); }
