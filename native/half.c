/*
 * float32 <-> 16-bit wire floats (src/protocol/wire-dtype.ts has the
 * JavaScript reference these match): float16 rounds to nearest, ties to
 * even, finite magnitudes beyond 65504 saturate to ±65504, ±Infinity and NaN
 * stay what they are; bfloat16 keeps float32's upper 16 bits, rounded to
 * nearest, ties to even, NaN kept NaN.
 */
#include "half.h"
#include <stdint.h>
#include <string.h>

static uint16_t bf16_bits(uint32_t b) {
  if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40);
  return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("avx2,f16c"))) void gf_to_half(const float *src, uint16_t *dst, long n, int bfloat) {
  long i = 0;
  if (bfloat) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x400000);
    for (; i + 8 <= n; i += 8) {
      __m256i b = _mm256_loadu_si256((const __m256i *)(src + i));
      __m256i rounded = _mm256_add_epi32(_mm256_add_epi32(b, bias), _mm256_and_si256(_mm256_srli_epi32(b, 16), one));
      __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, abs_mask), inf);
      __m256i bits = _mm256_srli_epi32(_mm256_blendv_epi8(rounded, _mm256_or_si256(b, quiet), nan), 16);
      /* 8 × 32-bit lanes holding 16-bit values -> 8 × 16-bit */
      __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1));
      _mm_storeu_si128((__m128i *)(dst + i), packed);
    }
  } else {
    const __m256 limit = _mm256_set1_ps(65504.f), neg_limit = _mm256_set1_ps(-65504.f);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), inf = _mm256_set1_ps(__builtin_inff());
    for (; i + 8 <= n; i += 8) {
      __m256 x = _mm256_loadu_ps(src + i);
      __m256 finite = _mm256_cmp_ps(_mm256_and_ps(x, abs_mask), inf, _CMP_LT_OQ);
      __m256 clamped = _mm256_min_ps(_mm256_max_ps(x, neg_limit), limit);
      __m128i h = _mm256_cvtps_ph(_mm256_blendv_ps(x, clamped, finite), _MM_FROUND_TO_NEAREST_INT);
      _mm_storeu_si128((__m128i *)(dst + i), h);
    }
  }
  for (; i < n; i++) {
    if (bfloat) {
      uint32_t b;
      memcpy(&b, src + i, 4);
      dst[i] = bf16_bits(b);
    } else {
      float x = src[i];
      if (!__builtin_isinf(x) && x > 65504.f) x = 65504.f;
      if (!__builtin_isinf(x) && x < -65504.f) x = -65504.f;
      dst[i] = (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT), 0);
    }
  }
}

__attribute__((target("avx2,f16c"))) void gf_from_half(const uint16_t *src, float *dst, long n, int bfloat) {
  long i = 0;
  if (bfloat) {
    for (; i + 8 <= n; i += 8) {
      __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
      _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(w, 16));
    }
    for (; i < n; i++) {
      uint32_t b = (uint32_t)src[i] << 16;
      memcpy(dst + i, &b, 4);
    }
  } else {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(src[i])));
  }
}
#else
/* Not called: the addon reports itself unsupported off x86 (gemm.c). */
void gf_to_half(const float *src, uint16_t *dst, long n, int bfloat) { (void)src; (void)dst; (void)n; (void)bfloat; (void)bf16_bits; }
void gf_from_half(const uint16_t *src, float *dst, long n, int bfloat) { (void)src; (void)dst; (void)n; (void)bfloat; }
#endif
