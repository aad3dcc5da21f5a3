/* ganfleet's single-threaded float32 matrix product for the wasm backend. */
#ifndef GANFLEET_GEMM_H
#define GANFLEET_GEMM_H
#include <stddef.h>

enum gf_activation { GF_LINEAR = 0, GF_RELU = 1, GF_LEAKYRELU = 2, GF_RELU6 = 3, GF_SIGMOID = 4 };

/* 1 when this CPU has the instructions every kernel of the addon needs (AVX2, FMA, F16C). */
int gf_gemm_supported(void);

/*
 * The vector width of the micro-kernel in use, 512 (AVX-512F) or 256 (AVX2).
 * `want` 512 or 256 chooses (512 only where the CPU has it); 0 only asks.
 */
int gf_gemm_width(int want);

/*
 * C[m×n] = act(op(A)·op(B) + bias), row-major. op(A) is A (m×k, row stride k)
 * or, when trans_a, Aᵀ of a k×m matrix (row stride m); likewise op(B) is k×n
 * or Bᵀ of an n×k matrix. bias is NULL, one value (bias_len 1) or n values.
 * Returns 0, or -1 when scratch memory could not be allocated.
 */
int gf_gemm(int m, int n, int k, const float *a, int trans_a, const float *b, int trans_b, float *c,
            const float *bias, int bias_len, int activation, float alpha);

/* Frees the calling thread's scratch (a napi env cleanup hook: a worker thread's would otherwise leak as it exits). */
void gf_gemm_release(void *unused);
#endif
