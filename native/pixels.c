#include "pixels.h"

/*
 * A real batch: rows picked from the shard, each pixel mapped through a
 * table the caller fills with its own formula, so the result is the same
 * bits as the JavaScript that computes it per pixel.
 */
int64_t gf_gather_pixels(const uint8_t *src, int64_t rows, const int32_t *indices, int64_t count, int64_t row, const float *table,
                         float *out) {
  for (int64_t i = 0; i < count; i++) {
    /* One read of the index, checked and then used: it may live in shared memory. */
    int32_t k = __atomic_load_n(indices + i, __ATOMIC_RELAXED);
    if (k < 0 || k >= rows) return i;
    const uint8_t *p = src + (int64_t)k * row;
    float *o = out + i * row;
    for (int64_t j = 0; j < row; j++) o[j] = table[p[j]];
  }
  return -1;
}
