/* Optional C kernels of a statistics pass (explorer/core/stats_kernels.py): plain C, no Python API, loaded with
 * ctypes (which releases the GIL for the call). The numpy code in stats_kernels.py is the reference and the
 * fallback; these loops give the same figures bit for bit:
 *
 *   - sums are numpy's pairwise summation of float64 values (numpy/_core/src/umath/loops_utils.h.src,
 *     pairwise_sum: blocks of at most 128 values in 8 accumulators, halves otherwise, rounded to multiples of 8),
 *     which is what np.add.reduce does over a contiguous float64 array;
 *   - a slice's mean is its pairwise float64 sum / count, its M2 the pairwise sum of ((double)x - mean)^2;
 *   - histogram bins use torch.histc's arithmetic in the values' dtype: bin = trunc((x - lo) * bins / (hi - lo)),
 *     the top edge in the last bin.
 *
 * Built with -O3 -fno-fast-math -ffp-contract=off (setup.py): vectorised, but no reassociation and no fused
 * multiply-adds (-O3 changes no IEEE result; only fast-math or contraction would).
 * Element kinds: 0 float32, 1 float64, 2 bfloat16 (uint16 bits, widened to float32 by a 16-bit shift: exact).
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <unistd.h>
#define CK_HAVE_PREAD 1
#endif

/* Hot loops are also compiled for AVX2 and picked at load time where the CPU has it (GCC/Clang on x86-64 with
 * ifunc support): wider vectors, the same IEEE operations in the same order (AVX2 brings no FMA; contraction is
 * off anyway), so the same figures. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(CK_NO_CLONES)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

#define PW_BLOCKSIZE 128
#define HB 512 /* values binned per block: their bins computed first (vectorisable), then counted */

int ck_version(void) { return 3; }

static inline float ld_f32(const void *p, int64_t i) { return ((const float *)p)[i]; }
static inline double ld_f64(const void *p, int64_t i) { return ((const double *)p)[i]; }
static inline float ld_bf16(const void *p, int64_t i) {
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* pairwise sums: SUM of (double)LD(a, i), SQ of ((double)LD(a, i) - m)^2, in numpy's order */
#define PAIRWISE(NAME, LD, TERM)                                                                     \
    HOT static double NAME(const void *a, int64_t off, int64_t n, double m) {                            \
        (void)m;                                                                                     \
        if (n < 8) {                                                                                 \
            double res = 0.;                                                                         \
            for (int64_t i = 0; i < n; i++) { double v = (double)LD(a, off + i); res += TERM; }      \
            return res;                                                                              \
        } else if (n <= PW_BLOCKSIZE) {                                                              \
            double r[8], res;                                                                        \
            int64_t i;                                                                               \
            for (int j = 0; j < 8; j++) { double v = (double)LD(a, off + j); r[j] = TERM; }          \
            for (i = 8; i < n - (n % 8); i += 8) {                                                   \
                for (int j = 0; j < 8; j++) { double v = (double)LD(a, off + i + j); r[j] += TERM; } \
            }                                                                                        \
            res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));                 \
            for (; i < n; i++) { double v = (double)LD(a, off + i); res += TERM; }                   \
            return res;                                                                              \
        } else {                                                                                     \
            int64_t n2 = n / 2;                                                                      \
            n2 -= n2 % 8;                                                                            \
            return NAME(a, off, n2, m) + NAME(a, off + n2, n - n2, m);                               \
        }                                                                                            \
    }

#define T_SUM (v)
#define T_SQ ((v - m) * (v - m))
PAIRWISE(sum_f32, ld_f32, T_SUM)
PAIRWISE(sum_f64, ld_f64, T_SUM)
PAIRWISE(sum_bf16, ld_bf16, T_SUM)
PAIRWISE(sq_f32, ld_f32, T_SQ)
PAIRWISE(sq_f64, ld_f64, T_SQ)
PAIRWISE(sq_bf16, ld_bf16, T_SQ)

/* exported for the tests: numpy's pairwise sum of n float64 values */
double ck_pairwise_f64(const double *a, int64_t n) { return n ? sum_f64(a, 0, n, 0.) : 0.; }

static inline int nonfinite32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u & 0x7fffffffu) >= 0x7f800000u;
}
static inline int nonfinite64(double x) {
    uint64_t u;
    memcpy(&u, &x, 8);
    return (u & 0x7fffffffffffffffull) >= 0x7ff0000000000000ull;
}
static inline int isnan32(float x) { return x != x; }

