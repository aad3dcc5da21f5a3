/*
 * Node-API face of gemm.c, adam.c (Adam, the gradient average, the range
 * check of incoming floats) and half.c
 * (the 16-bit wire conversions) and pixels.c (a real batch from the shard). gemm's operands are offsets into one
 * Float32Array, the wasm backend's heap, where tfjs keeps every tensor: the
 * product reads and writes the tensors in place, with no copy in or out.
 */
#include <node_api.h>
#include <math.h>
#include <stdint.h>
#include "adam.h"
#include "gemm.h"
#include "half.h"
#include "pixels.h"

#define ARGS 13

static napi_value fail(napi_env env, const char *code, const char *msg) {
  napi_throw_range_error(env, code, msg);
  return NULL;
}

/* The call's n arguments into argv; false, with a RangeError thrown, unless there are exactly n. */
static bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *code, const char *usage) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == n) return true;
  fail(env, code, usage);
  return false;
}

/* Whether `value` is a typed array of `want`; if so, its data and element count. */
static bool typed_array(napi_env env, napi_value value, napi_typedarray_type want, void **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  return napi_is_typedarray(env, value, &is_typed) == napi_ok && is_typed &&
         napi_get_typedarray_info(env, value, &type, length, data, NULL, NULL) == napi_ok && type == want;
}

static bool float32_array(napi_env env, napi_value value, float **data, size_t *length) {
  return typed_array(env, value, napi_float32_array, (void **)data, length);
}

static bool uint16_array(napi_env env, napi_value value, uint16_t **data, size_t *length) {
  return typed_array(env, value, napi_uint16_array, (void **)data, length);
}

/* firstOutside(values, bound): index of the first NaN or value beyond ±bound, or -1. */
static napi_value first_outside(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  float *x;
  size_t n;
  double bound;
  if (!get_args(env, info, 2, argv, "FIRST_OUTSIDE_ARGS", "firstOutside(Float32Array, bound)")) return NULL;
  if (!float32_array(env, argv[0], &x, &n) || napi_get_value_double(env, argv[1], &bound) != napi_ok)
    return fail(env, "FIRST_OUTSIDE_ARGS", "firstOutside(Float32Array, bound)");
  /* A bound beyond float32's range means "finite": FLT_MAX, which a float32 never exceeds but ±Infinity does.
     Otherwise the largest float32 ≤ bound: (float)bound may round up (0.1 → 0.100000001), and then a float32 just
     above the bound would count as inside, where the JavaScript check (in float64) refuses it. */
  float b = bound >= 3.4028234663852886e38 ? 3.4028234663852886e38f : (float)bound;
  if ((double)b > bound) b = nextafterf(b, -__builtin_inff());
  napi_value result;
  napi_create_int64(env, gf_first_outside(x, (long)n, b), &result);
  return result;
}

static napi_value gemm(napi_env env, napi_callback_info info) {
  napi_value argv[ARGS];
  if (!get_args(env, info, ARGS, argv, "GEMM_ARGS", "gemm(heap, m, n, k, a, transA, b, transB, c, bias, biasLength, activation, alpha)")) return NULL;
  float *heap;
  size_t length;
  if (!float32_array(env, argv[0], &heap, &length)) return fail(env, "GEMM_ARGS", "heap must be a Float32Array");
  int64_t v[ARGS - 2];
  for (int i = 0; i < ARGS - 2; i++) {
    if (napi_get_value_int64(env, argv[i + 1], &v[i]) != napi_ok) return fail(env, "GEMM_ARGS", "sizes and offsets must be numbers");
  }
  double alpha;
  if (napi_get_value_double(env, argv[ARGS - 1], &alpha) != napi_ok) return fail(env, "GEMM_ARGS", "alpha must be a number");
  int64_t m = v[0], n = v[1], k = v[2], a = v[3], ta = v[4], b = v[5], tb = v[6], c = v[7], bias = v[8], bias_len = v[9], act = v[10];
  const int64_t limit = 1 << 30;
  if (m < 0 || n < 0 || k < 0 || m > limit || n > limit || k > limit) return fail(env, "GEMM_ARGS", "sizes out of range");
  /* Every operand must lie inside the heap: a wrong offset must not touch other memory. */
  int64_t len = (int64_t)length;
  /* offset + size compared as size > len - offset: an offset near INT64_MAX (any JS number ≥ 2^63 saturates to it)
     must not wrap the sum negative and pass. Sizes are ≤ 2^60 here, and len - offset ≥ 0 once offset ≤ len. */
  if (a < 0 || a > len || m * k > len - a || b < 0 || b > len || k * n > len - b || c < 0 || c > len || m * n > len - c)
    return fail(env, "GEMM_BOUNDS", "an operand lies outside the heap");
  if (bias >= 0 && (bias_len != 1 && bias_len != n)) return fail(env, "GEMM_ARGS", "bias must hold 1 or n values");
  if (bias >= 0 && (bias > len || bias_len > len - bias)) return fail(env, "GEMM_BOUNDS", "the bias lies outside the heap");
  if (act < GF_LINEAR || act > GF_SIGMOID) return fail(env, "GEMM_ARGS", "unknown activation");
  if (gf_gemm((int)m, (int)n, (int)k, heap + a, (int)ta, heap + b, (int)tb, heap + c, bias >= 0 ? heap + bias : NULL,
              (int)bias_len, (int)act, (float)alpha) != 0) {
    /* -2: no micro-kernel for this CPU (supported() said so); -1: out of memory. */
    napi_throw_error(env, "GEMM_NOMEM", "gemm could not allocate its scratch memory");
    return NULL;
  }
  return NULL;
}

