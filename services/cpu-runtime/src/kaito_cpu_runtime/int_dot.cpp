// Integer dot-product kernels of kaito_cpu_runtime.int_dot (see that module's docstring):
// weights in blocks of 32 inputs times activations quantized to int8 in the same blocks,
// with AVX2 (and F16C for the weights' float16 scales). Built at startup by that module
// with -mavx2 -mfma -mf16c -ffp-contract=off and registered as kaito_int_dot::q4_1 and
// kaito_int_dot::q8_0.
//
// Activations: x ~ q * e per block (q = round(x / e), e = max|x| / 127).
// q4_1: w = code * d + m (codes 0..15), so sum(w * x) ~ d * e * sum(code * q) + m * e *
//   sum(q); code * q pairs are u8 x s8 products summed in 16 bits by vpmaddubsw: at most
//   2 * 15 * 127, so they never saturate.
// q8_0: w = code * d (codes -127..127), sum(w * x) ~ d * e * sum(code * q); vpmaddubsw
//   takes |code| and q with code's sign: at most 2 * 127 * 127, no saturation either.
// Each output is computed by one thread in a fixed order, whatever the number of rows or
// threads: a row's numbers are its own.
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

// Eight float16 numbers (their bits) as floats; one of them.
inline __m256 halves(const uint16_t* h) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}
inline float half(uint16_t h) { return _cvtsh_ss(h); }

// A float16 tensor's data as the bits halves() and half() read.
inline const uint16_t* bits(const at::Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.data_ptr<at::Half>());
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

// Activations of one row as the kernels read them: the codes of each block (q8_0 in
// order; q4_1, paired, for each pair of blocks (b0, b1) 32 bytes [b0 x0-15, b1 x0-15] then
// 32 bytes [b0 x16-31, b1 x16-31], a lone last block in order); the scale of each block;
// and scale * sum of its codes.
void quantize_row(const float* x, int64_t K, bool paired, int8_t* q, float* d, float* s) {
  const int64_t nb = K / kBlock;
  int8_t block[kBlock];
  for (int64_t b = 0; b < nb; ++b) {
    quantize_block(x + b * kBlock, block, d + b, s + b);
    if (!paired || (b == nb - 1 && nb % 2)) {
      std::memcpy(q + b * kBlock, block, kBlock);
    } else {
      int8_t* base = q + (b / 2) * 64 + (b % 2) * 16;
      std::memcpy(base, block, 16);
      std::memcpy(base + 32, block + 16, 16);
    }
  }
}

// q4_1 dots of one weight row with R activation rows (R = 1..4): each row's numbers go
// through the same operations in the same order whatever R is.
template <int R>
__attribute__((always_inline)) inline void q4_1_rows(const uint8_t* codes, const uint16_t* wd, const uint16_t* wm, const int8_t* const* xq,
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
    const __m256 wdv = halves(wd + b);
    const __m256 wmv = halves(wm + b);
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
      const __m256 sc = _mm256_set_m128(_mm_set1_ps(half(wd[b + 1]) * xd[r][b + 1]),
                                        _mm_set1_ps(half(wd[b]) * xd[r][b]));
      acc[r] = _mm256_fmadd_ps(sc, f, acc[r]);
      tail[r] += half(wm[b]) * xs[r][b];
      tail[r] += half(wm[b + 1]) * xs[r][b + 1];
    }
  }
  if (b < nb) {
    const __m256i w = unpack(codes + b * 16, mask);
    for (int r = 0; r < R; ++r) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[r] + b * kBlock));
      const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), ones);
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(half(wd[b]) * xd[r][b]), _mm256_cvtepi32_ps(p), acc[r]);
      tail[r] += half(wm[b]) * xs[r][b];
    }
  }
  for (int r = 0; r < R; ++r) out[r * out_stride] = hsum(acc[r]) + hsum(macc[r]) + tail[r];
}

// q8_0 dots of one weight row with R activation rows (R = 1..4), as q4_1_rows.
template <int R>
__attribute__((always_inline)) inline void q8_0_rows(const int8_t* codes, const uint16_t* wd, const uint16_t* /*unused*/,
               const int8_t* const* xq, const float* const* xd, const float* const* /*unused*/,
               int64_t nb, float* out, int64_t out_stride) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  auto block = [&](int64_t b, const __m256* sc, int lane) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + b * kBlock));
    const __m256i magnitude = _mm256_sign_epi8(w, w);
    for (int r = 0; r < R; ++r) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[r] + b * kBlock));
      const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(xv, w)), ones);
      const __m256 scale = _mm256_permutevar8x32_ps(sc[r], _mm256_set1_epi32(lane));
      acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[r]);
    }
  };
  int64_t b = 0;
  __m256 sc[R];
  for (; b + 8 <= nb; b += 8) {
    const __m256 wdv = halves(wd + b);
    for (int r = 0; r < R; ++r) sc[r] = _mm256_mul_ps(wdv, _mm256_loadu_ps(xd[r] + b));
    for (int j = 0; j < 8; ++j) block(b + j, sc, j);
  }
  for (; b < nb; ++b) {
    for (int r = 0; r < R; ++r) sc[r] = _mm256_set1_ps(half(wd[b]) * xd[r][b]);
    block(b, sc, 0);
  }
  for (int r = 0; r < R; ++r) out[r * out_stride] = hsum(acc[r]);
}

// The kernels for blocks_matmul: each weight layout's code type and dots.
struct Q4_1 {
  using Code = uint8_t;
  static constexpr bool kPaired = true;
  template <int R>
  static void rows(const Code* codes, const uint16_t* wd, const uint16_t* wm, const int8_t* const* xq,
                   const float* const* xd, const float* const* xs, int64_t nb, float* out,
                   int64_t out_stride) {
    q4_1_rows<R>(codes, wd, wm, xq, xd, xs, nb, out, out_stride);
  }
};

