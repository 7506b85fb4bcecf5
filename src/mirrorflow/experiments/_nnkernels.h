/* Shared helpers of the fused float32 kernels (_nnkernels.c, _nn_attention.c): export and
 * CPU-dispatch attributes, and a branch-free exp that loops over it vectorize. */
#ifndef MIRRORFLOW_NNKERNELS_H
#define MIRRORFLOW_NNKERNELS_H

#include <stdint.h>
#include <string.h>

#if defined(_WIN32)
#define NN_EXPORT __declspec(dllexport)
#else
#define NN_EXPORT __attribute__((visibility("default")))
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define NN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NN_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define NN_INLINE static inline __attribute__((always_inline))
#else
#define NN_INLINE static inline
#endif

/* exp(x) for x in [-87, 87] (callers clamp): x = n ln2 + r, |r| <= ln2/2, exp(r) by Cephes'
 * expf polynomial (relative error about 1e-7), 2^n put into the exponent bits. No branches
 * and no calls, so loops over it vectorize. */
NN_INLINE float nn_exp(float x)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    float n = __builtin_floorf(x * log2e + 0.5f);
    float r = x - n * ln2_hi - n * ln2_lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

NN_INLINE float nn_clamp(float x, float lo, float hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

#endif