/* ------------------------------------------------------------------------------------------ pass 1: range
 * out[0] finite min, out[1] finite max (min > max when nothing is finite); cnt[0] NaN, cnt[1] Inf. Values are
 * exact, so the order is free; a zero min or max is returned as +0 (the numpy path does the same). */
#define RL 32 /* lanes: independent min/max chains (four AVX2 vectors of float32), so the loop is not latency bound */
#define RANGE(NAME, T, LD, NONFIN)                                                                  \
    HOT static void NAME(const void *a, int64_t n, double *out, int64_t *cnt) {                        \
        T mn[RL], mx[RL];                                                                          \
        int64_t bad = 0, i = 0;                                                                    \
        for (int j = 0; j < RL; j++) { mn[j] = (T)1 / (T)0; mx[j] = -(T)1 / (T)0; }                \
        for (; i + RL <= n; i += RL) {                                                             \
            int32_t b = 0;                                                                         \
            for (int j = 0; j < RL; j++) {                                                         \
                T x = LD(a, i + j);                                                                \
                mn[j] = x < mn[j] ? x : mn[j];                                                     \
                mx[j] = x > mx[j] ? x : mx[j];                                                     \
                b |= NONFIN(x);                                                                    \
            }                                                                                      \
            bad |= b;                                                                              \
        }                                                                                          \
        for (; i < n; i++) {                                                                       \
            T x = LD(a, i);                                                                        \
            mn[0] = x < mn[0] ? x : mn[0];                                                         \
            mx[0] = x > mx[0] ? x : mx[0];                                                         \
            bad |= NONFIN(x);                                                                      \
        }                                                                                          \
        int64_t nan = 0, inf = 0;                                                                  \
        if (bad) { /* rare: NaN/Inf here; counted, and the range again over finite values only */  \
            for (int j = 0; j < RL; j++) { mn[j] = (T)1 / (T)0; mx[j] = -(T)1 / (T)0; }            \
            for (i = 0; i < n; i++) {                                                              \
                T x = LD(a, i);                                                                    \
                if (NONFIN(x)) { if (x != x) nan++; else inf++; continue; }                        \
                mn[0] = x < mn[0] ? x : mn[0];                                                     \
                mx[0] = x > mx[0] ? x : mx[0];                                                     \
            }                                                                                      \
        }                                                                                          \
        T lo = mn[0], hi = mx[0];                                                                  \
        for (int j = 1; j < RL; j++) { lo = mn[j] < lo ? mn[j] : lo; hi = mx[j] > hi ? mx[j] : hi; } \
        out[0] = (double)lo + 0.0;                                                                 \
        out[1] = (double)hi + 0.0;                                                                 \
        cnt[0] = nan;                                                                              \
        cnt[1] = inf;                                                                              \
    }

RANGE(range_f32, float, ld_f32, nonfinite32)
RANGE(range_f64, double, ld_f64, nonfinite64)
RANGE(range_bf16, float, ld_bf16, nonfinite32)

int ck_range(int kind, const void *a, int64_t n, double *out, int64_t *cnt) {
    switch (kind) {
    case 0: range_f32(a, n, out, cnt); return 0;
    case 1: range_f64(a, n, out, cnt); return 0;
    case 2: range_bf16(a, n, out, cnt); return 0;
    }
    return -1;
}

/* ------------------------------------------------------------------------------------------ histogram
 * The bins of len values from a[off]: computed HB at a time into an array (a loop the compiler vectorises), then
 * counted into four uint32 sub-histograms h (stride hs = bins + 1, so repeated bins do not wait on each other),
 * which are added to counts (int64) and cleared. Returns the nonzero values (not +-0), or -1 when a bin falls
 * outside [0, bins] (a value outside [lo, hi]). */
