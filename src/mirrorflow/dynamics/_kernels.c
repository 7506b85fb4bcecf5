/*
 * Fused CPU kernels for the batched gradient-descent simulators (docs/benchmarks.md).
 *
 * Why hand-written: one simulator step on B runs is one small GEMM plus a few elementwise
 * passes. Driven from Python, every pass costs a dispatch (~3 us) that is as long as the work
 * itself, so the step runs at ~1/3 of the GEMM's speed. Here a chunk of K steps runs without
 * returning to Python; the elementwise work is one pass fused behind each GEMM, and runs are
 * processed in row blocks that stay in cache for all K steps.
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

#if defined(_WIN32)
#define MF_EXPORT __declspec(dllexport)
#else
#define MF_EXPORT __attribute__((visibility("default")))
#endif

/* Compile the elementwise passes for AVX2+FMA and a portable fallback; the loader picks one
 * at run time (GCC function multiversioning), so the build stays portable. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MF_CLONES __attribute__((target_clones("arch=haswell", "default")))
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

/* p ← p (c − t), q ← q (c + t), x ← p² − q² with t = ge (h + nb); q may be NULL (x = p²). */
MF_CLONES static void mult_rows(int nr, int d, const double *c, size_t c_stride,
                                const double *ge, const double *nb0, size_t nb_stride,
                                const double *h, double *p, double *q, double *x)
{
    for (int i = 0; i < nr; ++i) {
        const double ci = c[(size_t)i * c_stride], gi = ge[i];
        const double *hi = h + (size_t)i * d, *nb = nb0 + (size_t)i * nb_stride;
        double *pi = p + (size_t)i * d, *xi = x + (size_t)i * d;
        if (q) {
            double *qi = q + (size_t)i * d;
            for (int j = 0; j < d; ++j) {
                const double t = gi * (hi[j] + nb[j]);
                const double pp = pi[j] * (ci - t), qq = qi[j] * (ci + t);
                pi[j] = pp;
                qi[j] = qq;
                xi[j] = pp * pp - qq * qq;
            }
        } else {
            for (int j = 0; j < d; ++j) {
                const double pp = pi[j] * (ci - gi * (hi[j] + nb[j]));
                pi[j] = pp;
                xi[j] = pp * pp;
            }
        }
    }
}

/* r ← r − y for each of nr rows of length m; row i of y at y + i * ys (ys = 0: shared) */
static void sub_rows(int nr, int m, double *r, const double *y, size_t ys)
{
    for (int i = 0; i < nr; ++i)
        for (int j = 0; j < m; ++j)
            r[(size_t)i * m + j] -= y[(size_t)i * ys + j];
}

/*
 * K multiplicative steps (src/mirrorflow/dynamics/simulate.py) on runs [0, B) of p, q (B × d):
 *   h = ∇f(κ x̂),  t = ge (h + nb),  p ← p (c − t),  q ← q (c + t),  x̂ = p² − q²
 * Gradient, two forms (the caller picks the one with fewer flops):
 *   G form   (A == NULL): h = x̂ G with G = κ AᵀA (d × d, symmetric), nb = −Aᵀy;
 *   low-rank (A != NULL): r = κ x̂ Aᵀ − y (n per run), h = r A, nb = 0;  4nd instead of 2d² flops.
 * nb row i at nb + i * nbs, y row i at y + i * ys (stride 0: shared by the runs); ge = γη per run.
 * Shrink factor of run i at step k is c[k * ck + i * ci] (ck = 0: constant over the chunk).
 * x, h: (B × d) and r: (B × n) workspace. Runs go ``block`` rows at a time, all K steps per block.
 */
MF_EXPORT void mf_mult_steps(void *gemm_ptr, int B, int d, int K, int block, const double *G,
                             const double *A, int n, const double *y, long ys, double kappa,
                             double *r, const double *nb, long nbs, const double *c, long ck,
                             long ci, const double *ge, double *p, double *q, double *x, double *h)
{
    dgemm_t gemm = (dgemm_t)gemm_ptr;
    for (int r0 = 0; r0 < B; r0 += block) {
        const int nr = B - r0 < block ? B - r0 : block;
        const size_t off = (size_t)r0 * d, len = (size_t)nr * d;
        double *P = p + off, *Q = q ? q + off : NULL, *X = x + off, *H = h + off;
        for (size_t j = 0; j < len; ++j)
            X[j] = Q ? P[j] * P[j] - Q[j] * Q[j] : P[j] * P[j];
        for (int k = 0; k < K; ++k) {
            if (A) {
                double *Rr = r + (size_t)r0 * n;
                rm_gemm(gemm, 'N', 'T', nr, n, d, kappa, X, d, A, d, 0.0, Rr, n);
                sub_rows(nr, n, Rr, y + (size_t)r0 * ys, (size_t)ys);
                rm_gemm(gemm, 'N', 'N', nr, d, n, 1.0, Rr, n, A, d, 0.0, H, d);
            } else {
                rm_gemm(gemm, 'N', 'N', nr, d, d, 1.0, X, d, G, d, 0.0, H, d);
            }
            mult_rows(nr, d, c + (size_t)k * ck + (size_t)r0 * ci, (size_t)ci, ge + r0,
                      nb + (size_t)r0 * nbs, (size_t)nbs, H, P, Q, X);
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
