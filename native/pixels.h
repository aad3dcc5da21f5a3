#ifndef GANFLEET_PIXELS_H
#define GANFLEET_PIXELS_H
#include <stdint.h>
/* out[i·row + j] = table[src[indices[i]·row + j]]: rows of uint8 pixels gathered and mapped through a 256-entry table.
   -1, or the position of the first index outside [0, rows), where it stopped. */
int64_t gf_gather_pixels(const uint8_t *src, int64_t rows, const int32_t *indices, int64_t count, int64_t row, const float *table,
                         float *out);
#endif
