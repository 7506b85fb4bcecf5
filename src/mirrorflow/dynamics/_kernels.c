/*
 * Fused CPU kernels for the batched gradient-descent simulators (docs/benchmarks.md).
 *
 * Why hand-written: one simulator step on B runs is one or two small GEMMs plus an elementwise
 * pass. Driven from Python, every pass costs a dispatch (~3 us) that is as long as the work
 * itself, so the step runs at ~1/3 of the GEMM's speed. Here a chunk of K steps runs without
 * returning to Python, and runs are processed in row blocks that stay in cache for all K steps.
 *
 * Three variants of mf_mult_steps, picked by the caller (mf_variants() says which this CPU
 * runs; mirrorflow.dynamics._native picks the best, MIRRORFLOW_KERNEL overrides):
 *   0 "generic": BLAS GEMMs + a portable elementwise pass;
 *   1 "avx2":    BLAS GEMMs + the elementwise pass compiled for AVX2+FMA;
 *   2 "avx512":  no BLAS: register-tiled AVX-512 GEMMs with the elementwise pass fused into
 *                the epilogue of the second GEMM (the gradient never goes to memory).
 *
 * BLAS: the caller passes the address of a Fortran ``dgemm`` (scipy.linalg.cython_blas, the
 * documented way to reach scipy's BLAS from compiled code), so nothing is linked here and
 * the library builds with a bare C compiler. All arrays are C-contiguous float64; a row-major
 * product C = op(A) op(B) is the column-major product Cᵀ = op(B)ᵀ op(A)ᵀ (rm_gemm).
 *
 * The functions are called through ctypes, which releases the GIL: several threads may run
 * disjoint row ranges at once (the BLAS must then be limited to one thread).
 *
 * The module init below only makes the file importable as ``mirrorflow.dynamics._kernels``.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

#if defined(_MSC_VER)
#define restrict __restrict
#endif

#if defined(_WIN32)
#define MF_EXPORT __declspec(dllexport)
#else
#define MF_EXPORT __attribute__((visibility("default")))
#endif

/* x86-64 with GCC or clang: per-function ISA targets, picked at run time (mf_variants) */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MF_X86 1
#include <immintrin.h>
#define MF_AVX2 __attribute__((target("avx2,fma")))
#define MF_AVX512 __attribute__((target("avx512f,fma")))
#define MF_INLINE static inline __attribute__((always_inline))
#else
#define MF_INLINE static inline
#endif

/* The matrix kernel's axpby is compiled for AVX2 and a portable fallback; the loader
 * picks one at run time (GCC function multiversioning). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* an ISA clone, not "arch=haswell": GCC dispatches arch= clones on the CPU model, so on any
 * other AVX2 CPU (measured: a Sapphire-Rapids-class Xeon) they silently ran the default */
#define MF_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MF_CLONES
#endif

typedef void (*dgemm_t)(const char *, const char *, const int *, const int *, const int *,
                        const double *, const double *, const int *, const double *,
                        const int *, const double *, double *, const int *);