#define BINS(NAME, T, LD, ISZERO)                                                                                \
    HOT static int64_t NAME(const void *a, int64_t off, int64_t len, T lo, T fb, T width, uint32_t *h, int64_t hs,  \
                        int64_t *counts) {                                                                       \
        int64_t nz = 0;                                                                                          \
        int32_t bad = 0;                                                                                         \
        const T top = fb + 1;                                                                                    \
        for (int64_t b = 0; b < len; b += HB) {                                                                  \
            int64_t e = len - b < HB ? len - b : HB;                                                             \
            T tf[HB];                                                                                            \
            int32_t idx[HB];                                                                                     \
            int32_t nzb = 0;                                                                                     \
            for (int32_t i = 0; i < (int32_t)e; i++) {                                                           \
                T x = LD(a, off + b + i);                                                                        \
                nzb += !ISZERO(x);                                                                               \
                tf[i] = (x - lo) * fb / width;                                                                   \
            }                                                                                                    \
            nz += nzb;                                                                                           \
            for (int64_t i = 0; i < e; i++) {                                                                    \
                T t = tf[i];                                                                                     \
                int32_t ok = t >= 0 && t < top;                                                                  \
                bad |= !ok;                                                                                      \
                idx[i] = ok ? (int32_t)t : 0;                                                                    \
            }                                                                                                    \
            if (bad) return -1;                                                                                  \
            int64_t i = 0;                                                                                       \
            for (; i + 4 <= e; i += 4) {                                                                         \
                h[idx[i]]++;                                                                                     \
                h[hs + idx[i + 1]]++;                                                                            \
                h[2 * hs + idx[i + 2]]++;                                                                        \
                h[3 * hs + idx[i + 3]]++;                                                                        \
            }                                                                                                    \
            for (; i < e; i++) h[idx[i]]++;                                                                      \
        }                                                                                                        \
        for (int64_t j = 0; j < hs; j++) {                                                                       \
            counts[j] += (int64_t)h[j] + h[hs + j] + h[2 * hs + j] + h[3 * hs + j];                              \
            h[j] = h[hs + j] = h[2 * hs + j] = h[3 * hs + j] = 0;                                                \
        }                                                                                                        \
        return nz;                                                                                               \
    }

static inline int iszero32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u << 1) == 0;
}
static inline int iszero64(double x) {
    uint64_t u;
    memcpy(&u, &x, 8);
    return (u << 1) == 0;
}

BINS(BINS_moments_f32, float, ld_f32, iszero32)
BINS(BINS_moments_f64, double, ld_f64, iszero64)
BINS(bins_bf16, float, ld_bf16, iszero32)

/* ------------------------------------------------------------------------------------------ pass 2: moments
 * For each slice of `slice` elements of a (the last one shorter): its finite values (all of them unless
 * `nonfinite`, else compacted into `scratch`, room for `slice` values of the kind), their count k[s], mean[s]
 * (pairwise sum / k), m2[s] (pairwise sum of squared deviations) and nonzero[s] (values that are not +-0); the
 * histogram of `bins` bins over [lo, hi] added to counts (bins + 1 entries: the last one holds x == hi, which the
 * caller adds to the last bin; a value outside [lo, hi] returns -2: the data changed since pass 1). float32 and bf16 bin in float32 with width float32(hi) - float32(lo), float64 in
 * float64. Returns the number of slices, -1 for an unknown kind. */
#define MOMENTS(NAME, T, LD, NONFIN, SUM, SQ, ISZERO)                                                         \
    static int64_t NAME(const void *a0, int64_t n, int64_t slice, int nonfinite, void *scratch, T lo, T hi,   \
                        int64_t bins, int64_t *counts, int64_t *k, double *mean, double *m2, int64_t *nonzero,   \
                        uint32_t *h) { \
        const T width = hi - lo;                                                                              \
        const int64_t hs = bins + 1;                                                                          \
        const T fb = (T)bins;                                                                                 \
        int64_t s = 0;                                                                                        \
        for (int64_t start = 0; start < n; start += slice, s++) {                                             \
            int64_t len = n - start < slice ? n - start : slice;                                              \
            const void *a;                                                                                    \
            int64_t off = start;                                                                              \
            if (nonfinite) {                                                                                  \
                T *c = (T *)scratch;                                                                          \
                int64_t w = 0;                                                                                \
                for (int64_t i = 0; i < len; i++) {                                                           \
                    T x = LD(a0, start + i);                                                                  \
                    if (!NONFIN(x)) c[w++] = x;                                                               \
                }                                                                                             \
                len = w;                                                                                      \
                a = scratch;                                                                                  \
                off = 0;                                                                                      \
            } else {                                                                                          \
                a = a0;                                                                                       \
            }                                                                                                 \
            k[s] = len;                                                                                       \
            if (!len) { mean[s] = 0.; m2[s] = 0.; nonzero[s] = 0; continue; }                                 \
            double m = SUM(a, off, len, 0.) / (double)len;                                                    \
            mean[s] = m;                                                                                      \
            m2[s] = SQ(a, off, len, m);                                                                       \
            int64_t nz = BINS_##NAME(a, off, len, lo, fb, width, h, hs, counts);                      \
            if (nz < 0) return -2;                                                                            \
            nonzero[s] = nz;                                                                                  \
        }                                                                                                     \
        return s;                                                                                             \
    }

