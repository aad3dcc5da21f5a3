#ifndef GANFLEET_ADAM_H
#define GANFLEET_ADAM_H
/* One Adam update in place over n parameters (see adam.c). */
void gf_adam(float *p, const float *g, float *m, float *v, long n, double beta1, double beta2, float step, float inv_c2,
             float epsilon);
/* out = w·x, or out + w·x when accumulate (see adam.c). */
void gf_scale_add(float *out, const float *x, long n, float w, int accumulate);
/* Index of the first value that is NaN or beyond ±bound, or -1 (see adam.c). */
long gf_first_outside(const float *x, long n, float bound);
#endif
