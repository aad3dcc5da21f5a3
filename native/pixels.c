#include "pixels.h"

/*
 * A real batch: rows picked from the shard, each pixel mapped through a
 * table the caller fills with its own formula, so the result is the same
 * bits as the JavaScript that computes it per pixel.
 */
void gf_gather_pixels(const uint8_t *src, const int32_t *indices, int64_t count, int64_t row, const float *table, float *out) {
  for (int64_t i = 0; i < count; i++) {
    const uint8_t *p = src + (int64_t)indices[i] * row;
    float *o = out + i * row;
    for (int64_t j = 0; j < row; j++) o[j] = table[p[j]];
  }
}
