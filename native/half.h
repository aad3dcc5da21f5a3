#ifndef GANFLEET_HALF_H
#define GANFLEET_HALF_H
#include <stdint.h>
/* float32 -> float16 (bfloat 0) or bfloat16 (bfloat 1) bits, and back (see half.c). */
void gf_to_half(const float *src, uint16_t *dst, long n, int bfloat);
void gf_from_half(const uint16_t *src, float *dst, long n, int bfloat);
#endif
