/* Fused multi-head attention core, float32 (mirrorflow.experiments._fused.fused_attention).
 *
 * Layout of StackedTinyViT: qkv [N, T, 3D] contiguous, columns [Q | K | V], each split into h
 * heads of width dh = D/h (head c's query columns c dh ..., key D + c dh ..., value 2D + c dh ...).
 * Per sequence n and head c, with scale = dh^-1/2:
 *   forward   P = softmax_keys(q k^T scale),  o = P v           (o [N, T, D], heads in order)
 *   backward  dV = P^T dO,  dP = dO V^T,  dS = P o (dP - rowsum(dP o P)),
 *             dQ = dS K scale,  dK = dS^T Q scale                (into dqkv [N, T, 3D])
 * The saved probabilities are stored transposed and padded, pt [N, h, T(key), TP(query)],
 * TP = T rounded up to a multiple of 8 (nn_attention_pad): with the query index innermost, every
 * loop of the forward (scores, the softmax over keys, P v) and most of the backward is an axpy
 * or an elementwise pass over the queries of one key, which the compiler vectorizes (no
 * horizontal reductions). dK and dV need sums over queries: those two use P and dS transposed
 * back (T x TP copies in a local array). The bodies are compiled once per padded length TP
 * (a compile-time constant: at T = 17 the per-loop overhead of a run-time trip count costs
 * more than the arithmetic); the padding queries (and padding keys of the transposed copies)
 * are zero, so they change nothing that is written out. Per (sequence, head) everything lives
 * in small local arrays (T, dh <= NN_ATT_MAX; the Python side checks); the sequences are the
 * outer loop, so each one's data stays in L1.
 */
#include "_nnkernels.h"

#define NN_ATT_MAX 64

/* The padded query length of the saved probabilities (the Python side allocates pt with it). */
NN_EXPORT long nn_attention_pad(long T) { return (T + 7) / 8 * 8; }

/* Local arrays of one (sequence, head). Entries never written stay zero (the padding). */
typedef struct {
    float qt[NN_ATT_MAX * NN_ATT_MAX], ot[NN_ATT_MAX * NN_ATT_MAX];
    float m[NN_ATT_MAX], z[NN_ATT_MAX];
} nn_att_fwd_scratch;

typedef struct {
    float dot[NN_ATT_MAX * NN_ATT_MAX], dst[NN_ATT_MAX * NN_ATT_MAX];
    float p[NN_ATT_MAX * NN_ATT_MAX], ds[NN_ATT_MAX * NN_ATT_MAX];
    float dqt[NN_ATT_MAX * NN_ATT_MAX], dkt[NN_ATT_MAX * NN_ATT_MAX], dvt[NN_ATT_MAX * NN_ATT_MAX];
    float r[NN_ATT_MAX];
} nn_att_bwd_scratch;

/* out[i] = sum_d coef[d] rows[d][i], i < TP (rows: dh rows of stride TP), summed in order of
 * d: a key's (or value's) row against the transposed queries (or output gradients). */
NN_INLINE void nn_att_combine(float *restrict out, const float *restrict coef,
                              const float *restrict rows, const long TP, const long dh)
{
    const float c0 = coef[0];
    for (long i = 0; i < TP; i++)
        out[i] = c0 * rows[i];
    for (long d = 1; d < dh; d++) {
        const float cd = coef[d];
        const float *rd = rows + d * TP;
        for (long i = 0; i < TP; i++)
            out[i] += cd * rd[i];
    }
}