MOMENTS(moments_f32, float, ld_f32, nonfinite32, sum_f32, sq_f32, iszero32)
MOMENTS(moments_f64, double, ld_f64, nonfinite64, sum_f64, sq_f64, iszero64)

/* bf16: compacted values are stored widened (float32), so the compacted slice is read as float32 */
static int64_t moments_bf16(const void *a0, int64_t n, int64_t slice, int nonfinite, void *scratch, float lo, float hi,
                            int64_t bins, int64_t *counts, int64_t *k, double *mean, double *m2, int64_t *nonzero,
                            uint32_t *h) {
    const int64_t hs = bins + 1;
    if (!nonfinite) {
        const float width = hi - lo;
        const float fb = (float)bins;
        int64_t s = 0;
        for (int64_t start = 0; start < n; start += slice, s++) {
            int64_t len = n - start < slice ? n - start : slice;
            double m = sum_bf16(a0, start, len, 0.) / (double)len;
            mean[s] = m;
            k[s] = len;
            m2[s] = sq_bf16(a0, start, len, m);
            int64_t nz = bins_bf16(a0, start, len, lo, fb, width, h, hs, counts);
            if (nz < 0) return -2;
            nonzero[s] = nz;
        }
        return s;
    }
    /* widen each slice into scratch, then as float32 */
    int64_t s = 0;
    float *w = (float *)scratch;
    for (int64_t start = 0; start < n; start += slice) {
        int64_t len = n - start < slice ? n - start : slice;
        for (int64_t i = 0; i < len; i++) w[i] = ld_bf16(a0, start + i);
        /* scratch holds `slice` float32 values; moments_f32 compacts in place (reads ahead of writes) */
        int64_t r = moments_f32(w, len, slice, 1, w, lo, hi, bins, counts, k + s, mean + s, m2 + s, nonzero + s, h);
        if (r < 0) return r;
        s += r;
    }
    return s;
}

static int64_t moments_kind(int kind, const void *a, int64_t n, int64_t slice, int nonfinite, void *scratch, double lo,
                            double hi, int64_t bins, int64_t *counts, int64_t *k, double *mean, double *m2,
                            int64_t *nonzero, uint32_t *h) {
    switch (kind) {
    case 0: return moments_f32(a, n, slice, nonfinite, scratch, (float)lo, (float)hi, bins, counts, k, mean, m2, nonzero, h);
    case 1: return moments_f64(a, n, slice, nonfinite, scratch, lo, hi, bins, counts, k, mean, m2, nonzero, h);
    case 2: return moments_bf16(a, n, slice, nonfinite, scratch, (float)lo, (float)hi, bins, counts, k, mean, m2, nonzero, h);
    }
    return -1;
}

int64_t ck_moments(int kind, const void *a, int64_t n, int64_t slice, int nonfinite, void *scratch, double lo,
                   double hi, int64_t bins, int64_t *counts, int64_t *k, double *mean, double *m2, int64_t *nonzero) {
    if (slice <= 0 || bins < 1 || bins > (1 << 30) || kind < 0 || kind > 2) return -1;
    uint32_t *h = (uint32_t *)calloc((size_t)(4 * (bins + 1)), sizeof(uint32_t));
    if (!h) return -3;
    int64_t r = moments_kind(kind, a, n, slice, nonfinite, scratch, lo, hi, bins, counts, k, mean, m2, nonzero, h);
    free(h);
    return r;
}

/* ------------------------------------------------------------------------------------------ passes over a file
 * The two passes over elements [0, n) of a tensor whose data start at byte `pos` of the regular file `fd`, read with
 * pread in pieces of `piece` elements into `buf` (room for one piece), the pieces restarting at every `chunk`
 * elements: the same pieces, so the same slices and the same figures, as the Python loop over
 * TensorReader.iter_range that reads them one by one, without a return to Python (and the GIL) per piece.
 * Returns 0 (ck_moments_fd: the number of slices), -4 on a read error (errno in *err), -5 when the file ends early:
 * the caller checks the file and says which. */
