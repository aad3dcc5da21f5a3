/*
 * A BLIS-style float32 GEMM: both operands are packed into panels (A into
 * MR-row strips, B into NR-column strips, each k-major and zero-padded), so
 * one micro-kernel (AVX2, or AVX-512 where the CPU has it) serves every
 * transpose and every edge, and the
 * epilogue adds the bias and applies the activation on the way out.
 * Sized for the GAN's products (k, n ≤ a few thousand): the packed B of one
 * call stays in L2, an A strip in L1, so no further cache blocking is needed.
 */
#include "gemm.h"
#if defined(__x86_64__) || defined(__i386__)
#define GF_X86 1
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MR 6
#define NR 16
/* The AVX-512 kernel's tile: 8 rows of two 16-float vectors, 16 accumulators. */
#define MR512 8
#define NR512 32
#define TILE_MAX (MR512 * NR512)

int gf_gemm_supported(void) {
#ifdef GF_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return 0; /* no micro-kernel for this architecture: the caller keeps its own matmul */
#endif
}

/* The kernel in use: 512 where the CPU has AVX-512F and it was not turned off, else 256 (AVX2). */
static _Atomic int vector_bits = 0;

static int avx512_supported(void) {
#ifdef GF_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
#else
  return 0;
#endif
}

/* Atomic: the bench's worker threads share the addon, and each chooses (the same width) as it loads. */
int gf_gemm_width(int want) {
  if (want == 512 || want == 256) vector_bits = want == 512 && avx512_supported() ? 512 : 256;
  int bits = vector_bits;
  if (bits == 0) vector_bits = bits = avx512_supported() ? 512 : 256;
  return bits;
}

/* Per-thread scratch that only grows: a step's calls reuse it. */
static _Thread_local float *scratch_a, *scratch_b;
static _Thread_local size_t scratch_a_len, scratch_b_len;
void gf_gemm_release(void *unused) {
  (void)unused;
  free(scratch_a);
  free(scratch_b);
  scratch_a = scratch_b = NULL;
  scratch_a_len = scratch_b_len = 0;
}

/* One micro-tile of results before the epilogue. */
static _Thread_local float tile[TILE_MAX] __attribute__((aligned(64)));

__attribute__((unused)) static float *reserve(float **buf, size_t *len, size_t want) {
  if (*len >= want) return *buf;
  free(*buf);
  *buf = NULL;
  *len = 0;
  if (posix_memalign((void **)buf, 64, want * sizeof(float)) != 0) return NULL;
  *len = want;
  return *buf;
}

/*
 * One panel of `width` consecutive rows of op(A) (or columns of op(B)),
 * starting at `first`, as k rows of `width` floats, zero-padded past `count`.
 * `contiguous`: the source holds each k row's values side by side (Aᵀ stored
 * k×m, B stored k×n); otherwise each value's k entries are (A m×k, Bᵀ n×k).
 */
__attribute__((unused)) static void pack_panel(int count, int k, const float *src, int contiguous, int first, int width,
                                               float *dst) {
  int valid = count - first < width ? count - first : width;
  if (contiguous) {
    for (int p = 0; p < k; p++) {
      const float *row = src + (size_t)p * count + first;
      int r = 0;
      for (; r < valid; r++) dst[r] = row[r];
      for (; r < width; r++) dst[r] = 0.f;
      dst += width;
    }
  } else {
    for (int r = 0; r < width; r++) {
      const float *line = r < valid ? src + (size_t)(first + r) * k : NULL;
      for (int p = 0; p < k; p++) dst[p * width + r] = line ? line[p] : 0.f;
    }
  }
}