/* Forward of sequence x (T rows of width W) for head c; pt [T][TP]; o rows of width D. */
NN_INLINE void nn_att_fwd_one(const float *restrict x, float *restrict o, float *restrict pt,
                              nn_att_fwd_scratch *restrict w, const long T, const long TP,
                              const long D, const long dh, const long c, const float scale)
{
    const long W = 3 * D, cq = c * dh, ck = D + c * dh, cv = 2 * D + c * dh;
    float *restrict qt = w->qt, *restrict ot = w->ot, *restrict m = w->m, *restrict z = w->z;
    for (long i = 0; i < T; i++)  /* qt[d][i] = q[i, d] scale (padding i >= T: 0) */
        for (long d = 0; d < dh; d++)
            qt[d * TP + i] = x[i * W + cq + d] * scale;
    /* scores, transposed: pt[j][i] = k_j . q_i scale */
    for (long j = 0; j < T; j++)
        nn_att_combine(pt + j * TP, x + j * W + ck, qt, TP, dh);
    /* softmax over keys j, for all queries i at once */
    for (long i = 0; i < TP; i++)
        m[i] = pt[i];
    for (long j = 1; j < T; j++) {
        const float *s = pt + j * TP;
        for (long i = 0; i < TP; i++)
            m[i] = s[i] > m[i] ? s[i] : m[i];
    }
    for (long i = 0; i < TP; i++)
        z[i] = 0.0f;
    for (long j = 0; j < T; j++) {
        float *restrict s = pt + j * TP;
        for (long i = 0; i < TP; i++) {
            const float e = nn_exp(nn_clamp(s[i] - m[i], -87.0f, 0.0f));
            s[i] = e;
            z[i] += e;
        }
    }
    for (long i = 0; i < TP; i++)
        z[i] = 1.0f / z[i];
    for (long d = 0; d < dh * TP; d++)
        ot[d] = 0.0f;
    for (long j = 0; j < T; j++) {
        float *restrict p = pt + j * TP;
        for (long i = 0; i < TP; i++)
            p[i] *= z[i];
        const float *vj = x + j * W + cv;
        for (long d = 0; d < dh; d++) {
            const float vd = vj[d];
            float *restrict od = ot + d * TP;
            for (long i = 0; i < TP; i++)
                od[i] += vd * p[i];
        }
    }
    for (long i = 0; i < T; i++)
        for (long d = 0; d < dh; d++)
            o[i * D + cq + d] = ot[d * TP + i];
}

/* Backward of sequence x for head c: g = dO rows (width D), dx = dqkv rows (width W). */
NN_INLINE void nn_att_bwd_one(const float *restrict x, const float *restrict pt,
                              const float *restrict g, float *restrict dx,
                              nn_att_bwd_scratch *restrict w, const long T, const long TP,
                              const long D, const long dh, const long c, const float scale)
{
    const long W = 3 * D, cq = c * dh, ck = D + c * dh, cv = 2 * D + c * dh;
    float *restrict dot = w->dot, *restrict dst = w->dst, *restrict p = w->p, *restrict ds = w->ds;
    float *restrict dqt = w->dqt, *restrict dkt = w->dkt, *restrict dvt = w->dvt, *restrict r = w->r;
    for (long i = 0; i < T; i++)  /* dot[d][i] = dO[i, d] (padding: 0) */
        for (long d = 0; d < dh; d++)
            dot[d * TP + i] = g[i * D + cq + d];
    /* dP^T[j][i] = v_j . dO_i;  r[i] = sum_j dP[i, j] P[i, j] */
    for (long i = 0; i < TP; i++)
        r[i] = 0.0f;
    for (long j = 0; j < T; j++) {
        float *restrict a = dst + j * TP;
        const float *pj = pt + j * TP;
        nn_att_combine(a, x + j * W + cv, dot, TP, dh);
        for (long i = 0; i < TP; i++)
            r[i] += a[i] * pj[i];
    }
    /* dS^T[j][i] = P[i, j] (dP[i, j] - r[i]) (0 for padding queries: their dO is 0);
     * dQ^T[d][i] = scale sum_j k[j, d] dS[i, j] */
    for (long d = 0; d < dh * TP; d++)
        dqt[d] = 0.0f;
    for (long j = 0; j < T; j++) {
        float *restrict a = dst + j * TP;
        const float *pj = pt + j * TP;
        for (long i = 0; i < TP; i++)
            a[i] = pj[i] * (a[i] - r[i]);
        const float *kj = x + j * W + ck;
        for (long d = 0; d < dh; d++) {
            const float kd = kj[d] * scale;
            float *restrict gq = dqt + d * TP;
            for (long i = 0; i < TP; i++)
                gq[i] += kd * a[i];
        }
    }
    /* P and dS back to [query][key] (padding keys: 0) */
    for (long j = 0; j < T; j++)
        for (long i = 0; i < T; i++) {
            p[i * TP + j] = pt[j * TP + i];
            ds[i * TP + j] = dst[j * TP + i];
        }
    /* dK^T[d][j] = scale sum_i q[i, d] dS[i, j];  dV^T[d][j] = sum_i dO[i, d] P[i, j] */
    for (long d = 0; d < dh * TP; d++) {
        dkt[d] = 0.0f;
        dvt[d] = 0.0f;
    }
    for (long i = 0; i < T; i++) {
        const float *qi = x + i * W + cq;
        const float *gi = g + i * D + cq;
        const float *dsi = ds + i * TP, *pi = p + i * TP;
        for (long d = 0; d < dh; d++) {
            const float a = qi[d] * scale, b = gi[d];
            float *restrict gk = dkt + d * TP, *restrict gv = dvt + d * TP;
            for (long j = 0; j < TP; j++) {
                gk[j] += a * dsi[j];
                gv[j] += b * pi[j];
            }
        }
    }
    for (long i = 0; i < T; i++)
        for (long d = 0; d < dh; d++) {
            dx[i * W + cq + d] = dqt[d * TP + i];
            dx[i * W + ck + d] = dkt[d * TP + i];
            dx[i * W + cv + d] = dvt[d * TP + i];
        }
}

