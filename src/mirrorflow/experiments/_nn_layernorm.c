/* Fused layer norm without affine, float32, over the last dim of a contiguous [R, D] tensor
 * (mirrorflow.experiments._fused.layer_norm): y = (x - mean) rstd, rstd = 1/sqrt(var + eps),
 * var the biased variance (two passes, as torch's layer_norm); backward
 * dx = rstd (g - mean(g) - y mean(g y)). At D = 8 features (StackedTinyViT's width) torch's
 * CPU kernels run row by row; these loops run over rows with the features unrolled (D a
 * compile-time constant for D = 4, 8, 16, 32), so the compiler vectorizes across rows.
 */
#include "_nnkernels.h"

NN_INLINE void nn_ln_fwd_rows(const float *restrict x, float *restrict y, float *restrict mean,
                              float *restrict rstd, long R, const long D, float eps)
{
    const float inv = 1.0f / (float)D;
    for (long r = 0; r < R; r++) {
        const float *xr = x + r * D;
        float m = 0.0f, v = 0.0f;
        for (long d = 0; d < D; d++)
            m += xr[d];
        m *= inv;
        for (long d = 0; d < D; d++) {
            const float t = xr[d] - m;
            v += t * t;
        }
        const float rs = 1.0f / __builtin_sqrtf(v * inv + eps);
        for (long d = 0; d < D; d++)
            y[r * D + d] = (xr[d] - m) * rs;
        mean[r] = m;
        rstd[r] = rs;
    }
}

NN_INLINE void nn_ln_bwd_rows(const float *restrict x, const float *restrict mean,
                              const float *restrict rstd, const float *restrict g,
                              float *restrict dx, long R, const long D)
{
    const float inv = 1.0f / (float)D;
    for (long r = 0; r < R; r++) {
        const float *xr = x + r * D, *gr = g + r * D;
        const float m = mean[r], rs = rstd[r];
        float a = 0.0f, b = 0.0f;
        for (long d = 0; d < D; d++) {
            a += gr[d];
            b += gr[d] * (xr[d] - m) * rs;
        }
        a *= inv;
        b *= inv;
        for (long d = 0; d < D; d++)
            dx[r * D + d] = rs * (gr[d] - a - (xr[d] - m) * rs * b);
    }
}

/* y = layer_norm(x) over rows of D; mean, rstd [R] saved for the backward. */
NN_EXPORT NN_CLONES void nn_layernorm_fwd(const float *restrict x, float *restrict y,
                                          float *restrict mean, float *restrict rstd, long R,
                                          long D, float eps)
{
    switch (D) {
    case 4: nn_ln_fwd_rows(x, y, mean, rstd, R, 4, eps); break;
    case 8: nn_ln_fwd_rows(x, y, mean, rstd, R, 8, eps); break;
    case 16: nn_ln_fwd_rows(x, y, mean, rstd, R, 16, eps); break;
    case 32: nn_ln_fwd_rows(x, y, mean, rstd, R, 32, eps); break;
    default: nn_ln_fwd_rows(x, y, mean, rstd, R, D, eps); break;
    }
}

/* dx = d layer_norm(x) / dx applied to g. */
NN_EXPORT NN_CLONES void nn_layernorm_bwd(const float *restrict x, const float *restrict mean,
                                          const float *restrict rstd, const float *restrict g,
                                          float *restrict dx, long R, long D)
{
    switch (D) {
    case 4: nn_ln_bwd_rows(x, mean, rstd, g, dx, R, 4); break;
    case 8: nn_ln_bwd_rows(x, mean, rstd, g, dx, R, 8); break;
    case 16: nn_ln_bwd_rows(x, mean, rstd, g, dx, R, 16); break;
    case 32: nn_ln_bwd_rows(x, mean, rstd, g, dx, R, 32); break;
    default: nn_ln_bwd_rows(x, mean, rstd, g, dx, R, D); break;
    }
}