/* adam(params, gradients, m, v, beta1, beta2, stepSize, invC2, epsilon): one update in place. */
static napi_value adam(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (!get_args(env, info, 9, argv, "ADAM_ARGS", "adam(params, gradients, m, v, beta1, beta2, stepSize, invC2, epsilon)")) return NULL;
  float *arrays[4];
  size_t lengths[4];
  for (int i = 0; i < 4; i++) {
    if (!float32_array(env, argv[i], &arrays[i], &lengths[i])) return fail(env, "ADAM_ARGS", "params, gradients, m and v must be Float32Arrays");
    if (lengths[i] != lengths[0]) return fail(env, "ADAM_ARGS", "params, gradients, m and v must have one length");
  }
  double s[5];
  for (int i = 0; i < 5; i++) {
    if (napi_get_value_double(env, argv[4 + i], &s[i]) != napi_ok) return fail(env, "ADAM_ARGS", "the scalars must be numbers");
  }
  gf_adam(arrays[0], arrays[1], arrays[2], arrays[3], (long)lengths[0], s[0], s[1], (float)s[2], (float)s[3], (float)s[4]);
  return NULL;
}

/* scaleAdd(out, x, w, accumulate): out = w·x, or out += w·x. */
static napi_value scale_add(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv, "SCALE_ADD_ARGS", "scaleAdd(out, x, w, accumulate)")) return NULL;
  float *out, *x;
  size_t n_out, n_x;
  if (!float32_array(env, argv[0], &out, &n_out) || !float32_array(env, argv[1], &x, &n_x))
    return fail(env, "SCALE_ADD_ARGS", "out and x must be Float32Arrays");
  if (n_out != n_x) return fail(env, "SCALE_ADD_ARGS", "out and x must have one length");
  double w;
  bool accumulate;
  if (napi_get_value_double(env, argv[2], &w) != napi_ok || napi_get_value_bool(env, argv[3], &accumulate) != napi_ok)
    return fail(env, "SCALE_ADD_ARGS", "w must be a number and accumulate a boolean");
  gf_scale_add(out, x, (long)n_out, (float)w, accumulate);
  return NULL;
}

/* toHalf(src, dst, bfloat) and fromHalf(src, dst, bfloat): the 16-bit wire conversions. */
static napi_value convert_half(napi_env env, napi_callback_info info, bool to_half) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv, "HALF_ARGS", to_half ? "toHalf(src, dst, bfloat)" : "fromHalf(src, dst, bfloat)")) return NULL;
  float *floats;
  uint16_t *halves;
  size_t n_floats, n_halves;
  bool ok = to_half ? float32_array(env, argv[0], &floats, &n_floats) && uint16_array(env, argv[1], &halves, &n_halves)
                    : uint16_array(env, argv[0], &halves, &n_halves) && float32_array(env, argv[1], &floats, &n_floats);
  if (!ok) return fail(env, "HALF_ARGS", "a Float32Array and a Uint16Array, in the direction of the conversion");
  if (n_floats != n_halves) return fail(env, "HALF_ARGS", "src and dst must have one length");
  bool bfloat;
  if (napi_get_value_bool(env, argv[2], &bfloat) != napi_ok) return fail(env, "HALF_ARGS", "bfloat must be a boolean");
  if (to_half) gf_to_half(floats, halves, (long)n_floats, bfloat);
  else gf_from_half(halves, floats, (long)n_floats, bfloat);
  return NULL;
}