/* One loop over the sequences per padded length, so that TP is a compile-time constant (in
 * the forward the head width too where it is 4, the experiments' default: about 20 % faster
 * there, 5 % in the backward, not worth its code size). */
#define NN_ATT_CASES(X) X(8) X(16) X(24) X(32) X(40) X(48) X(56) X(64)

/* Forward. qkv [N, T, 3D], o [N, T, D], pt [N, h, T, TP] (pt[n, c, j, i] = P[i, j]). */
NN_EXPORT NN_CLONES void nn_attention_fwd(const float *restrict qkv, float *restrict o,
                                          float *restrict pt, long N, long T, long D, long h)
{
    const long TP = nn_attention_pad(T), dh = D / h;
    const float scale = 1.0f / __builtin_sqrtf((float)dh);
    nn_att_fwd_scratch w;
    memset(&w, 0, sizeof w);
#define NN_FWD_LOOP(P, DH)                                                                    \
    for (long n = 0; n < N; n++)                                                              \
        for (long c = 0; c < h; c++)                                                          \
            nn_att_fwd_one(qkv + n * T * 3 * D, o + n * T * D, pt + (n * h + c) * T * P, &w,  \
                           T, P, D, DH, c, scale);
#define NN_FWD_CASE(P)                                                                        \
    case P:                                                                                   \
        if (dh == 4) { NN_FWD_LOOP(P, 4) } else { NN_FWD_LOOP(P, dh) }                        \
        break;
    switch (TP) { NN_ATT_CASES(NN_FWD_CASE) default: break; }
#undef NN_FWD_CASE
#undef NN_FWD_LOOP
}

/* Backward. qkv and pt as saved by the forward, dout [N, T, D]; writes every entry of
 * dqkv [N, T, 3D]. */
NN_EXPORT NN_CLONES void nn_attention_bwd(const float *restrict qkv, const float *restrict pt,
                                          const float *restrict dout, float *restrict dqkv,
                                          long N, long T, long D, long h)
{
    const long TP = nn_attention_pad(T), dh = D / h;
    const float scale = 1.0f / __builtin_sqrtf((float)dh);
    nn_att_bwd_scratch w;
    memset(&w, 0, sizeof w);
#define NN_BWD_LOOP(P, DH)                                                                    \
    for (long n = 0; n < N; n++)                                                              \
        for (long c = 0; c < h; c++)                                                          \
            nn_att_bwd_one(qkv + n * T * 3 * D, pt + (n * h + c) * T * P, dout + n * T * D,   \
                           dqkv + n * T * 3 * D, &w, T, P, D, DH, c, scale);
#define NN_BWD_CASE(P)                                                                        \
    case P:                                                                                   \
        NN_BWD_LOOP(P, dh)                                                                    \
        break;
    switch (TP) { NN_ATT_CASES(NN_BWD_CASE) default: break; }
#undef NN_BWD_CASE
#undef NN_BWD_LOOP
}