#ifdef GF_X86
__attribute__((target("avx2,fma"))) static void kernel_6x16(int k, const float *ap, const float *bp, int full, float *c, int ldc,
                                                                const float *bias, int activation, float alpha) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int p = 0; p < k; p++) {
    __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
    __m256 a;
    a = _mm256_broadcast_ss(ap + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(ap + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(ap + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(ap + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(ap + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(ap + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    ap += MR;
    bp += NR;
  }
  __m256 acc[2 * MR] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
  if (!full) {
    for (int r = 0; r < MR; r++) {
      _mm256_store_ps(tile + r * NR, acc[2 * r]);
      _mm256_store_ps(tile + r * NR + 8, acc[2 * r + 1]);
    }
    return;
  }
  /* A whole tile: bias and activation in registers, straight into C. */
  __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
  if (bias) {
    bias0 = _mm256_loadu_ps(bias);
    bias1 = _mm256_loadu_ps(bias + 8);
  }
  __m256 zero = _mm256_setzero_ps(), slope = _mm256_set1_ps(alpha), six = _mm256_set1_ps(6.f);
  for (int r = 0; r < MR; r++) {
    __m256 x[2] = {_mm256_add_ps(acc[2 * r], bias0), _mm256_add_ps(acc[2 * r + 1], bias1)};
    for (int h = 0; h < 2; h++) {
      switch (activation) {
        case GF_RELU: x[h] = _mm256_max_ps(x[h], zero); break;
        case GF_LEAKYRELU: x[h] = _mm256_blendv_ps(x[h], _mm256_mul_ps(x[h], slope), _mm256_cmp_ps(x[h], zero, _CMP_LT_OQ)); break;
        case GF_RELU6: x[h] = _mm256_min_ps(_mm256_max_ps(x[h], zero), six); break;
        default: break;
      }
      _mm256_storeu_ps(c + (size_t)r * ldc + 8 * h, x[h]);
    }
  }
}

/*
 * The same product on AVX-512: an 8×32 tile, two 16-float vectors a row. On
 * the Xeon this project measures on, its products run about half as many
 * instructions as the AVX2 kernel's 6×16 tiles.
 */
#define ROW512(r) \
  a = _mm512_set1_ps(ap[r]); c##r##0 = _mm512_fmadd_ps(a, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(a, b1, c##r##1);
__attribute__((target("avx512f"))) static void kernel_8x32(int k, const float *ap, const float *bp, int full, float *c, int ldc,
                                                               const float *bias, int activation, float alpha) {
  __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
  __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(), c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
  __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
  __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps(), c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
  for (int p = 0; p < k; p++) {
    __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
    __m512 a;
    ROW512(0) ROW512(1) ROW512(2) ROW512(3) ROW512(4) ROW512(5) ROW512(6) ROW512(7)
    ap += MR512;
    bp += NR512;
  }
  __m512 acc[2 * MR512] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71};
  if (!full) {
    for (int r = 0; r < MR512; r++) {
      _mm512_store_ps(tile + r * NR512, acc[2 * r]);
      _mm512_store_ps(tile + r * NR512 + 16, acc[2 * r + 1]);
    }
    return;
  }
  __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
  if (bias) {
    bias0 = _mm512_loadu_ps(bias);
    bias1 = _mm512_loadu_ps(bias + 16);
  }
  __m512 zero = _mm512_setzero_ps(), slope = _mm512_set1_ps(alpha), six = _mm512_set1_ps(6.f);
  for (int r = 0; r < MR512; r++) {
    __m512 x[2] = {_mm512_add_ps(acc[2 * r], bias0), _mm512_add_ps(acc[2 * r + 1], bias1)};
    for (int h = 0; h < 2; h++) {
      switch (activation) {
        case GF_RELU: x[h] = _mm512_max_ps(x[h], zero); break;
        case GF_LEAKYRELU: x[h] = _mm512_mask_mul_ps(x[h], _mm512_cmp_ps_mask(x[h], zero, _CMP_LT_OQ), x[h], slope); break;
        case GF_RELU6: x[h] = _mm512_min_ps(_mm512_max_ps(x[h], zero), six); break;
        default: break;
      }
      _mm512_storeu_ps(c + (size_t)r * ldc + 16 * h, x[h]);
    }
  }
}

__attribute__((unused)) static inline float activate(float x, int activation, float alpha) {
  switch (activation) {
    case GF_RELU: return x > 0.f ? x : 0.f;
    case GF_LEAKYRELU: return x < 0.f ? alpha * x : x;
    /* NaN to 0, as the vector epilogue's min(max(x, 0), 6) and XNNPACK give it. */
    case GF_RELU6: return x > 0.f ? (x < 6.f ? x : 6.f) : 0.f;
    case GF_SIGMOID: return 1.f / (1.f + expf(-x));
    default: return x;
  }
}

int gf_gemm(int m, int n, int k, const float *a, int trans_a, const float *b, int trans_b, float *c,
            const float *bias, int bias_len, int activation, float alpha) {
  if (m <= 0 || n <= 0) return 0;
  int wide = gf_gemm_width(0) == 512;
  int mr = wide ? MR512 : MR, nr = wide ? NR512 : NR;
  int strips_b = (n + nr - 1) / nr;
  size_t kk = k > 0 ? (size_t)k : 1;
  float *bp = reserve(&scratch_b, &scratch_b_len, (size_t)strips_b * kk * nr);
  float *ap = reserve(&scratch_a, &scratch_a_len, kk * mr);
  if (!bp || !ap) return -1;
  for (int s = 0; s < strips_b; s++) pack_panel(n, k, b, !trans_b, s * nr, nr, bp + (size_t)s * kk * nr);
  for (int i0 = 0; i0 < m; i0 += mr) {
    pack_panel(m, k, a, trans_a, i0, mr, ap);
    int rows = m - i0 < mr ? m - i0 : mr;
    for (int s = 0; s < strips_b; s++) {
      int j0 = s * nr;
      int cols = n - j0 < nr ? n - j0 : nr;
      float *dst = c + (size_t)i0 * n + j0;
      /* Full tiles finish in the kernel; sigmoid, bias broadcast from one value and edges take the scalar path. */
      int full = rows == mr && cols == nr && activation != GF_SIGMOID && (!bias || bias_len != 1);
      if (wide) {
        kernel_8x32(k, ap, bp + (size_t)s * kk * nr, full, dst, n, bias ? bias + j0 : NULL, activation, alpha);
      } else {
        kernel_6x16(k, ap, bp + (size_t)s * kk * nr, full, dst, n, bias ? bias + j0 : NULL, activation, alpha);
      }
      if (full) continue;
      for (int r = 0; r < rows; r++) {
        for (int q = 0; q < cols; q++) {
          float x = tile[r * nr + q];
          if (bias) x += bias[bias_len == 1 ? 0 : j0 + q];
          dst[(size_t)r * n + q] = activate(x, activation, alpha);
        }
      }
    }
  }
  return 0;
}
#else
int gf_gemm(int m, int n, int k, const float *a, int trans_a, const float *b, int trans_b, float *c,
            const float *bias, int bias_len, int activation, float alpha) {
  (void)m; (void)n; (void)k; (void)a; (void)trans_a; (void)b; (void)trans_b; (void)c;
  (void)bias; (void)bias_len; (void)activation; (void)alpha;
  return -2;
}
#endif