static void rm_gemm(dgemm_t gemm, char ta, char tb, int M, int N, int K, double alpha,
                    const double *A, int lda, const double *B, int ldb, double beta, double *C,
                    int ldc)
{
    gemm(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

/* Version of the exported signatures: the bindings refuse a stale build (another value). */
MF_EXPORT int mf_kernel_abi(void) { return 2; }

/* Bit 0: generic (always), bit 1: AVX2+FMA, bit 2: AVX-512F (CPU and OS support, checked by
 * the compiler's CPU-feature runtime). */
MF_EXPORT int mf_variants(void)
{
    int v = 1;
#ifdef MF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        v |= 2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
        v |= 4;
#endif
    return v;
}

/* p ← p (c − t), q ← q (c + t), x ← p² − q² with t = ge (h + nb); q may be NULL (x = p²),
 * nb may be NULL (0). One body, compiled per ISA below. */
MF_INLINE void mult_rows_body(int nr, int d, const double *c, size_t c_stride,
                              const double *ge, const double *nb0, size_t nb_stride,
                              const double *h, double *p, double *q, double *x)
{
    for (int i = 0; i < nr; ++i) {
        const double ci = c[(size_t)i * c_stride], gi = ge[i];
        const double *restrict hi = h + (size_t)i * d;
        const double *restrict nb = nb0 ? nb0 + (size_t)i * nb_stride : NULL;
        double *restrict pi = p + (size_t)i * d, *restrict xi = x + (size_t)i * d;
        if (q && nb) {
            double *restrict qi = q + (size_t)i * d;
            for (int j = 0; j < d; ++j) {
                const double t = gi * (hi[j] + nb[j]);
                const double pp = pi[j] * (ci - t), qq = qi[j] * (ci + t);
                pi[j] = pp;
                qi[j] = qq;
                xi[j] = pp * pp - qq * qq;
            }
        } else if (q) {
            double *restrict qi = q + (size_t)i * d;
            for (int j = 0; j < d; ++j) {
                const double t = gi * hi[j];
                const double pp = pi[j] * (ci - t), qq = qi[j] * (ci + t);
                pi[j] = pp;
                qi[j] = qq;
                xi[j] = pp * pp - qq * qq;
            }
        } else {
            for (int j = 0; j < d; ++j) {
                const double pp = pi[j] * (ci - gi * (hi[j] + (nb ? nb[j] : 0.0)));
                pi[j] = pp;
                xi[j] = pp * pp;
            }
        }
    }
}

typedef void (*mult_rows_t)(int, int, const double *, size_t, const double *, const double *,
                            size_t, const double *, double *, double *, double *);

static void mult_rows_generic(int nr, int d, const double *c, size_t cs, const double *ge,
                              const double *nb, size_t nbs, const double *h, double *p,
                              double *q, double *x)
{
    mult_rows_body(nr, d, c, cs, ge, nb, nbs, h, p, q, x);
}

#ifdef MF_X86
MF_AVX2 static void mult_rows_avx2(int nr, int d, const double *c, size_t cs, const double *ge,
                                   const double *nb, size_t nbs, const double *h, double *p,
                                   double *q, double *x)
{
    mult_rows_body(nr, d, c, cs, ge, nb, nbs, h, p, q, x);
}
#endif

/* r ← r − y for each of nr rows of length m; row i of y at y + i * ys (ys = 0: shared) */
static void sub_rows(int nr, int m, double *r, const double *y, size_t ys)
{
    for (int i = 0; i < nr; ++i)
        for (int j = 0; j < m; ++j)
            r[(size_t)i * m + j] -= y[(size_t)i * ys + j];
}

#ifdef MF_X86
/* ------------------------------------------------------------------------------------------
 * Variant 2: register-tiled AVX-512 GEMMs with fused epilogues (profile: docs/benchmarks.md).
 *
 * mf_gemm_epi computes X (nr × K) · Bm (K × ncols) in tiles of up to 4 rows × 32 columns
 * (16 zmm accumulators; the row stride of each operand is given), each tile finished by an
 * epilogue while it is still in registers:
 *   kind 0 (residual):       out = κ acc − y                   (r of the low-rank form)
 *   kind 1 (multiplicative): t = ge (acc + nb), p ← p (c − t), q ← q (c + t), xo = p² − q²
 * Column tiles split the row evenly into ≤ 4-vector pieces; the last vector of a row is
 * masked when ncols is not a multiple of 8.
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    int kind;
    double kappa;
    const double *y;  /* kind 0: row i of y at y + i * ys */
    size_t ys;
    double *out;      /* kind 0: r, row stride ldo */
    size_t ldo;
    const double *c;  /* kind 1: shrink factor of row i at c[i * ci] */
    size_t ci;
    const double *ge;
    const double *nb; /* may be NULL; row i at nb + i * nbs */
    size_t nbs;
    double *p, *q, *xo; /* q may be NULL; row stride ld */
    size_t ld;
} mf_epi;

/* What the epilogue needs of one row, read once per row of a tile (not once per vector: after
 * a store to p the compiler must assume c and ge changed, both being double). */
typedef struct {
    __m512d k, c, g;
    const double *y, *nb;
    double *out, *p, *q, *xo;
} mf_rowptr;

MF_INLINE MF_AVX512 mf_rowptr mf_row_of(const mf_epi *e, size_t row)
{
    mf_rowptr r = {0};
    if (e->kind == 0) {
        r.k = _mm512_set1_pd(e->kappa);
        r.y = e->y + row * e->ys;
        r.out = e->out + row * e->ldo;
    } else {
        const size_t o = row * e->ld;
        r.c = _mm512_set1_pd(e->c[row * e->ci]);
        r.g = _mm512_set1_pd(e->ge[row]);
        r.nb = e->nb ? e->nb + row * e->nbs : NULL;
        r.p = e->p + o;
        r.q = e->q ? e->q + o : NULL;
        r.xo = e->xo + o;
    }
    return r;
}

MF_INLINE MF_AVX512 void mf_epi1(const mf_epi *e, const mf_rowptr *r, int col, __mmask8 m,
                                 __m512d acc)
{
    if (e->kind == 0) {
        const __m512d yv = _mm512_maskz_loadu_pd(m, r->y + col);
        _mm512_mask_storeu_pd(r->out + col, m, _mm512_fmsub_pd(r->k, acc, yv));
        return;
    }
    __m512d h = acc;
    if (r->nb)
        h = _mm512_add_pd(h, _mm512_maskz_loadu_pd(m, r->nb + col));
    const __m512d t = _mm512_mul_pd(r->g, h);
    const __m512d pp = _mm512_mul_pd(_mm512_maskz_loadu_pd(m, r->p + col), _mm512_sub_pd(r->c, t));
    _mm512_mask_storeu_pd(r->p + col, m, pp);
    __m512d xv = _mm512_mul_pd(pp, pp);
    if (r->q) {
        const __m512d qq = _mm512_mul_pd(_mm512_maskz_loadu_pd(m, r->q + col), _mm512_add_pd(r->c, t));
        _mm512_mask_storeu_pd(r->q + col, m, qq);
        xv = _mm512_fnmadd_pd(qq, qq, xv);
    }
    _mm512_mask_storeu_pd(r->xo + col, m, xv);
}

/* Named accumulators (not an array) so that the compiler keeps all 16 in registers; MR and NV
 * are compile-time constants in every call (mf_gemm_epi's switch), so dead ones vanish. The
 * operand Bm is zero-padded to whole vectors (its row stride ldb ≥ the columns rounded up to 8),
 * so the loads in the K loop need no mask; only the epilogue masks the last vector. */
#define MF_ROW(i)                                                                   \
    if (MR > i) {                                                                   \
        const __m512d xb = _mm512_set1_pd(xk[(size_t)(i) * ldx]);                   \
        a##i##0 = _mm512_fmadd_pd(xb, b0, a##i##0);                                 \
        if (NV > 1) a##i##1 = _mm512_fmadd_pd(xb, b1, a##i##1);                     \
        if (NV > 2) a##i##2 = _mm512_fmadd_pd(xb, b2, a##i##2);                     \
        if (NV > 3) a##i##3 = _mm512_fmadd_pd(xb, b3, a##i##3);                     \
    }
#define MF_EPI(i, v)                                                                \
    if (NV > v)                                                                     \
        mf_epi1(e, &r, col0 + 8 * v, NV == v + 1 ? last : 0xFF, a##i##v);
#define MF_EPIROW(i)                                                                \
    if (MR > i) {                                                                   \
        const mf_rowptr r = mf_row_of(e, (size_t)(row0 + i));                       \
        MF_EPI(i, 0) MF_EPI(i, 1) MF_EPI(i, 2) MF_EPI(i, 3)                         \
    }
#define MF_DECL(i) __m512d a##i##0 = z, a##i##1 = z, a##i##2 = z, a##i##3 = z;

MF_INLINE MF_AVX512 void mf_tile(const int MR, const int NV, int K, const double *X, size_t ldx,
                                 const double *Bm, size_t ldb, int col0, __mmask8 last,
                                 int row0, const mf_epi *e)
{
    const __m512d z = _mm512_setzero_pd();
    MF_DECL(0) MF_DECL(1) MF_DECL(2) MF_DECL(3)
    const double *bk = Bm + col0, *xk = X;
    for (int k = 0; k < K; ++k, bk += ldb, ++xk) {
        const __m512d b0 = _mm512_loadu_pd(bk);
        const __m512d b1 = NV < 2 ? z : _mm512_loadu_pd(bk + 8);
        const __m512d b2 = NV < 3 ? z : _mm512_loadu_pd(bk + 16);
        const __m512d b3 = NV < 4 ? z : _mm512_loadu_pd(bk + 24);
        MF_ROW(0) MF_ROW(1) MF_ROW(2) MF_ROW(3)
    }
    MF_EPIROW(0) MF_EPIROW(1) MF_EPIROW(2) MF_EPIROW(3)
}

#define MF_CASE(mr, nv)                                                             \
    case (mr) * 8 + (nv):                                                           \
        mf_tile(mr, nv, K, X + (size_t)i0 * ldx, ldx, Bm, ldb, col0, last, i0, e);  \
        break;
#define MF_CASES(mr) MF_CASE(mr, 1) MF_CASE(mr, 2) MF_CASE(mr, 3) MF_CASE(mr, 4)

MF_AVX512 static void mf_gemm_epi(int nr, int ncols, int K, const double *X, size_t ldx,
                                  const double *Bm, size_t ldb, const mf_epi *e)
{
    const int nvec = (ncols + 7) / 8, ntiles = (nvec + 3) / 4;
    const __mmask8 tail = (ncols & 7) ? (__mmask8)((1u << (ncols & 7)) - 1) : (__mmask8)0xFF;
    for (int t = 0, v0 = 0; t < ntiles; ++t) {
        const int nv = (nvec - v0 + (ntiles - t) - 1) / (ntiles - t);
        const int col0 = 8 * v0;
        const __mmask8 last = v0 + nv == nvec ? tail : (__mmask8)0xFF;
        for (int i0 = 0; i0 < nr; i0 += 4) {
            const int mr = nr - i0 < 4 ? nr - i0 : 4;
            switch (mr * 8 + nv) {
                MF_CASES(1) MF_CASES(2) MF_CASES(3) MF_CASES(4)
            }
        }
        v0 += nv;
    }
}

/* K steps on one block of nr rows, all fused (arguments as mf_mult_steps, offset to the
 * block). Low-rank form: r = κ x Aᵀ − y with At = Aᵀ (d × n), then h = r A fused with the
 * update (x overwritten in place: this step's r is complete). G form: h = x G fused with the
 * update, which writes the new x into x2 (the old x is still being read), then x ↔ x2.
 * G and A have row stride lda, At has ldat (both zero-padded to whole vectors). */
MF_AVX512 static void mf_block_avx512(int nr, int d, int K, const double *G, const double *A,
                                      size_t lda, const double *At, size_t ldat, int n,
                                      const double *y, size_t ys,
                                      double kappa, double *R, const double *nb, size_t nbs,
                                      const double *c, size_t ck, size_t ci, const double *ge,
                                      double *P, double *Q, double *X, double *X2)
{
    for (size_t j = 0; j < (size_t)nr * d; ++j)
        X[j] = Q ? P[j] * P[j] - Q[j] * Q[j] : P[j] * P[j];
    mf_epi res = {0};
    res.kappa = kappa;
    res.y = y;
    res.ys = ys;
    res.out = R;
    res.ldo = (size_t)n;
    mf_epi mul = {1};
    mul.ci = ci;
    mul.ge = ge;
    mul.nb = nb;
    mul.nbs = nbs;
    mul.p = P;
    mul.q = Q;
    mul.xo = X;
    mul.ld = (size_t)d;
    for (int k = 0; k < K; ++k) {
        mul.c = c + (size_t)k * ck;
        if (A) {
            mf_gemm_epi(nr, n, d, X, (size_t)d, At, ldat, &res);
            mf_gemm_epi(nr, d, n, R, (size_t)n, A, lda, &mul);
        } else {
            mul.xo = X2;
            mf_gemm_epi(nr, d, d, X, (size_t)d, G, lda, &mul);
            double *tmp = X;
            X = X2;
            X2 = tmp;
        }
    }
}
#endif

/*
 * K multiplicative steps (src/mirrorflow/dynamics/simulate.py) on runs [0, B) of p, q (B × d):
 *   h = ∇f(κ x̂),  t = ge (h + nb),  p ← p (c − t),  q ← q (c + t),  x̂ = p² − q²
 * Gradient, two forms (the caller picks the one with fewer flops):
 *   G form   (A == NULL): h = x̂ G with G = κ AᵀA (d × d, symmetric), nb = −Aᵀy;
 *   low-rank (A != NULL): r = κ x̂ Aᵀ − y (n per run), h = r A, nb = NULL (0);
 *                         4nd instead of 2d² flops; At = Aᵀ (d × n, variant 2 only).
 * G and A have row stride lda, At has ldat. Variant 2 needs them zero-padded to whole vectors
 * (lda ≥ d and ldat ≥ n rounded up to 8, the padding 0); variants 0 and 1 take any lda ≥ d.
 * nb row i at nb + i * nbs, y row i at y + i * ys (stride 0: shared by the runs); ge = γη per run.
 * Shrink factor of run i at step k is c[k * ck + i * ci] (ck = 0: constant over the chunk).
 * x, h: (B × d) and r: (B × n) workspace. Runs go ``block`` rows at a time, all K steps per block.
 * variant: 0 generic, 1 avx2, 2 avx512 (see the top of the file; must be in mf_variants()).
 */
MF_EXPORT void mf_mult_steps(int variant, void *gemm_ptr, int B, int d, int K, int block,
                             const double *G, const double *A, long lda, const double *At,
                             long ldat, int n,
                             const double *y, long ys, double kappa, double *r, const double *nb,
                             long nbs, const double *c, long ck, long ci, const double *ge,
                             double *p, double *q, double *x, double *h)
{
    dgemm_t gemm = (dgemm_t)gemm_ptr;
    mult_rows_t mult_rows = mult_rows_generic;
#ifdef MF_X86
    if (variant == 1)
        mult_rows = mult_rows_avx2;
#endif
    for (int r0 = 0; r0 < B; r0 += block) {
        const int nr = B - r0 < block ? B - r0 : block;
        const size_t off = (size_t)r0 * d, len = (size_t)nr * d;
        double *P = p + off, *Q = q ? q + off : NULL, *X = x + off, *H = h + off;
        double *Rr = r ? r + (size_t)r0 * n : NULL;
        const double *Y = y ? y + (size_t)r0 * ys : NULL, *NB = nb ? nb + (size_t)r0 * nbs : NULL;
        const double *C = c + (size_t)r0 * ci;
#ifdef MF_X86
        if (variant == 2) {
            mf_block_avx512(nr, d, K, G, A, (size_t)lda, At, (size_t)ldat, n, Y, (size_t)ys,
                            kappa, Rr, NB, (size_t)nbs, C, (size_t)ck, (size_t)ci, ge + r0, P, Q,
                            X, H);
            continue;
        }
#endif
        for (size_t j = 0; j < len; ++j)
            X[j] = Q ? P[j] * P[j] - Q[j] * Q[j] : P[j] * P[j];
        for (int k = 0; k < K; ++k) {
            if (A) {
                rm_gemm(gemm, 'N', 'T', nr, n, d, kappa, X, d, A, (int)lda, 0.0, Rr, n);
                sub_rows(nr, n, Rr, Y, (size_t)ys);
                rm_gemm(gemm, 'N', 'N', nr, d, n, 1.0, Rr, n, A, (int)lda, 0.0, H, d);
            } else {
                rm_gemm(gemm, 'N', 'N', nr, d, d, 1.0, X, d, G, (int)lda, 0.0, H, d);
            }
            mult_rows(nr, d, C + (size_t)k * ck, (size_t)ci, ge + r0, NB, (size_t)nbs, H, P, Q, X);
        }
    }
}

/* y ← s y − e z (n entries) */
MF_CLONES static void axpby(size_t n, double s, double *y, double e, const double *z)
{
    for (size_t j = 0; j < n; ++j)
        y[j] = s * y[j] - e * z[j];
}


/*
 * K steps of matrix sensing (src/mirrorflow/dynamics/matrix.py) on runs [r0, r0 + B):
 *   X = U Vᵀ,  r = A(X) − y,  G = Σ r_i A_i,
 *   U ← c U − η G V,  V ← c V − η Gᵀ U          (V == U: U ← c U − η (G + Gᵀ) U)
 * Af: (P, m, d²) sensing matrices, y: (P, m); run b (global index) uses problem b / R.
 * U, V: (B, d, k), pointers to run r0. c[k * ck + i * ci] as in mf_mult_steps, i local.
 * work: block (2 d² + m) + 2 d k doubles.
 */
MF_EXPORT void mf_matrix_steps(void *gemm_ptr, int B, int r0, int R, int d, int k, int m,
                               int K, int block, const double *Af, const double *y, double eta,
                               const double *c, long ck, long ci, double *U, double *V,
                               double *work)
{
    dgemm_t gemm = (dgemm_t)gemm_ptr;
    const int dd = d * d;
    const size_t fk = (size_t)d * k;
    const int sym = (U == V);
    double *Xb = work, *Gb = Xb + (size_t)block * dd, *Rb = Gb + (size_t)block * dd;
    double *T1 = Rb + (size_t)block * m, *T2 = T1 + fk;
    int i0 = 0;
    while (i0 < B) {
        const int prob = (r0 + i0) / R;
        int nr = B - i0 < block ? B - i0 : block;
        const int left = (prob + 1) * R - (r0 + i0); /* runs left in this problem */
        if (nr > left)
            nr = left;
        const double *A = Af + (size_t)prob * m * dd, *yp = y + (size_t)prob * m;
        for (int s = 0; s < K; ++s) {
            for (int i = 0; i < nr; ++i) {
                const double *Ui = U + (i0 + i) * fk, *Vi = V + (i0 + i) * fk;
                rm_gemm(gemm, 'N', 'T', d, d, k, 1.0, Ui, k, Vi, k, 0.0, Xb + (size_t)i * dd, d);
            }
            rm_gemm(gemm, 'N', 'T', nr, m, dd, 1.0, Xb, dd, A, dd, 0.0, Rb, m);
            sub_rows(nr, m, Rb, yp, 0);
            rm_gemm(gemm, 'N', 'N', nr, dd, m, 1.0, Rb, m, A, dd, 0.0, Gb, dd);
            for (int i = 0; i < nr; ++i) {
                const double *Gi = Gb + (size_t)i * dd;
                double *Ui = U + (i0 + i) * fk, *Vi = V + (i0 + i) * fk;
                const double cs = c[(size_t)s * ck + (size_t)(i0 + i) * ci];
                if (sym) {
                    rm_gemm(gemm, 'N', 'N', d, k, d, 1.0, Gi, d, Ui, k, 0.0, T1, k);
                    rm_gemm(gemm, 'T', 'N', d, k, d, 1.0, Gi, d, Ui, k, 1.0, T1, k);
                    axpby(fk, cs, Ui, eta, T1);
                } else {
                    rm_gemm(gemm, 'N', 'N', d, k, d, 1.0, Gi, d, Vi, k, 0.0, T1, k);
                    rm_gemm(gemm, 'T', 'N', d, k, d, 1.0, Gi, d, Ui, k, 0.0, T2, k);
                    axpby(fk, cs, Ui, eta, T1);
                    axpby(fk, cs, Vi, eta, T2);
                }
            }
        }
        i0 += nr;
    }
}

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Fused simulator kernels, called through ctypes (mirrorflow.dynamics._native).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&kernels_module); }