static int64_t read_all(int fd, void *buf, int64_t nbytes, int64_t pos, int64_t *err) {
#ifdef CK_HAVE_PREAD
    char *p = (char *)buf;
    int64_t got = 0;
    while (got < nbytes) {
        ssize_t r = pread(fd, p + got, (size_t)(nbytes - got), (off_t)(pos + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            *err = errno;
            return -4;
        }
        if (r == 0) return -5;
        got += r;
    }
    return 0;
#else
    (void)fd; (void)buf; (void)nbytes; (void)pos;
    *err = 0;
    return -4;
#endif
}

static int64_t item_size(int kind) { return kind == 0 ? 4 : kind == 1 ? 8 : kind == 2 ? 2 : 0; }

int64_t ck_range_fd(int kind, int fd, int64_t pos, int64_t n, int64_t chunk, int64_t piece, void *buf, double *out,
                    int64_t *cnt, int64_t *err) {
    const int64_t isz = item_size(kind);
    if (!isz || chunk <= 0 || piece <= 0 || n < 0) return -1;
    double lo = 1.0 / 0.0, hi = -1.0 / 0.0;
    int64_t nan = 0, inf = 0;
    for (int64_t cs = 0; cs < n; cs += chunk) {
        int64_t ce = n - cs < chunk ? n : cs + chunk;
        for (int64_t s = cs; s < ce; s += piece) {
            int64_t len = ce - s < piece ? ce - s : piece;
            int64_t r = read_all(fd, buf, len * isz, pos + s * isz, err);
            if (r) return r;
            double o[2];
            int64_t c[2];
            ck_range(kind, buf, len, o, c);
            lo = o[0] < lo ? o[0] : lo;
            hi = o[1] > hi ? o[1] : hi;
            nan += c[0];
            inf += c[1];
        }
    }
    out[0] = lo;
    out[1] = hi;
    cnt[0] = nan;
    cnt[1] = inf;
    return 0;
}

int64_t ck_moments_fd(int kind, int fd, int64_t pos, int64_t n, int64_t chunk, int64_t piece, void *buf,
                      int64_t slice, int nonfinite, void *scratch, double lo, double hi, int64_t bins, int64_t *counts,
                      int64_t *k, double *mean, double *m2, int64_t *nonzero, int64_t *err) {
    const int64_t isz = item_size(kind);
    if (!isz || chunk <= 0 || piece <= 0 || n < 0 || slice <= 0 || bins < 1 || bins > (1 << 30)) return -1;
    uint32_t *h = (uint32_t *)calloc((size_t)(4 * (bins + 1)), sizeof(uint32_t));
    if (!h) return -3;
    int64_t ns = 0;
    for (int64_t cs = 0; cs < n; cs += chunk) {
        int64_t ce = n - cs < chunk ? n : cs + chunk;
        for (int64_t s = cs; s < ce; s += piece) {
            int64_t len = ce - s < piece ? ce - s : piece;
            int64_t r = read_all(fd, buf, len * isz, pos + s * isz, err);
            if (!r)
                r = moments_kind(kind, buf, len, slice, nonfinite, scratch, lo, hi, bins, counts, k + ns, mean + ns,
                                 m2 + ns, nonzero + ns, h);
            if (r < 0) {
                free(h);
                return r;
            }
            ns += r;
        }
    }
    free(h);
    return ns;
}

/* ------------------------------------------------------------------------------------------ value counts
 * How often each bit pattern of `width` bytes (2: 65536 patterns, 1: 256) occurs among elements [0, n) at byte
 * `pos` of `fd`, read in pieces of `piece` elements into `buf`: the one pass of a 16/8-bit float tensor (every
 * figure follows from the counts). Written sparse: keys[i] the i-th pattern present (ascending), vals[i] its count;
 * returns how many (or -4 / -5 as the passes above). `dense`: int64 scratch, one per pattern; `subs`: 4 × 65536
 * uint32 (or NULL for width 1), both all zero on entry and left all zero (the caller keeps them per thread: a 1 MB
 * calloc per span was an mmap and munmap each time, whose TLB shootdowns stalled the other worker). Big spans count
 * into the four sub-histograms (repeated patterns do not wait on each other), added to `dense` at the end (or every
 * 2^31 values). */
HOT static void count_u16(const uint16_t *a, int64_t len, uint32_t *h) {
    int64_t i = 0;
    for (; i + 4 <= len; i += 4) {
        h[a[i]]++;
        h[65536 + a[i + 1]]++;
        h[2 * 65536 + a[i + 2]]++;
        h[3 * 65536 + a[i + 3]]++;
    }
    for (; i < len; i++) h[a[i]]++;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t ck_values_fd(int width, int fd, int64_t pos, int64_t n, int64_t piece, void *buf, int64_t *dense,
                     uint32_t *subs, int64_t *keys, int64_t *vals, int64_t *err) {
    if ((width != 1 && width != 2) || piece <= 0 || piece > (1 << 30) || n < 0) return -1;
    const int64_t size = width == 2 ? 65536 : 256;
    const int sub = width == 2 && n >= (1 << 20) && subs; /* small spans: adding up 1 MB of sub-histograms would cost more */
    uint32_t *h = sub ? subs : NULL;
    int64_t held = 0; /* values in the sub-histograms since they were last added to dense */
    for (int64_t s = 0; s < n; s += piece) {
        int64_t len = n - s < piece ? n - s : piece;
        int64_t r = read_all(fd, buf, len * width, pos + s * width, err);
        if (r) {
            if (h) memset(h, 0, (size_t)(4 * size) * sizeof(uint32_t));
            memset(dense, 0, (size_t)size * sizeof(int64_t));
            return r;
        }
        if (sub) {
            count_u16((const uint16_t *)buf, len, h);
            held += len;
            if (held > ((int64_t)1 << 31) || s + len >= n) { /* uint32 counters: added up long before they could wrap */
                for (int64_t j = 0; j < size; j++) {
                    const int64_t c = (int64_t)h[j] + h[size + j] + h[2 * size + j] + h[3 * size + j];
                    if (c) { /* written only where counted: the pages of patterns never seen stay untouched */
                        dense[j] += c;
                        h[j] = h[size + j] = h[2 * size + j] = h[3 * size + j] = 0;
                    }
                }
                held = 0;
            }
        } else if (width == 2) {
            const uint16_t *a = (const uint16_t *)buf;
            for (int64_t i = 0; i < len; i++) dense[a[i]]++;
        } else {
            const uint8_t *a = (const uint8_t *)buf;
            for (int64_t i = 0; i < len; i++) dense[a[i]]++;
        }
    }
    int64_t m = 0;
    if (n <= piece && n < size / 8) { /* a small span, still in buf: its own values are the keys (no scan of dense) */
        for (int64_t i = 0; i < n; i++) {
            int64_t v = width == 2 ? ((const uint16_t *)buf)[i] : ((const uint8_t *)buf)[i];
            if (dense[v] > 0) {
                keys[m++] = v;
                dense[v] = -dense[v]; /* taken */
            }
        }
        qsort(keys, (size_t)m, sizeof(int64_t), cmp_i64);
        for (int64_t i = 0; i < m; i++) {
            vals[i] = -dense[keys[i]];
            dense[keys[i]] = 0;
        }
        return m;
    }
    for (int64_t j = 0; j < size; j++) /* a scan of 0.5 MB: a few % of counting the 1M+ values of a big span */
        if (dense[j]) {
            keys[m] = j;
            vals[m++] = dense[j];
            dense[j] = 0;
        }
    return m;
}

/* ------------------------------------------------------------------------------------------ diff
 * A vs B, elements [0, n) of two tensors of one shape at byte pos_a of fd_a and pos_b of fd_b (kinds ka, kb), read
 * in pieces of `piece` elements restarting at every `chunk` elements (the slices explorer/core/diff.py's numpy loop
 * pairs), each piece one slice: its partial as _pair_sums64 computes it (each sum numpy's pairwise sum of the
 * float64 products, here computed from the read buffers as the sum goes; when Σa² + Σb² is not finite, the values
 * finite on both sides are compacted as float64 into `scratch` and summed again) and merged into the running
 * figures as _merge does, in slice order. out: Σa², Σb², Σab, Σ(b−a)², max|b−a|; flags[0] every value equal (NaN
 * equal to NaN), flags[1] positions differing as NaN/Inf. Returns 0, -4 / -5 as the passes above (err[1] = 1 when
 * B's read failed, else 0). `scratch`: room for 2 * piece doubles. */
/* the four sums of a slice in one sweep: each its own pairwise sum (the same blocks, accumulators and halves as
 * PAIRWISE2 with that term alone, so the same value), the values loaded once */
typedef struct { double aa, bb, ab, dd; } sums4;

#define PAIRWISE4(NAME, LDA, LDB)                                                                               \
    HOT static sums4 NAME(const void *a, const void *b, int64_t off, int64_t n) {                                    \
        sums4 res = {0., 0., 0., 0.};                                                                           \
        if (n < 8) {                                                                                            \
            for (int64_t i = 0; i < n; i++) {                                                                   \
                double va = (double)LDA(a, off + i), vb = (double)LDB(b, off + i), d = vb - va;                 \
                res.aa += va * va; res.bb += vb * vb; res.ab += va * vb; res.dd += d * d;                       \
            }                                                                                                   \
            return res;                                                                                         \
        } else if (n <= PW_BLOCKSIZE) {                                                                         \
            double ra[8], rb[8], rab[8], rd[8];                                                                 \
            int64_t i;                                                                                          \
            for (int j = 0; j < 8; j++) {                                                                       \
                double va = (double)LDA(a, off + j), vb = (double)LDB(b, off + j), d = vb - va;                 \
                ra[j] = va * va; rb[j] = vb * vb; rab[j] = va * vb; rd[j] = d * d;                              \
            }                                                                                                   \
            for (i = 8; i < n - (n % 8); i += 8) {                                                              \
                for (int j = 0; j < 8; j++) {                                                                   \
                    double va = (double)LDA(a, off + i + j), vb = (double)LDB(b, off + i + j), d = vb - va;     \
                    ra[j] += va * va; rb[j] += vb * vb; rab[j] += va * vb; rd[j] += d * d;                      \
                }                                                                                               \
            }                                                                                                   \
            res.aa = ((ra[0] + ra[1]) + (ra[2] + ra[3])) + ((ra[4] + ra[5]) + (ra[6] + ra[7]));                 \
            res.bb = ((rb[0] + rb[1]) + (rb[2] + rb[3])) + ((rb[4] + rb[5]) + (rb[6] + rb[7]));                 \
            res.ab = ((rab[0] + rab[1]) + (rab[2] + rab[3])) + ((rab[4] + rab[5]) + (rab[6] + rab[7]));         \
            res.dd = ((rd[0] + rd[1]) + (rd[2] + rd[3])) + ((rd[4] + rd[5]) + (rd[6] + rd[7]));                 \
            for (; i < n; i++) {                                                                                \
                double va = (double)LDA(a, off + i), vb = (double)LDB(b, off + i), d = vb - va;                 \
                res.aa += va * va; res.bb += vb * vb; res.ab += va * vb; res.dd += d * d;                       \
            }                                                                                                   \
            return res;                                                                                         \
        } else {                                                                                                \
            int64_t n2 = n / 2;                                                                                 \
            n2 -= n2 % 8;                                                                                       \
            sums4 l = NAME(a, b, off, n2), r = NAME(a, b, off + n2, n - n2);                                    \
            res.aa = l.aa + r.aa; res.bb = l.bb + r.bb; res.ab = l.ab + r.ab; res.dd = l.dd + r.dd;             \
            return res;                                                                                         \
        }                                                                                                       \
    }

typedef sums4 (*pw4_fn)(const void *, const void *, int64_t, int64_t);

#define DIFF_COMBO(S, LDA, LDB)                                  \
    PAIRWISE4(pw4_##S, LDA, LDB)                                 \
    HOT static int scan_##S(const void *a, const void *b, int64_t n, double *mx) {                            \
        /* every value equal (NaN equal to NaN); max|b - a| as the max of its bit patterns (|b - a| >= 0; exact    \
         * where no value is NaN, the only case it is used: a NaN makes a sum non-finite, and the caller then      \
         * takes the max over the compacted values) - two loops the compiler vectorises */                        \
        int64_t ne = 0;                                                                                           \
        for (int64_t i = 0; i < n; i++) {                                                                         \
            double x = (double)LDA(a, i), y = (double)LDB(b, i);                                                  \
            ne += (x != y) & ((x == x) | (y == y));                                                               \
        }                                                                                                         \
        uint64_t mu = 0;                                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                                         \
            double d = fabs((double)LDB(b, i) - (double)LDA(a, i));                                               \
            uint64_t u;                                                                                           \
            memcpy(&u, &d, 8);                                                                                    \
            mu = u > mu ? u : mu;                                                                                 \
        }                                                                                                         \
        memcpy(mx, &mu, 8);                                                                                       \
        return ne == 0;                                                                                           \
    }

DIFF_COMBO(ff, ld_f32, ld_f32)
DIFF_COMBO(fd, ld_f32, ld_f64)
DIFF_COMBO(fb, ld_f32, ld_bf16)
DIFF_COMBO(df, ld_f64, ld_f32)
DIFF_COMBO(dd, ld_f64, ld_f64)
DIFF_COMBO(db, ld_f64, ld_bf16)
DIFF_COMBO(bf, ld_bf16, ld_f32)
DIFF_COMBO(bd, ld_bf16, ld_f64)
DIFF_COMBO(bb, ld_bf16, ld_bf16)

typedef int (*scan_fn)(const void *, const void *, int64_t, double *);
static const pw4_fn PW4[3][3] = {{pw4_ff, pw4_fd, pw4_fb}, {pw4_df, pw4_dd, pw4_db}, {pw4_bf, pw4_bd, pw4_bb}};
static const scan_fn SCAN[3][3] = {{scan_ff, scan_fd, scan_fb}, {scan_df, scan_dd, scan_db}, {scan_bf, scan_bd, scan_bb}};

static inline double ld_kind(int kind, const void *p, int64_t i) {
    return kind == 0 ? (double)ld_f32(p, i) : kind == 1 ? ld_f64(p, i) : (double)ld_bf16(p, i);
}

static inline int finite64(double x) { return !nonfinite64(x); }

int64_t ck_diff_fd(int ka, int fd_a, int64_t pos_a, int kb, int fd_b, int64_t pos_b, int64_t n, int64_t chunk,
                   int64_t piece, void *buf_a, void *buf_b, double *scratch, double *out, int64_t *flags, int64_t *err) {
    const int64_t isa = item_size(ka), isb = item_size(kb);
    if (!isa || !isb || chunk <= 0 || piece <= 0 || n < 0) return -1;
    double *da = scratch, *db = scratch + piece;
    double acc_aa = 0., acc_bb = 0., acc_ab = 0., acc_dd = 0., acc_mx = 0.;
    int64_t all_equal = 1, acc_nf = 0;
    for (int64_t cs = 0; cs < n; cs += chunk) {
        int64_t ce = n - cs < chunk ? n : cs + chunk;
        for (int64_t s = cs; s < ce; s += piece) {
            int64_t len = ce - s < piece ? ce - s : piece;
            int64_t r = read_all(fd_a, buf_a, len * isa, pos_a + s * isa, err);
            if (r) return r;
            r = read_all(fd_b, buf_b, len * isb, pos_b + s * isb, err);
            if (r) {
                err[1] = 1; /* B's read failed */
                return r;
            }
            double mx;
            int eq = SCAN[ka][kb](buf_a, buf_b, len, &mx);
            sums4 q = PW4[ka][kb](buf_a, buf_b, 0, len);
            double aa = q.aa, bb = q.bb, ab = q.ab, dd = q.dd;
            int64_t nf = 0;
            if (!finite64(aa + bb)) { /* rare: NaN/Inf on a side; only the positions finite on both sides count */
                int64_t w = 0;
                for (int64_t i = 0; i < len; i++) {
                    double x = ld_kind(ka, buf_a, i), y = ld_kind(kb, buf_b, i);
                    int keep = finite64(x) && finite64(y);
                    int same = (x == y) || (x != x && y != y);
                    nf += !keep && !same;
                    if (keep) {
                        da[w] = x;
                        db[w] = y;
                        w++;
                    }
                }
                q = pw4_dd(da, db, 0, w);
                aa = q.aa;
                bb = q.bb;
                ab = q.ab;
                dd = q.dd;
                mx = 0.;
                for (int64_t i = 0; i < w; i++) {
                    double d = fabs(db[i] - da[i]);
                    mx = d > mx ? d : mx;
                }
            }
            acc_aa = acc_aa + aa;
            acc_bb = acc_bb + bb;
            acc_ab = acc_ab + ab;
            acc_dd = acc_dd + dd;
            acc_mx = mx > acc_mx ? mx : acc_mx;
            all_equal = all_equal && eq;
            acc_nf += nf;
        }
    }
    out[0] = acc_aa;
    out[1] = acc_bb;
    out[2] = acc_ab;
    out[3] = acc_dd;
    out[4] = acc_mx;
    flags[0] = all_equal;
    flags[1] = acc_nf;
    return 0;
}