struct Q8_0 {
  using Code = int8_t;
  static constexpr bool kPaired = false;
  template <int R>
  static void rows(const Code* codes, const uint16_t* wd, const uint16_t* wm, const int8_t* const* xq,
                   const float* const* xd, const float* const* xs, int64_t nb, float* out,
                   int64_t out_stride) {
    q8_0_rows<R>(codes, wd, wm, xq, xd, xs, nb, out, out_stride);
  }
};

// x [M, K] float32 times the weights [N, K] transposed: [M, N] float32. The weight row n's
// codes start at codes + n * row_bytes; its blocks' scales (and q4_1's minima) are
// [N, K / 32]. The kernel's rows<R> are inlined (called through a pointer they ran at
// half the speed for 4 rows).
template <typename Kernel>
at::Tensor blocks_matmul(const at::Tensor& x, const typename Kernel::Code* codes, int64_t N,
                         int64_t row_bytes, const uint16_t* wd, const uint16_t* wm) {
  const int64_t M = x.size(0), K = x.size(1), nb = K / kBlock;
  auto xq = at::empty({M, K}, x.options().dtype(at::kChar));
  auto xd = at::empty({M, nb}, x.options());
  auto xs = at::empty({M, nb}, x.options());
  const float* xp = x.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m)
    quantize_row(xp + m * K, K, Kernel::kPaired, xq.data_ptr<int8_t>() + m * K,
                 xd.data_ptr<float>() + m * nb, xs.data_ptr<float>() + m * nb);
  auto out = at::empty({M, N}, x.options());
  const int8_t* qp = xq.data_ptr<int8_t>();
  const float* dp = xd.data_ptr<float>();
  const float* sp = xs.data_ptr<float>();
  float* op = out.data_ptr<float>();
  constexpr int64_t T = 4;  // outputs per task of the thread pool
  at::parallel_for(0, (N + T - 1) / T, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin * T; n < std::min(end * T, N); ++n) {
      const typename Kernel::Code* c = codes + n * row_bytes;
      const uint16_t* d = wd + n * nb;
      const uint16_t* mn = wm ? wm + n * nb : nullptr;
      for (int64_t m = 0; m < M; m += 4) {
        const int8_t* q[4];
        const float* xdr[4];
        const float* xsr[4];
        const int count = static_cast<int>(std::min<int64_t>(4, M - m));
        for (int r = 0; r < count; ++r) {
          q[r] = qp + (m + r) * K;
          xdr[r] = dp + (m + r) * nb;
          xsr[r] = sp + (m + r) * nb;
        }
        float* o = op + m * N + n;
        switch (count) {
          case 4: Kernel::template rows<4>(c, d, mn, q, xdr, xsr, nb, o, N); break;
          case 3: Kernel::template rows<3>(c, d, mn, q, xdr, xsr, nb, o, N); break;
          case 2: Kernel::template rows<2>(c, d, mn, q, xdr, xsr, nb, o, N); break;
          default: Kernel::template rows<1>(c, d, mn, q, xdr, xsr, nb, o, N); break;
        }
      }
    }
  });
  return out;
}

void check_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), op,
              ": x must be a contiguous 2-D float32 tensor");
  TORCH_CHECK(x.size(1) % kBlock == 0, op, ": inputs must be a multiple of 32");
}

void check_scales(const at::Tensor& t, int64_t N, int64_t nb, const char* op) {
  TORCH_CHECK(t.scalar_type() == at::kHalf && t.is_contiguous() && t.dim() == 2 &&
                  t.size(0) == N && t.size(1) == nb,
              op, ": scales must be contiguous float16 [out, in / 32]");
}

// q4_1: codes [N, K / 2] uint8 (each block's 16 bytes as in GGUF: code i in the low
// nibble of byte i, code i + 16 in its high nibble), scale and minimum [N, K / 32]
// float16 (as GGUF stores them).
at::Tensor q4_1(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale,
                const at::Tensor& minimum) {
  const char* op = "kaito_int_dot::q4_1";
  check_input(x, op);
  const int64_t K = x.size(1), N = codes.size(0);
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.dim() == 2 &&
                  codes.size(1) == K / 2,
              op, ": codes must be contiguous uint8 [out, in / 2]");
  check_scales(scale, N, K / kBlock, op);
  check_scales(minimum, N, K / kBlock, op);
  return blocks_matmul<Q4_1>(x, codes.data_ptr<uint8_t>(), N, K / 2, bits(scale), bits(minimum));
}

// q8_0: codes [N, K] int8 (-127..127), scale [N, K / 32] float16.
at::Tensor q8_0(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale) {
  const char* op = "kaito_int_dot::q8_0";
  check_input(x, op);
  const int64_t K = x.size(1), N = codes.size(0);
  TORCH_CHECK(codes.scalar_type() == at::kChar && codes.is_contiguous() && codes.dim() == 2 &&
                  codes.size(1) == K,
              op, ": codes must be contiguous int8 [out, in]");
  check_scales(scale, N, K / kBlock, op);
  return blocks_matmul<Q8_0>(x, codes.data_ptr<int8_t>(), N, K, bits(scale), nullptr);
}

}  // namespace

TORCH_LIBRARY(kaito_int_dot, m) {
  m.def("q4_1(Tensor x, Tensor codes, Tensor scale, Tensor minimum) -> Tensor");
  m.def("q8_0(Tensor x, Tensor codes, Tensor scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(kaito_int_dot, CPU, m) {
  m.impl("q4_1", &q4_1);
  m.impl("q8_0", &q8_0);
}
