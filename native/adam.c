/*
 * One Adam update over a flat float32 parameter vector, the formula of
 * src/coordinator/adam.ts (tf.train.adam's), eight lanes at a time:
 *   m = b1·m + (1-b1)·g;  v = b2·v + (1-b2)·g²;  p -= step·m / (sqrt(v·invC2) + eps)
 * with step = lr / (1 - b1^t) and invC2 = 1 / (1 - b2^t) computed by the caller.
 * Arithmetic is float32, as tfjs' own Adam, which also takes 1-b1 and 1-b2 in
 * float64 before rounding them: in float32, a b2 of 0.99999999 is 1 and 1-b2 is 0.
 * The JavaScript fallback (src/coordinator/adam.ts) computes the same bits, one operation at a time.
 */
#include "adam.h"

/* The update of parameters [from, n), one at a time: the vector loop's tail, or all of it off x86. */
static void adam_scalar(float *p, const float *g, float *m, float *v, long from, long n, float beta1, float beta2,
                        float gain1, float gain2, float step, float inv_c2, float epsilon) {
  for (long i = from; i < n; i++) {
    float mi = beta1 * m[i] + gain1 * g[i];
    float vi = beta2 * v[i] + gain2 * g[i] * g[i];
    m[i] = mi;
    v[i] = vi;
    p[i] -= step * mi / (__builtin_sqrtf(vi * inv_c2) + epsilon);
  }
}

/* out[i] = w·x[i], or out[i] += w·x[i], for i in [from, n). Not 0 + w·x, which turns a product of -0 into +0
   where the vector loop and the JavaScript average keep -0. */
static void scale_add_scalar(float *out, const float *x, long from, long n, float w, int accumulate) {
  for (long i = from; i < n; i++) out[i] = accumulate ? out[i] + w * x[i] : w * x[i];
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("avx2,fma"))) void gf_adam(float *p, const float *g, float *m, float *v, long n, double beta1,
                                                  double beta2, float step, float inv_c2, float epsilon) {
  const float gain1 = (float)(1.0 - beta1), gain2 = (float)(1.0 - beta2);
  const __m256 b1 = _mm256_set1_ps((float)beta1), b2 = _mm256_set1_ps((float)beta2);
  const __m256 g1 = _mm256_set1_ps(gain1), g2 = _mm256_set1_ps(gain2);
  const __m256 st = _mm256_set1_ps(step), ic2 = _mm256_set1_ps(inv_c2), eps = _mm256_set1_ps(epsilon);
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 gi = _mm256_loadu_ps(g + i);
    __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(g1, gi));
    __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(g2, gi), gi));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    __m256 denom = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, ic2)), eps);
    _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_loadu_ps(p + i), _mm256_div_ps(_mm256_mul_ps(st, mi), denom)));
  }
  adam_scalar(p, g, m, v, i, n, (float)beta1, (float)beta2, gain1, gain2, step, inv_c2, epsilon);
}
#else
void gf_adam(float *p, const float *g, float *m, float *v, long n, double beta1, double beta2, float step, float inv_c2,
             float epsilon) {
  adam_scalar(p, g, m, v, 0, n, (float)beta1, (float)beta2, (float)(1.0 - beta1), (float)(1.0 - beta2), step, inv_c2, epsilon);
}
#endif

/* out = w·x (accumulate 0) or out + w·x (accumulate 1), float32: one worker's share of an average. */
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) void gf_scale_add(float *out, const float *x, long n, float w, int accumulate) {
  const __m256 wv = _mm256_set1_ps(w);
  long i = 0;
  if (accumulate) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_mul_ps(wv, _mm256_loadu_ps(x + i))));
  } else {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(wv, _mm256_loadu_ps(x + i)));
  }
  scale_add_scalar(out, x, i, n, w, accumulate);
}
#else
void gf_scale_add(float *out, const float *x, long n, float w, int accumulate) { scale_add_scalar(out, x, 0, n, w, accumulate); }
#endif

/* Index of the first value that is NaN or beyond ±bound (±Infinity included), or -1: the wire's validation pass. */
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) long gf_first_outside(const float *x, long n, float bound) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), b = _mm256_set1_ps(bound);
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    /* Ordered ≤: false for NaN, so NaN counts as outside. */
    int inside = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask), b, _CMP_LE_OQ));
    if (inside != 0xff) return i + __builtin_ctz(~inside & 0xff);
  }
  for (; i < n; i++) {
    if (!(x[i] <= bound && x[i] >= -bound)) return i;
  }
  return -1;
}
#else
long gf_first_outside(const float *x, long n, float bound) {
  for (long i = 0; i < n; i++) {
    if (!(x[i] <= bound && x[i] >= -bound)) return i;
  }
  return -1;
}
#endif