static napi_value to_half(napi_env env, napi_callback_info info) { return convert_half(env, info, true); }
static napi_value from_half(napi_env env, napi_callback_info info) { return convert_half(env, info, false); }

/* gatherPixels(images, indices, row, table, out): out's rows are images' rows `indices`, each pixel through the 256-entry table. */
static napi_value gather_pixels(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  const char *usage = "gatherPixels(Uint8Array images, Int32Array indices, row, Float32Array table, Float32Array out)";
  if (!get_args(env, info, 5, argv, "GATHER_ARGS", usage)) return NULL;
  uint8_t *images;
  int32_t *indices;
  float *table, *out;
  size_t n_images, count, n_table, n_out;
  int64_t row;
  if (!typed_array(env, argv[0], napi_uint8_array, (void **)&images, &n_images) ||
      !typed_array(env, argv[1], napi_int32_array, (void **)&indices, &count) ||
      napi_get_value_int64(env, argv[2], &row) != napi_ok || !float32_array(env, argv[3], &table, &n_table) ||
      !float32_array(env, argv[4], &out, &n_out))
    return fail(env, "GATHER_ARGS", usage);
  /* Divisions, not products: count·row must not overflow on the way to the check. */
  if (row <= 0 || (uint64_t)row > n_out || n_table != 256 || count > n_out / (uint64_t)row)
    return fail(env, "GATHER_ARGS", "row > 0, a 256-entry table, and out with count·row slots");
  /* Every row read must lie inside the images: a bad index must not touch other memory. The gather checks each
     index as it reads it, once: indices in a SharedArrayBuffer may change between a separate check and the copy. */
  int64_t rows = (int64_t)(n_images / (uint64_t)row);
  if (gf_gather_pixels(images, rows, indices, (int64_t)count, row, table, out) >= 0)
    return fail(env, "GATHER_BOUNDS", "an index lies outside the images");
  return NULL;
}

static napi_value supported(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  napi_get_boolean(env, gf_gemm_supported(), &result);
  return result;
}

/* gemmWidth(want): the matmul kernel's vector width after choosing `want` (512 or 256; 0 only asks). */
static napi_value gemm_width(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t want = 0;
  if (argc >= 1 && napi_get_value_int32(env, argv[0], &want) != napi_ok) want = 0;
  napi_value result;
  napi_create_int32(env, gf_gemm_width(want), &result);
  return result;
}

static void release_scratch(void *hooked) {
  gf_gemm_release(NULL);
  *(bool *)hooked = false;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"gemm", NULL, gemm, NULL, NULL, NULL, napi_default, NULL},
      {"adam", NULL, adam, NULL, NULL, NULL, napi_default, NULL},
      {"scaleAdd", NULL, scale_add, NULL, NULL, NULL, napi_default, NULL},
      {"firstOutside", NULL, first_outside, NULL, NULL, NULL, napi_default, NULL},
      {"toHalf", NULL, to_half, NULL, NULL, NULL, napi_default, NULL},
      {"fromHalf", NULL, from_half, NULL, NULL, NULL, napi_default, NULL},
      {"gatherPixels", NULL, gather_pixels, NULL, NULL, NULL, napi_default, NULL},
      {"supported", NULL, supported, NULL, NULL, NULL, napi_default, NULL},
      {"gemmWidth", NULL, gemm_width, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  /* A worker thread's gemm scratch is thread-local: free it when that thread's environment goes. Once per
     thread (one env each): a second registration of the same hook aborts node (process.dlopen of the file twice). */
  static _Thread_local bool hooked = false;
  if (!hooked && napi_add_env_cleanup_hook(env, release_scratch, &hooked) == napi_ok) hooked = true;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
