// Innermost loops: gemm microkernel, dot product, matrix-vector product. See CKernels.h.
#include "CKernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#define SG_X86 1
#include <immintrin.h>
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int sg_best_isa(void) {
#if SG_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("f16c"))
            cached = SG_ISA_AVX512;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) cached = SG_ISA_AVX2_FMA;
        else cached = SG_ISA_PORTABLE;
    }
    return cached;
#else
    return SG_ISA_PORTABLE;
#endif
}

void sg_gemm_tile(int isa, int *mr, int *nr) {
    if (isa == SG_ISA_AVX512) { *mr = 12; *nr = 32; }
    else if (isa == SG_ISA_AVX2_FMA) { *mr = SG_GEMM_AVX2_MR; *nr = SG_GEMM_AVX2_NR; }
    else { *mr = SG_GEMM_MR; *nr = SG_GEMM_NR; }
}

// Writes an mr x nr corner of a full tile (row stride `stride`) into C.
static void store_partial(const float *tile, int stride, float *c, long ldc, int mr, int nr,
                          float alpha, float beta) {
    for (int i = 0; i < mr; i++) {
        for (int j = 0; j < nr; j++) {
            float v = alpha * tile[i * stride + j];
            c[i * ldc + j] = beta == 0.0f ? v : v + beta * c[i * ldc + j];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Portable versions: plain loops the compiler vectorises for the build's baseline.

static void gemm_micro_portable(long kc, const float *a, const float *b, float *c, long ldc,
                                int mr, int nr, float alpha, float beta) {
    float acc[SG_GEMM_MR * SG_GEMM_NR] = {0};
    for (long p = 0; p < kc; p++) {
        const float *bp = b + p * SG_GEMM_NR;
        const float *ap = a + p * SG_GEMM_MR;
        for (int i = 0; i < SG_GEMM_MR; i++) {
            float ai = ap[i];
            for (int j = 0; j < SG_GEMM_NR; j++) acc[i * SG_GEMM_NR + j] += ai * bp[j];
        }
    }
    store_partial(acc, SG_GEMM_NR, c, ldc, mr, nr, alpha, beta);
}

static float dot_portable(long n, const float *x, const float *y) {
    float s[8] = {0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) s[l] += x[i + l] * y[i + l];
    float sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) sum += x[i] * y[i];
    return sum;
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA versions.

#if SG_X86
#define SG_AVX2 __attribute__((target("avx2,fma")))

// 12 accumulators (4 rows x 3 vectors of 8), 3 B vectors and 1 broadcast: all 16 registers.
// Per step of k: 3 loads and 4 broadcasts feed 12 FMAs (a 6 x 16 tile needs 2 + 6).
SG_AVX2 static void gemm_micro_avx2(long kc, const float *a, const float *b, float *c, long ldc,
                                    int mr, int nr, float alpha, float beta) {
    enum { MR = SG_GEMM_AVX2_MR, NR = SG_GEMM_AVX2_NR };
    // The loop in assembly: the 12 accumulators, 3 B vectors and the broadcast take all 16
    // registers, and compilers spill one when they schedule it themselves.
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    __m256 b0, b1, b2, ai;
    // C's lines are written at the end: asked for now, their misses overlap the loop.
    for (int i = 0; i < mr; i++) { __builtin_prefetch(c + i * ldc, 1, 3); __builtin_prefetch(c + i * ldc + NR - 1, 1, 3); }
    if (kc > 0) {
        __asm__ volatile(
            "1:\n\t"
            "vmovaps (%[b]), %[b0]\n\t"
            "vmovaps 32(%[b]), %[b1]\n\t"
            "vmovaps 64(%[b]), %[b2]\n\t"
            "vbroadcastss (%[a]), %[ai]\n\t"
            "vfmadd231ps %[b0], %[ai], %[c00]\n\t"
            "vfmadd231ps %[b1], %[ai], %[c01]\n\t"
            "vfmadd231ps %[b2], %[ai], %[c02]\n\t"
            "vbroadcastss 4(%[a]), %[ai]\n\t"
            "vfmadd231ps %[b0], %[ai], %[c10]\n\t"
            "vfmadd231ps %[b1], %[ai], %[c11]\n\t"
            "vfmadd231ps %[b2], %[ai], %[c12]\n\t"
            "vbroadcastss 8(%[a]), %[ai]\n\t"
            "vfmadd231ps %[b0], %[ai], %[c20]\n\t"
            "vfmadd231ps %[b1], %[ai], %[c21]\n\t"
            "vfmadd231ps %[b2], %[ai], %[c22]\n\t"
            "vbroadcastss 12(%[a]), %[ai]\n\t"
            "vfmadd231ps %[b0], %[ai], %[c30]\n\t"
            "vfmadd231ps %[b1], %[ai], %[c31]\n\t"
            "vfmadd231ps %[b2], %[ai], %[c32]\n\t"
            "add $16, %[a]\n\t"
            "add $96, %[b]\n\t"
            "dec %[k]\n\t"
            "jnz 1b\n\t"
            : [a] "+r"(a), [b] "+r"(b), [k] "+r"(kc), [b0] "=&x"(b0), [b1] "=&x"(b1), [b2] "=&x"(b2), [ai] "=&x"(ai),
              [c00] "+x"(c00), [c01] "+x"(c01), [c02] "+x"(c02), [c10] "+x"(c10), [c11] "+x"(c11), [c12] "+x"(c12),
              [c20] "+x"(c20), [c21] "+x"(c21), [c22] "+x"(c22), [c30] "+x"(c30), [c31] "+x"(c31), [c32] "+x"(c32)
            :
            : "memory", "cc");
    }
    __m256 acc[MR][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};
    if (mr == MR && nr == NR) {
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        for (int i = 0; i < MR; i++) {
            for (int j = 0; j < 3; j++) {
                float *cij = c + i * ldc + 8 * j;
                __m256 v = _mm256_mul_ps(va, acc[i][j]);
                _mm256_storeu_ps(cij, beta == 0.0f ? v : _mm256_fmadd_ps(vb, _mm256_loadu_ps(cij), v));
            }
        }
        return;
    }
    float tile[MR * NR];
    for (int i = 0; i < MR; i++) for (int j = 0; j < 3; j++) _mm256_storeu_ps(tile + i * NR + 8 * j, acc[i][j]);
    store_partial(tile, NR, c, ldc, mr, nr, alpha, beta);
}

SG_AVX2 static inline float hsum_avx(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

SG_AVX2 static float dot_avx2(long n, const float *x, const float *y) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
    float sum = hsum_avx(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) sum += x[i] * y[i];
    return sum;
}

// Four rows at a time so each load of x serves four products.
SG_AVX2 static void matvec_avx2(long rows, long k, const float *a, long lda, const float *x,
                                float *y, float alpha, float beta) {
    long r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float *a0 = a + r * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        long i = 0;
        for (; i + 8 <= k; i += 8) {
            __m256 xv = _mm256_loadu_ps(x + i);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + i), xv, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + i), xv, s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a2 + i), xv, s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a3 + i), xv, s3);
        }
        float d[4] = {hsum_avx(s0), hsum_avx(s1), hsum_avx(s2), hsum_avx(s3)};
        for (; i < k; i++) {
            d[0] += a0[i] * x[i]; d[1] += a1[i] * x[i]; d[2] += a2[i] * x[i]; d[3] += a3[i] * x[i];
        }
        for (int j = 0; j < 4; j++)
            y[r + j] = beta == 0.0f ? alpha * d[j] : alpha * d[j] + beta * y[r + j];
    }
    for (; r < rows; r++) {
        float d = dot_avx2(k, a + r * lda, x);
        y[r] = beta == 0.0f ? alpha * d : alpha * d + beta * y[r];
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 versions. On this machine's cores 512-bit FMAs run at full width: the FMA loop measures
// twice the AVX2 figure, so the gemm microkernel has a 512-bit form with a larger tile.

#define SG_AVX512 __attribute__((target("avx512f,avx2,fma")))

// 24 accumulators (12 rows x 2 vectors of 16), 2 B vectors and 1 broadcast: 27 of 32 registers.
SG_AVX512 static void gemm_micro_avx512(long kc, const float *a, const float *b, float *c,
                                        long ldc, int mr, int nr, float alpha, float beta) {
    __m512 acc[12][2];
    #pragma clang loop unroll(full)
    for (int i = 0; i < 12; i++) { acc[i][0] = _mm512_setzero_ps(); acc[i][1] = _mm512_setzero_ps(); }
    for (long p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        #pragma clang loop unroll(full)
        for (int i = 0; i < 12; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += 12;
        b += 32;
    }
    if (mr == 12 && nr == 32) {
        __m512 va = _mm512_set1_ps(alpha);
        #pragma clang loop unroll(full)
        for (int i = 0; i < 12; i++) {
            float *ci = c + i * ldc;
            __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
            if (beta != 0.0f) {
                __m512 vb = _mm512_set1_ps(beta);
                r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), r0);
                r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), r1);
            }
            _mm512_storeu_ps(ci, r0);
            _mm512_storeu_ps(ci + 16, r1);
        }
        return;
    }
    float tile[12 * 32];
    for (int i = 0; i < 12; i++) {
        _mm512_storeu_ps(tile + 32 * i, acc[i][0]);
        _mm512_storeu_ps(tile + 32 * i + 16, acc[i][1]);
    }
    store_partial(tile, 32, c, ldc, mr, nr, alpha, beta);
}

SG_AVX2 static double fma_peak_avx2(long n, float *sink) {
    __m256 acc[12];
    __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < 2 * n; k++) {
        #pragma clang loop unroll(full)
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    __m256 s = acc[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, acc[i]);
    _mm256_storeu_ps(sink, s);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return (double)n * 24 * 16 / seconds / 1e9;
}

SG_AVX512 static double fma_peak_avx512(long n, float *sink) {
    __m512 acc[24];
    __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps((float)i);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < n; k++) {
        #pragma clang loop unroll(full)
        for (int i = 0; i < 24; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    __m512 s = acc[0];
    for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, acc[i]);
    _mm512_storeu_ps(sink, s);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return (double)n * 24 * 32 / seconds / 1e9;
}
#endif

// ---------------------------------------------------------------------------------------------
// Dispatch. AVX-512 falls back to the AVX2 forms for the kernels that have no 512-bit form.

void sg_gemm_micro(int isa, long kc, const float *a, const float *b, float *c, long ldc,
                   int mr, int nr, float alpha, float beta) {
#if SG_X86
    if (isa == SG_ISA_AVX512) { gemm_micro_avx512(kc, a, b, c, ldc, mr, nr, alpha, beta); return; }
    if (isa == SG_ISA_AVX2_FMA) { gemm_micro_avx2(kc, a, b, c, ldc, mr, nr, alpha, beta); return; }
#endif
    (void)isa;
    gemm_micro_portable(kc, a, b, c, ldc, mr, nr, alpha, beta);
}

void sg_gemm_block(int isa, long kc, long tiles, long panels, const float *a, const float *b, float *c, long ldc, long rows,
                   long columns, float alpha, float beta) {
    int mr, nr;
    sg_gemm_tile(isa, &mr, &nr);
    for (long p = 0; p < panels; p++) {
        int width = columns - p * nr < nr ? (int)(columns - p * nr) : nr;
        for (long t = 0; t < tiles; t++) {
            int height = rows - t * mr < mr ? (int)(rows - t * mr) : mr;
            sg_gemm_micro(isa, kc, a + t * kc * mr, b + p * kc * nr, c + t * mr * ldc + p * nr, ldc, height, width, alpha, beta);
        }
    }
}

float sg_dot(int isa, long n, const float *x, const float *y) {
#if SG_X86
    if (isa >= SG_ISA_AVX2_FMA) return dot_avx2(n, x, y);
#endif
    (void)isa;
    return dot_portable(n, x, y);
}

void sg_matvec(int isa, long rows, long k, const float *a, long lda, const float *x,
               float *y, float alpha, float beta) {
#if SG_X86
    if (isa >= SG_ISA_AVX2_FMA) { matvec_avx2(rows, k, a, lda, x, y, alpha, beta); return; }
#endif
    (void)isa;
    for (long r = 0; r < rows; r++) {
        float d = dot_portable(k, a + r * lda, x);
        y[r] = beta == 0.0f ? alpha * d : alpha * d + beta * y[r];
    }
}

double sg_fma_peak_gflops(int isa, long iterations) {
    float sink[16];
#if SG_X86
    if (isa == SG_ISA_AVX512) return fma_peak_avx512(iterations, sink);
    if (isa == SG_ISA_AVX2_FMA) return fma_peak_avx2(iterations, sink);
#endif
    // Portable: the same shape of loop on scalars the compiler vectorises as it can.
    float acc[96];
    for (int i = 0; i < 96; i++) acc[i] = (float)i;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < iterations; k++)
        for (int i = 0; i < 96; i++) acc[i] = acc[i] * 0.999999f + 1e-7f;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (int i = 0; i < 16; i++) sink[i] = acc[i];
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return (double)iterations * 96 * 2 / seconds / 1e9 + 0.0 * sink[0];
}

// ---------------------------------------------------------------------------------------------
// exp, softmax and GELU. exp(x) = 2^n · e^r with n = round(x / ln 2), r = x - n ln 2 (ln 2 split
// in two for exactness) and e^r from its Taylor polynomial to degree 6 on |r| <= ln2/2.

#define SG_EXP_HI 88.0f
#define SG_EXP_LO -87.3f
#define SG_GELU_K 0.7978845608028654f  /* sqrt(2/pi) */
#define SG_GELU_C 0.044715f

static float gelu_scalar(float x) {
    return 0.5f * x * (1.0f + tanhf(SG_GELU_K * (x + SG_GELU_C * x * x * x)));
}

static float gelu_grad_scalar(float x) {
    float t = tanhf(SG_GELU_K * (x + SG_GELU_C * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * SG_GELU_K * (1.0f + 3.0f * SG_GELU_C * x * x);
}

#if SG_X86
SG_AVX2 static inline __m256 exp_avx2(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(SG_EXP_LO)), _mm256_set1_ps(SG_EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

SG_AVX512 static inline __m512 exp_avx512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(SG_EXP_LO)), _mm512_set1_ps(SG_EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

SG_AVX512 static void exp_avx512_loop(long n, const float *x, float *y) {
    long i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp_avx512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, exp_avx512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

SG_AVX2 static void exp_avx2_loop(long n, const float *x, float *y) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp_avx2(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = expf(x[i] < SG_EXP_LO ? SG_EXP_LO : x[i] > SG_EXP_HI ? SG_EXP_HI : x[i]);
}

SG_AVX512 static float softmax_avx512(long n, float *x) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    long i = 0;
    for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    float maxv = _mm512_reduce_max_ps(vmax);
    for (; i < n; i++) maxv = x[i] > maxv ? x[i] : maxv;
    __m512 vm = _mm512_set1_ps(maxv), vsum = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(x + i, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm));
        e = _mm512_maskz_mov_ps(m, e);
        _mm512_mask_storeu_ps(x + i, m, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    float sum = _mm512_reduce_add_ps(vsum);
    __m512 scale = _mm512_set1_ps(1.0f / sum);
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), scale));
    for (; i < n; i++) x[i] *= 1.0f / sum;
    return maxv + logf(sum);
}

SG_AVX2 static float softmax_avx2(long n, float *x) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    long i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float maxv = lanes[0];
    for (int l = 1; l < 8; l++) maxv = lanes[l] > maxv ? lanes[l] : maxv;
    for (; i < n; i++) maxv = x[i] > maxv ? x[i] : maxv;
    __m256 vm = _mm256_set1_ps(maxv), vsum = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum_avx(vsum);
    for (; i < n; i++) { x[i] = expf(x[i] - maxv); sum += x[i]; }
    __m256 scale = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), scale));
    for (; i < n; i++) x[i] *= 1.0f / sum;
    return maxv + logf(sum);
}

// tanh(u) = 1 - 2 / (exp(2u) + 1)
SG_AVX512 static void gelu_forward_avx512(long n, const float *x, float *y) {
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 u = _mm512_mul_ps(_mm512_set1_ps(SG_GELU_K), _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(SG_GELU_C), v), _mm512_mul_ps(v, v), v));
        __m512 t = _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(exp_avx512(_mm512_add_ps(u, u)), _mm512_set1_ps(1.0f))));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.0f), t)));
    }
    for (; i < n; i++) y[i] = gelu_scalar(x[i]);
}

SG_AVX512 static void gelu_backward_avx512(long n, const float *x, const float *dy, float *dx) {
    long i = 0;
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 v2 = _mm512_mul_ps(v, v);
        __m512 u = _mm512_mul_ps(_mm512_set1_ps(SG_GELU_K), _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(SG_GELU_C), v), v2, v));
        __m512 t = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(exp_avx512(_mm512_add_ps(u, u)), one)));
        __m512 du = _mm512_mul_ps(_mm512_set1_ps(SG_GELU_K), _mm512_fmadd_ps(_mm512_set1_ps(3.0f * SG_GELU_C), v2, one));
        __m512 grad = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_fnmadd_ps(t, t, one)), du,
                                      _mm512_mul_ps(half, _mm512_add_ps(one, t)));
        _mm512_storeu_ps(dx + i, _mm512_fmadd_ps(grad, _mm512_loadu_ps(dy + i), _mm512_loadu_ps(dx + i)));
    }
    for (; i < n; i++) dx[i] += gelu_grad_scalar(x[i]) * dy[i];
}

SG_AVX2 static void gelu_forward_avx2(long n, const float *x, float *y) {
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 u = _mm256_mul_ps(_mm256_set1_ps(SG_GELU_K), _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(SG_GELU_C), v), _mm256_mul_ps(v, v), v));
        __m256 t = _mm256_sub_ps(_mm256_set1_ps(1.0f), _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(exp_avx2(_mm256_add_ps(u, u)), _mm256_set1_ps(1.0f))));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.0f), t)));
    }
    for (; i < n; i++) y[i] = gelu_scalar(x[i]);
}

SG_AVX2 static void gelu_backward_avx2(long n, const float *x, const float *dy, float *dx) {
    long i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 v2 = _mm256_mul_ps(v, v);
        __m256 u = _mm256_mul_ps(_mm256_set1_ps(SG_GELU_K), _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(SG_GELU_C), v), v2, v));
        __m256 t = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(exp_avx2(_mm256_add_ps(u, u)), one)));
        __m256 du = _mm256_mul_ps(_mm256_set1_ps(SG_GELU_K), _mm256_fmadd_ps(_mm256_set1_ps(3.0f * SG_GELU_C), v2, one));
        __m256 grad = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_fnmadd_ps(t, t, one)), du,
                                      _mm256_mul_ps(half, _mm256_add_ps(one, t)));
        _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(grad, _mm256_loadu_ps(dy + i), _mm256_loadu_ps(dx + i)));
    }
    for (; i < n; i++) dx[i] += gelu_grad_scalar(x[i]) * dy[i];
}
#endif

void sg_exp(int isa, long n, const float *x, float *y) {
#if SG_X86
    if (isa == SG_ISA_AVX512) { exp_avx512_loop(n, x, y); return; }
    if (isa == SG_ISA_AVX2_FMA) { exp_avx2_loop(n, x, y); return; }
#endif
    (void)isa;
    for (long i = 0; i < n; i++) y[i] = expf(x[i] < SG_EXP_LO ? SG_EXP_LO : x[i] > SG_EXP_HI ? SG_EXP_HI : x[i]);
}

float sg_max(long n, const float *x) {
    // Eight running maxima so that the compiler vectorises the loop.
    float m[8];
    for (int j = 0; j < 8; j++) m[j] = x[0];
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    for (int j = 1; j < 8; j++) m[0] = m[j] > m[0] ? m[j] : m[0];
    return m[0];
}

static float exp_shifted_portable(long n, const float *x, float shift, float scale, float *y) {
    float sum = 0.0f;
    for (long i = 0; i < n; i++) {
        float e = expf((x[i] - shift) * scale);
        if (y) y[i] = e;
        sum += e;
    }
    return sum;
}

#if SG_X86
SG_AVX512 static float exp_shifted_avx512(long n, const float *x, float shift, float scale, float *y) {
    __m512 vshift = _mm512_set1_ps(shift), vscale = _mm512_set1_ps(scale), vsum = _mm512_setzero_ps();
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp_avx512(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vshift), vscale));
        if (y) _mm512_storeu_ps(y + i, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp_avx512(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vshift), vscale));
        if (y) _mm512_mask_storeu_ps(y + i, m, e);
        vsum = _mm512_add_ps(vsum, _mm512_maskz_mov_ps(m, e));
    }
    return _mm512_reduce_add_ps(vsum);
}

SG_AVX2 static float exp_shifted_avx2(long n, const float *x, float shift, float scale, float *y) {
    __m256 vshift = _mm256_set1_ps(shift), vscale = _mm256_set1_ps(scale), vsum = _mm256_setzero_ps();
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_avx2(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vshift), vscale));
        if (y) _mm256_storeu_ps(y + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    return hsum_avx(vsum) + exp_shifted_portable(n - i, x + i, shift, scale, y ? y + i : NULL);
}
#endif

float sg_exp_shifted(int isa, long n, const float *x, float shift, float scale, float *y) {
#if SG_X86
    if (isa == SG_ISA_AVX512) return exp_shifted_avx512(n, x, shift, scale, y);
    if (isa == SG_ISA_AVX2_FMA) return exp_shifted_avx2(n, x, shift, scale, y);
#endif
    (void)isa;
    return exp_shifted_portable(n, x, shift, scale, y);
}

float sg_softmax_row(int isa, long n, float *x) {
    if (n <= 0) return -INFINITY;
#if SG_X86
    if (isa == SG_ISA_AVX512) return softmax_avx512(n, x);
    if (isa == SG_ISA_AVX2_FMA) return softmax_avx2(n, x);
#endif
    (void)isa;
    float maxv = x[0];
    for (long i = 1; i < n; i++) maxv = x[i] > maxv ? x[i] : maxv;
    float sum = 0.0f;
    for (long i = 0; i < n; i++) { x[i] = expf(x[i] - maxv); sum += x[i]; }
    for (long i = 0; i < n; i++) x[i] /= sum;
    return maxv + logf(sum);
}

SG_AVX512 static void swiglu_avx512(long n, const float *gate, const float *up, float *y) {
    long i = 0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i);
        __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(s, _mm512_loadu_ps(up + i)));
    }
    for (; i < n; i++) y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

SG_AVX2 static void swiglu_avx2(long n, const float *gate, const float *up, float *y) {
    long i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g))));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void sg_swiglu(int isa, long n, const float *gate, const float *up, float *y) {
#if SG_X86
    if (isa == SG_ISA_AVX512) { swiglu_avx512(n, gate, up, y); return; }
    if (isa == SG_ISA_AVX2_FMA) { swiglu_avx2(n, gate, up, y); return; }
#endif
    (void)isa;
    for (long i = 0; i < n; i++) y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void sg_gelu_forward(int isa, long n, const float *x, float *y) {
#if SG_X86
    if (isa == SG_ISA_AVX512) { gelu_forward_avx512(n, x, y); return; }
    if (isa == SG_ISA_AVX2_FMA) { gelu_forward_avx2(n, x, y); return; }
#endif
    (void)isa;
    for (long i = 0; i < n; i++) y[i] = gelu_scalar(x[i]);
}

void sg_gelu_backward(int isa, long n, const float *x, const float *dy, float *dx) {
#if SG_X86
    if (isa == SG_ISA_AVX512) { gelu_backward_avx512(n, x, dy, dx); return; }
    if (isa == SG_ISA_AVX2_FMA) { gelu_backward_avx2(n, x, dy, dx); return; }
#endif
    (void)isa;
    for (long i = 0; i < n; i++) dx[i] += gelu_grad_scalar(x[i]) * dy[i];
}

// ---------------------------------------------------------------------------------------------
// Quantised GGML blocks.

float sg_half_to_float(unsigned short h) {
    unsigned int sign = (unsigned int)(h >> 15) << 31, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    unsigned int bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            exponent = 127 - 15 + 1;
            while (!(mantissa & 0x400)) { mantissa <<= 1; exponent--; }
            bits = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
        }
    } else if (exponent == 31) {
        bits = sign | 0x7F800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline unsigned short load_u16(const unsigned char *p) { return (unsigned short)(p[0] | (p[1] << 8)); }

static void dequantize_portable(int type, const unsigned char *src, long n, float *dst) {
    switch (type) {
    case SG_TYPE_F32: memcpy(dst, src, (size_t)n * 4); return;
    case SG_TYPE_F16: for (long i = 0; i < n; i++) dst[i] = sg_half_to_float(load_u16(src + 2 * i)); return;
    case SG_TYPE_BF16:
        for (long i = 0; i < n; i++) { unsigned int b = (unsigned int)load_u16(src + 2 * i) << 16; memcpy(dst + i, &b, 4); }
        return;
    case SG_TYPE_Q8_0:
        for (long b = 0; b < n / 32; b++, src += 34) {
            float d = sg_half_to_float(load_u16(src));
            for (int j = 0; j < 32; j++) dst[32 * b + j] = d * (float)(signed char)src[2 + j];
        }
        return;
    case SG_TYPE_Q4_0:
        for (long b = 0; b < n / 32; b++, src += 18) {
            float d = sg_half_to_float(load_u16(src));
            for (int j = 0; j < 16; j++) {
                dst[32 * b + j] = d * (float)((src[2 + j] & 15) - 8);
                dst[32 * b + j + 16] = d * (float)((src[2 + j] >> 4) - 8);
            }
        }
        return;
    case SG_TYPE_Q4_1:
        for (long b = 0; b < n / 32; b++, src += 20) {
            float d = sg_half_to_float(load_u16(src)), m = sg_half_to_float(load_u16(src + 2));
            for (int j = 0; j < 16; j++) {
                dst[32 * b + j] = d * (float)(src[4 + j] & 15) + m;
                dst[32 * b + j + 16] = d * (float)(src[4 + j] >> 4) + m;
            }
        }
        return;
    }
}

static long type_block_bytes(int type) {
    switch (type) { case SG_TYPE_Q8_0: return 34; case SG_TYPE_Q4_0: return 18; case SG_TYPE_Q4_1: return 20; default: return 0; }
}

#if SG_X86
#define SG_AVX2Q __attribute__((target("avx2,fma,f16c")))

// A block's scale and offset as [d, m, 0, 0] from one conversion of its halves (Q4_1 stores
// both; Q4_0 and Q8_0 only d, and lane 1 is 0: Q4_0's offset -8d is applied through its x sums).
SG_AVX2Q static inline __attribute__((always_inline)) __m128 block_dm_avx2(int type, const unsigned char *blk) {
    int bits = load_u16(blk);
    if (type == SG_TYPE_Q4_1) bits |= (int)load_u16(blk + 2) << 16;
    return _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
}

// The per-block x sums in the lane that meets the block's offset in block_dm_avx2's vector:
// Q4_1 [0, Σx, 0, 0] (m · Σx), Q4_0 [-8Σx, 0, 0, 0] (d · -8Σx); none for Q8_0. Written into
// `stack` (room for 256 blocks) or, for longer rows, a heap buffer the caller frees.
SG_AVX2Q static float *offset_sums(int type, long blocks, const float *x, float *stack) {
    if (type == SG_TYPE_Q8_0) return stack;
    float *sums = blocks <= 256 ? stack : (float *)aligned_alloc(16, (size_t)(16 * blocks));
    for (long b = 0; b < blocks; b++) {
        const float *xb = x + 32 * b;
        float s = hsum_avx(_mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8)),
                                         _mm256_add_ps(_mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24))));
        sums[4 * b] = type == SG_TYPE_Q4_0 ? -8.0f * s : 0.0f;
        sums[4 * b + 1] = type == SG_TYPE_Q4_1 ? s : 0.0f;
        sums[4 * b + 2] = sums[4 * b + 3] = 0.0f;
    }
    return sums;
}

#define SG_AVX512Q __attribute__((target("avx512f,avx512bw,avx2,fma,f16c")))

// The multi-vector kernels compute long enough on one panel of rows that the hardware
// prefetcher falls behind: they prefetch the next panel's lines themselves.
static inline void prefetch_lines(const unsigned char *p, long bytes) {
    for (long offset = 0; offset < bytes; offset += 64) __builtin_prefetch(p + offset, 0, 3);
}

// Share `part` of `parts` of the `bytes` at p (whole lines): the next panel is prefetched a share
// before each group of vectors, since a burst of all its lines at once stalls on the outstanding
// misses.
static inline void prefetch_share(const unsigned char *p, long bytes, long part, long parts) {
    long share = (bytes + 64 * parts - 1) / (64 * parts) * 64, done = part * share;
    if (done < bytes) prefetch_lines(p + done, bytes - done < share ? bytes - done : share);
}

// One block of one row as 32 floats in two registers.
SG_AVX512Q static inline void block_weights_avx512(int type, const unsigned char *blk, __m512 *w0, __m512 *w1) {
    float d = _cvtsh_ss(load_u16(blk));
    if (type == SG_TYPE_Q8_0) {
        __m512 vd = _mm512_set1_ps(d);
        *w0 = _mm512_mul_ps(vd, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)))));
        *w1 = _mm512_mul_ps(vd, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18)))));
        return;
    }
    float m = type == SG_TYPE_Q4_1 ? _cvtsh_ss(load_u16(blk + 2)) : -8.0f * d;
    __m128i packed = _mm_loadu_si128((const __m128i *)(blk + (type == SG_TYPE_Q4_1 ? 4 : 2)));
    __m128i low = _mm_and_si128(packed, _mm_set1_epi8(15));
    __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(15));
    __m512 vd = _mm512_set1_ps(d), vm = _mm512_set1_ps(m);
    *w0 = _mm512_fmadd_ps(vd, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(low)), vm);
    *w1 = _mm512_fmadd_ps(vd, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(high)), vm);
}

SG_AVX512Q static void dequantize_avx512(int type, const unsigned char *src, long n, float *dst);

// The sums of the 16 lanes of a, b, c and d, as one vector of 4 (9 operations instead of 32).
SG_AVX512Q static inline __m128 reduce4_avx512(__m512 a, __m512 b, __m512 c, __m512 d) {
    // 128-bit lanes: [a0+a2, a1+a3, b0+b2, b1+b3] and the same for c, d.
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    // One 128-bit lane each for a, b, c, d: four partial sums.
    __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    t = _mm512_add_ps(t, _mm512_shuffle_ps(t, t, 0x4E));
    t = _mm512_add_ps(t, _mm512_shuffle_ps(t, t, 0xB1));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0), t));
}

// Several vectors at once, in tiles of 4 rows x 4 vectors (16 accumulators): the 4 rows are
// dequantised once into an L1-sized panel, then every group of 4 vectors runs over it (4 weight
// and 4 x loads feed 16 FMAs). W is read from memory once for all the vectors.
SG_AVX512Q static void qmatmul_avx512(int type, long rows, long k, const unsigned char *w, long row_bytes, long n,
                                      const float *x, long ldx, float *y, long ldy) {
    long blocks = k / 32, bb = type_block_bytes(type);
    float stack_panel[4 * 2048] __attribute__((aligned(64)));
    float *panel = k <= 2048 ? stack_panel : (float *)aligned_alloc(64, (size_t)(4 * k) * sizeof(float));
    long r0 = 0;
    for (; r0 + 4 <= rows; r0 += 4) {
        for (int a = 0; a < 4; a++) dequantize_avx512(type, w + (r0 + a) * row_bytes, k, panel + a * k);
        const float *p0 = panel, *p1 = panel + k, *p2 = panel + 2 * k, *p3 = panel + 3 * k;
        for (long v0 = 0; v0 < n; v0 += 4) {
            long count = n - v0 < 4 ? n - v0 : 4;
            prefetch_share(w + (r0 + 4) * row_bytes, 4 * row_bytes, v0 / 4, (n + 3) / 4);  // the next panel, while this one computes
            const float *x0 = x + v0 * ldx;
            const float *x1 = count > 1 ? x0 + ldx : x0, *x2 = count > 2 ? x0 + 2 * ldx : x0, *x3 = count > 3 ? x0 + 3 * ldx : x0;
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            for (long i = 0; i < k; i += 16) {
                __m512 w0 = _mm512_load_ps(p0 + i), w1 = _mm512_load_ps(p1 + i), w2 = _mm512_load_ps(p2 + i), w3 = _mm512_load_ps(p3 + i);
                __m512 v = _mm512_loadu_ps(x0 + i);
                a00 = _mm512_fmadd_ps(w0, v, a00); a10 = _mm512_fmadd_ps(w1, v, a10);
                a20 = _mm512_fmadd_ps(w2, v, a20); a30 = _mm512_fmadd_ps(w3, v, a30);
                v = _mm512_loadu_ps(x1 + i);
                a01 = _mm512_fmadd_ps(w0, v, a01); a11 = _mm512_fmadd_ps(w1, v, a11);
                a21 = _mm512_fmadd_ps(w2, v, a21); a31 = _mm512_fmadd_ps(w3, v, a31);
                v = _mm512_loadu_ps(x2 + i);
                a02 = _mm512_fmadd_ps(w0, v, a02); a12 = _mm512_fmadd_ps(w1, v, a12);
                a22 = _mm512_fmadd_ps(w2, v, a22); a32 = _mm512_fmadd_ps(w3, v, a32);
                v = _mm512_loadu_ps(x3 + i);
                a03 = _mm512_fmadd_ps(w0, v, a03); a13 = _mm512_fmadd_ps(w1, v, a13);
                a23 = _mm512_fmadd_ps(w2, v, a23); a33 = _mm512_fmadd_ps(w3, v, a33);
            }
            __m128 sums[4] = {reduce4_avx512(a00, a10, a20, a30), reduce4_avx512(a01, a11, a21, a31),
                              reduce4_avx512(a02, a12, a22, a32), reduce4_avx512(a03, a13, a23, a33)};
            for (long v = 0; v < count; v++) _mm_storeu_ps(y + (v0 + v) * ldy + r0, sums[v]);
        }
    }
    for (; r0 < rows; r0++) {
        const unsigned char *row = w + r0 * row_bytes;
        for (long v = 0; v < n; v++) {
            __m512 acc = _mm512_setzero_ps();
            for (long b = 0; b < blocks; b++) {
                __m512 w0, w1;
                block_weights_avx512(type, row + b * bb, &w0, &w1);
                acc = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + v * ldx + 32 * b + 16), _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + v * ldx + 32 * b), acc));
            }
            y[v * ldy + r0] = _mm512_reduce_add_ps(acc);
        }
    }
    if (panel != stack_panel) free(panel);
}

// y = W x as qmatvec_avx2_type: a Q4 block's 16 bytes widen to 16 lanes at once, low nibbles
// elements 0-15 and high nibbles 16-31.
SG_AVX512Q static inline __attribute__((always_inline)) void qmatvec_avx512_type(
        int type, long rows, long k, const unsigned char *w, long row_bytes, const float *x, float *y) {
    long blocks = k / 32, bb = type_block_bytes(type);
    float sums_stack[4 * 256] __attribute__((aligned(16)));
    float *sums = offset_sums(type, blocks, x, sums_stack);
    for (long r = 0; r < rows; r++) {
        const unsigned char *row = w + r * row_bytes;
        __m512 acc = _mm512_setzero_ps();
        __m128 offsets = _mm_setzero_ps();
        for (long b = 0; b < blocks; b++) {
            const unsigned char *blk = row + b * bb;
            const float *xb = x + 32 * b;
            __m512 q0, q1;
            if (type == SG_TYPE_Q8_0) {
                q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
                q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
            } else {
                __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + (type == SG_TYPE_Q4_1 ? 4 : 2))));
                q0 = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(15)));
                q1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4));
            }
            __m128 dm = block_dm_avx2(type, blk);
            __m512 t = _mm512_fmadd_ps(q1, _mm512_loadu_ps(xb + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(xb)));
            acc = _mm512_fmadd_ps(_mm512_broadcastss_ps(dm), t, acc);
            if (type != SG_TYPE_Q8_0) offsets = _mm_fmadd_ps(dm, _mm_load_ps(sums + 4 * b), offsets);
        }
        offsets = _mm_add_ps(offsets, _mm_movehdup_ps(offsets));
        y[r] = _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(offsets);
    }
    if (sums != sums_stack) free(sums);
}

SG_AVX512Q static void qmatvec_avx512(int type, long rows, long k, const unsigned char *w, long row_bytes, const float *x, float *y) {
    switch (type) {
    case SG_TYPE_Q4_0: qmatvec_avx512_type(SG_TYPE_Q4_0, rows, k, w, row_bytes, x, y); break;
    case SG_TYPE_Q4_1: qmatvec_avx512_type(SG_TYPE_Q4_1, rows, k, w, row_bytes, x, y); break;
    default: qmatvec_avx512_type(SG_TYPE_Q8_0, rows, k, w, row_bytes, x, y); break;
    }
}

SG_AVX512Q static void dequantize_avx512(int type, const unsigned char *src, long n, float *dst) {
    long blocks = n / 32;
    if (type == SG_TYPE_Q8_0) {
        for (long b = 0; b < blocks; b++, src += 34) {
            __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(src)));
            _mm512_storeu_ps(dst + 32 * b, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(src + 2))))));
            _mm512_storeu_ps(dst + 32 * b + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(src + 18))))));
        }
        return;
    }
    // A Q4 block's 16 possible values d·q + m (Q4_0: m = -8d) in one register, looked up by each
    // element's nibble (vpermps reads the low 4 bits of an index): one FMA per block instead of
    // a conversion and an FMA per 16 elements, the same values to the bit.
    long bb = type_block_bytes(type), off = type == SG_TYPE_Q4_1 ? 4 : 2;
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (long b = 0; b < blocks; b++, src += bb) {
        __m128 dm = block_dm_avx2(type, src);
        __m512 vd = _mm512_broadcastss_ps(dm);
        __m512 vm = type == SG_TYPE_Q4_1 ? _mm512_broadcastss_ps(_mm_movehdup_ps(dm)) : _mm512_mul_ps(vd, _mm512_set1_ps(-8.0f));
        __m512 table = _mm512_fmadd_ps(vd, iota, vm);
        __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + off)));
        _mm512_storeu_ps(dst + 32 * b, _mm512_permutexvar_ps(bytes, table));
        _mm512_storeu_ps(dst + 32 * b + 16, _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table));
    }
}
#endif

#if SG_X86
// One block's 32 quantised values as floats q (before scale and offset), in four registers.
// Q4: each byte widens to a 32-bit lane (one load-and-widen per 8 bytes); its low nibble is
// element j, its high nibble element j + 16.
SG_AVX2Q static inline __attribute__((always_inline)) void block_values_avx2(int type, const unsigned char *blk, __m256 q[4]) {
    if (type == SG_TYPE_Q8_0) {
        for (int i = 0; i < 4; i++) q[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * i))));
        return;
    }
    const unsigned char *qs = blk + (type == SG_TYPE_Q4_1 ? 4 : 2);
    __m256i b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));
    __m256i b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8)));
    __m256i mask = _mm256_set1_epi32(15);
    q[0] = _mm256_cvtepi32_ps(_mm256_and_si256(b0, mask));
    q[1] = _mm256_cvtepi32_ps(_mm256_and_si256(b1, mask));
    q[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4));
    q[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4));
}

SG_AVX2Q static void dequantize_avx2(int type, const unsigned char *src, long n, float *dst) {
    long bb = type_block_bytes(type);
    for (long b = 0; b < n / 32; b++, src += bb) {
        __m256 q[4];
        block_values_avx2(type, src, q);
        __m128 dm = block_dm_avx2(type, src);
        __m256 vd = _mm256_broadcastss_ps(dm);
        __m256 vm = type == SG_TYPE_Q4_1 ? _mm256_broadcastss_ps(_mm_movehdup_ps(dm))
                                         : _mm256_mul_ps(vd, _mm256_set1_ps(type == SG_TYPE_Q4_0 ? -8.0f : 0.0f));
        for (int i = 0; i < 4; i++) _mm256_storeu_ps(dst + 32 * b + 8 * i, _mm256_fmadd_ps(vd, q[i], vm));
    }
}

// y = W x with the scale applied once per block (d · (q · x)) and the offset through the
// block's x sum (m · Σx, computed once per call).
SG_AVX2Q static inline __attribute__((always_inline)) void qmatvec_avx2_type(
        int type, long rows, long k, const unsigned char *w, long row_bytes, const float *x, float *y) {
    long blocks = k / 32, bb = type_block_bytes(type);
    float sums_stack[4 * 256] __attribute__((aligned(16)));
    float *sums = offset_sums(type, blocks, x, sums_stack);
    for (long r = 0; r < rows; r++) {
        const unsigned char *row = w + r * row_bytes;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        __m128 offsets = _mm_setzero_ps();
        for (long b = 0; b < blocks; b++) {
            const unsigned char *blk = row + b * bb;
            const float *xb = x + 32 * b;
            __m256 q[4];
            block_values_avx2(type, blk, q);
            __m128 dm = block_dm_avx2(type, blk);
            __m256 t0 = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xb + 16), _mm256_mul_ps(q[0], _mm256_loadu_ps(xb)));
            __m256 t1 = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xb + 24), _mm256_mul_ps(q[1], _mm256_loadu_ps(xb + 8)));
            __m256 vd = _mm256_broadcastss_ps(dm);
            acc0 = _mm256_fmadd_ps(vd, t0, acc0);
            acc1 = _mm256_fmadd_ps(vd, t1, acc1);
            if (type != SG_TYPE_Q8_0) offsets = _mm_fmadd_ps(dm, _mm_load_ps(sums + 4 * b), offsets);
        }
        offsets = _mm_add_ps(offsets, _mm_movehdup_ps(offsets));
        y[r] = hsum_avx(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(offsets);
    }
    if (sums != sums_stack) free(sums);
}

SG_AVX2Q static void qmatvec_avx2(int type, long rows, long k, const unsigned char *w, long row_bytes, const float *x, float *y) {
    switch (type) {
    case SG_TYPE_Q4_0: qmatvec_avx2_type(SG_TYPE_Q4_0, rows, k, w, row_bytes, x, y); break;
    case SG_TYPE_Q4_1: qmatvec_avx2_type(SG_TYPE_Q4_1, rows, k, w, row_bytes, x, y); break;
    default: qmatvec_avx2_type(SG_TYPE_Q8_0, rows, k, w, row_bytes, x, y); break;
    }
}
#endif

// ---------------------------------------------------------------------------------------------
// Decoding attention for the query heads that share one key/value head (grouped-query
// attention): each cached key and value row is loaded once for all of them. Scores run in tiles
// of 4 positions x up to 4 queries (AVX2: 2), whose dot products are summed across lanes four
// at a time; values in chunks of 64 (AVX2: 32) columns. Cached rows hold fp32 or fp16 (`half`,
// a constant in each caller after inlining): fp16 rows widen to fp32 as they load.

#if SG_X86
SG_AVX512Q static inline __attribute__((always_inline)) __m512 load_kv16(const void *row, long d, int half) {
    return half ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const unsigned short *)row + d)))
                : _mm512_loadu_ps((const float *)row + d);
}

// Row j of rows `ld` elements apart.
static inline __attribute__((always_inline)) const void *kv_row(const void *rows, long j, long ld, int half) {
    return (const char *)rows + j * ld * (half ? 2 : 4);
}

// Scores of `m` queries (a constant after inlining) against 4 positions of keys k[0..3].
SG_AVX512Q static inline __attribute__((always_inline)) void scores_tile_avx512(
        int m, int half, long hd, const float *q, long ldq, const void *const k[4], float scale, float *out, long ldo, long count) {
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++) for (int p = 0; p < 4; p++) acc[i][p] = _mm512_setzero_ps();
    for (long d = 0; d < hd; d += 16) {
        __m512 key[4] = {load_kv16(k[0], d, half), load_kv16(k[1], d, half), load_kv16(k[2], d, half), load_kv16(k[3], d, half)};
        for (int i = 0; i < 4; i++) {
            if (i >= m) break;
            __m512 query = _mm512_loadu_ps(q + i * ldq + d);
            for (int p = 0; p < 4; p++) acc[i][p] = _mm512_fmadd_ps(query, key[p], acc[i][p]);
        }
    }
    for (int i = 0; i < m; i++) {
        __m128 s = _mm_mul_ps(reduce4_avx512(acc[i][0], acc[i][1], acc[i][2], acc[i][3]), _mm_set1_ps(scale));
        if (count == 4) { _mm_storeu_ps(out + i * ldo, s); continue; }
        float lanes[4];
        _mm_storeu_ps(lanes, s);
        for (long p = 0; p < count; p++) out[i * ldo + p] = lanes[p];
    }
}

SG_AVX512Q static inline __attribute__((always_inline)) void attention_scores_avx512(
        int half, long nq, long n, long hd, const float *q, long ldq, const void *keys, long ld, float scale, float *out, long ldo) {
    for (long i0 = 0; i0 < nq; i0 += 4) {
        long m = nq - i0 < 4 ? nq - i0 : 4;
        for (long j = 0; j < n; j += 4) {
            long count = n - j < 4 ? n - j : 4;
            // A tile past the last position repeats it (computed, not stored).
            const void *k[4];
            for (long p = 0; p < 4; p++) k[p] = kv_row(keys, j + (p < count ? p : count - 1), ld, half);
            const float *qi = q + i0 * ldq;
            float *o = out + i0 * ldo + j;
            switch (m) {
            case 1: scores_tile_avx512(1, half, hd, qi, ldq, k, scale, o, ldo, count); break;
            case 2: scores_tile_avx512(2, half, hd, qi, ldq, k, scale, o, ldo, count); break;
            case 3: scores_tile_avx512(3, half, hd, qi, ldq, k, scale, o, ldo, count); break;
            default: scores_tile_avx512(4, half, hd, qi, ldq, k, scale, o, ldo, count); break;
            }
        }
    }
}

// out[i][c..] += Σ_j w[i][j] · values[j][c..] for `m` queries and `vecs` registers of 16 columns.
SG_AVX512Q static inline __attribute__((always_inline)) void values_tile_avx512(
        int m, int vecs, int half, long n, const float *w, long ldw, const void *values, long ld, float *out, long ldout) {
    __m512 acc[4][4];
    for (int i = 0; i < m; i++) for (int c = 0; c < vecs; c++) acc[i][c] = _mm512_loadu_ps(out + i * ldout + 16 * c);
    for (long j = 0; j < n; j++) {
        __m512 v[4];
        const void *row = kv_row(values, j, ld, half);
        for (int c = 0; c < vecs; c++) v[c] = load_kv16(row, 16 * c, half);
        for (int i = 0; i < m; i++) {
            __m512 weight = _mm512_set1_ps(w[i * ldw + j]);
            for (int c = 0; c < vecs; c++) acc[i][c] = _mm512_fmadd_ps(weight, v[c], acc[i][c]);
        }
    }
    for (int i = 0; i < m; i++) for (int c = 0; c < vecs; c++) _mm512_storeu_ps(out + i * ldout + 16 * c, acc[i][c]);
}

SG_AVX512Q static inline __attribute__((always_inline)) void attention_values_avx512(
        int half, long nq, long n, long hd, const float *w, long ldw, const void *values, long ld, float *out, long ldout) {
    for (long d = 0; d < hd;) {
        int vecs = hd - d >= 64 ? 4 : 1;
        const void *column = (const char *)values + d * (half ? 2 : 4);
        for (long i0 = 0; i0 < nq; i0 += 4) {
            long m = nq - i0 < 4 ? nq - i0 : 4;
            const float *wi = w + i0 * ldw;
            float *o = out + i0 * ldout + d;
            if (vecs == 4) {
                switch (m) {
                case 1: values_tile_avx512(1, 4, half, n, wi, ldw, column, ld, o, ldout); break;
                case 2: values_tile_avx512(2, 4, half, n, wi, ldw, column, ld, o, ldout); break;
                case 3: values_tile_avx512(3, 4, half, n, wi, ldw, column, ld, o, ldout); break;
                default: values_tile_avx512(4, 4, half, n, wi, ldw, column, ld, o, ldout); break;
                }
            } else {
                values_tile_avx512((int)m, 1, half, n, wi, ldw, column, ld, o, ldout);
            }
        }
        d += 16 * vecs;
    }
}

SG_AVX2Q static inline __attribute__((always_inline)) __m256 load_kv8(const void *row, long d, int half) {
    return half ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const unsigned short *)row + d)))
                : _mm256_loadu_ps((const float *)row + d);
}

// The sums of the 8 lanes of a, b, c and d, as one vector of 4.
SG_AVX2 static inline __m128 reduce4_avx2(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

SG_AVX2Q static inline __attribute__((always_inline)) void scores_tile_avx2(
        int m, int half, long hd, const float *q, long ldq, const void *const k[4], float scale, float *out, long ldo, long count) {
    __m256 acc[2][4];
    for (int i = 0; i < 2; i++) for (int p = 0; p < 4; p++) acc[i][p] = _mm256_setzero_ps();
    for (long d = 0; d < hd; d += 8) {
        __m256 key[4] = {load_kv8(k[0], d, half), load_kv8(k[1], d, half), load_kv8(k[2], d, half), load_kv8(k[3], d, half)};
        for (int i = 0; i < m; i++) {
            __m256 query = _mm256_loadu_ps(q + i * ldq + d);
            for (int p = 0; p < 4; p++) acc[i][p] = _mm256_fmadd_ps(query, key[p], acc[i][p]);
        }
    }
    for (int i = 0; i < m; i++) {
        __m128 s = _mm_mul_ps(reduce4_avx2(acc[i][0], acc[i][1], acc[i][2], acc[i][3]), _mm_set1_ps(scale));
        if (count == 4) { _mm_storeu_ps(out + i * ldo, s); continue; }
        float lanes[4];
        _mm_storeu_ps(lanes, s);
        for (long p = 0; p < count; p++) out[i * ldo + p] = lanes[p];
    }
}

SG_AVX2Q static inline __attribute__((always_inline)) void attention_scores_avx2(
        int half, long nq, long n, long hd, const float *q, long ldq, const void *keys, long ld, float scale, float *out, long ldo) {
    for (long i0 = 0; i0 < nq; i0 += 2) {
        for (long j = 0; j < n; j += 4) {
            long count = n - j < 4 ? n - j : 4;
            const void *k[4];
            for (long p = 0; p < 4; p++) k[p] = kv_row(keys, j + (p < count ? p : count - 1), ld, half);
            if (nq - i0 >= 2) scores_tile_avx2(2, half, hd, q + i0 * ldq, ldq, k, scale, out + i0 * ldo + j, ldo, count);
            else scores_tile_avx2(1, half, hd, q + i0 * ldq, ldq, k, scale, out + i0 * ldo + j, ldo, count);
        }
    }
}

SG_AVX2Q static inline __attribute__((always_inline)) void values_tile_avx2(
        int m, int vecs, int half, long n, const float *w, long ldw, const void *values, long ld, float *out, long ldout) {
    __m256 acc[2][4];
    for (int i = 0; i < m; i++) for (int c = 0; c < vecs; c++) acc[i][c] = _mm256_loadu_ps(out + i * ldout + 8 * c);
    for (long j = 0; j < n; j++) {
        __m256 v[4];
        const void *row = kv_row(values, j, ld, half);
        for (int c = 0; c < vecs; c++) v[c] = load_kv8(row, 8 * c, half);
        for (int i = 0; i < m; i++) {
            __m256 weight = _mm256_broadcast_ss(w + i * ldw + j);
            for (int c = 0; c < vecs; c++) acc[i][c] = _mm256_fmadd_ps(weight, v[c], acc[i][c]);
        }
    }
    for (int i = 0; i < m; i++) for (int c = 0; c < vecs; c++) _mm256_storeu_ps(out + i * ldout + 8 * c, acc[i][c]);
}

SG_AVX2Q static inline __attribute__((always_inline)) void attention_values_avx2(
        int half, long nq, long n, long hd, const float *w, long ldw, const void *values, long ld, float *out, long ldout) {
    for (long d = 0; d < hd;) {
        int vecs = hd - d >= 32 ? 4 : 1;
        const void *column = (const char *)values + d * (half ? 2 : 4);
        for (long i0 = 0; i0 < nq; i0 += 2) {
            int m = nq - i0 >= 2 ? 2 : 1;
            const float *wi = w + i0 * ldw;
            float *o = out + i0 * ldout + d;
            if (vecs == 4) {
                if (m == 2) values_tile_avx2(2, 4, half, n, wi, ldw, column, ld, o, ldout);
                else values_tile_avx2(1, 4, half, n, wi, ldw, column, ld, o, ldout);
            } else {
                values_tile_avx2(m, 1, half, n, wi, ldw, column, ld, o, ldout);
            }
        }
        d += 8 * vecs;
    }
}

// One entry point per ISA and kind, `half` a constant in each branch (so each loop is compiled
// for one element type).
SG_AVX512Q static void attention_scores_avx512_any(int half, long nq, long n, long hd, const float *q, long ldq, const void *keys, long ld,
                                                   float scale, float *out, long ldo) {
    if (half) attention_scores_avx512(1, nq, n, hd, q, ldq, keys, ld, scale, out, ldo);
    else attention_scores_avx512(0, nq, n, hd, q, ldq, keys, ld, scale, out, ldo);
}
SG_AVX2Q static void attention_scores_avx2_any(int half, long nq, long n, long hd, const float *q, long ldq, const void *keys, long ld,
                                               float scale, float *out, long ldo) {
    if (half) attention_scores_avx2(1, nq, n, hd, q, ldq, keys, ld, scale, out, ldo);
    else attention_scores_avx2(0, nq, n, hd, q, ldq, keys, ld, scale, out, ldo);
}
SG_AVX512Q static void attention_values_avx512_any(int half, long nq, long n, long hd, const float *w, long ldw, const void *values, long ld,
                                                   float *out, long ldout) {
    if (half) attention_values_avx512(1, nq, n, hd, w, ldw, values, ld, out, ldout);
    else attention_values_avx512(0, nq, n, hd, w, ldw, values, ld, out, ldout);
}
SG_AVX2Q static void attention_values_avx2_any(int half, long nq, long n, long hd, const float *w, long ldw, const void *values, long ld,
                                               float *out, long ldout) {
    if (half) attention_values_avx2(1, nq, n, hd, w, ldw, values, ld, out, ldout);
    else attention_values_avx2(0, nq, n, hd, w, ldw, values, ld, out, ldout);
}
#endif

// Element `c` of cached row j.
static inline float kv_element(const void *rows, long j, long ld, long c, int half) {
    return half ? sg_half_to_float(((const unsigned short *)rows)[j * ld + c]) : ((const float *)rows)[j * ld + c];
}

void sg_attention_scores(int isa, int half, long nq, long n, long hd, const float *q, long ldq, const void *keys, long ld,
                         float scale, float *out, long ldo) {
#if SG_X86
    if (isa == SG_ISA_AVX512 && hd % 16 == 0) { attention_scores_avx512_any(half, nq, n, hd, q, ldq, keys, ld, scale, out, ldo); return; }
    if (isa >= SG_ISA_AVX2_FMA && hd % 8 == 0) { attention_scores_avx2_any(half, nq, n, hd, q, ldq, keys, ld, scale, out, ldo); return; }
#endif
    for (long i = 0; i < nq; i++)
        for (long j = 0; j < n; j++) {
            if (!half) { out[i * ldo + j] = sg_dot(isa, hd, q + i * ldq, (const float *)keys + j * ld) * scale; continue; }
            float sum = 0;
            for (long c = 0; c < hd; c++) sum += q[i * ldq + c] * kv_element(keys, j, ld, c, 1);
            out[i * ldo + j] = sum * scale;
        }
}

void sg_attention_values(int isa, int half, long nq, long n, long hd, const float *weights, long ldw, const void *values, long ld,
                         float *out, long ldout) {
#if SG_X86
    if (isa == SG_ISA_AVX512 && hd % 16 == 0) { attention_values_avx512_any(half, nq, n, hd, weights, ldw, values, ld, out, ldout); return; }
    if (isa >= SG_ISA_AVX2_FMA && hd % 8 == 0) { attention_values_avx2_any(half, nq, n, hd, weights, ldw, values, ld, out, ldout); return; }
#endif
    (void)isa;
    for (long i = 0; i < nq; i++)
        for (long j = 0; j < n; j++)
            for (long c = 0; c < hd; c++) out[i * ldout + c] += weights[i * ldw + j] * kv_element(values, j, ld, c, half);
}

// Round to nearest even, as F16C's conversion: overflow to infinity, NaN kept quiet.
unsigned short sg_float_to_half(float f) {
    unsigned int x;
    memcpy(&x, &f, 4);
    unsigned int sign = (x >> 16) & 0x8000, magnitude = x & 0x7FFFFFFF;
    if (magnitude >= 0x7F800000) return (unsigned short)(sign | (magnitude > 0x7F800000 ? 0x7E00 | ((magnitude >> 13) & 0x3FF) : 0x7C00));
    if (magnitude >= 0x477FF000) return (unsigned short)(sign | 0x7C00);  // 65520 and up round to infinity
    if (magnitude < 0x38800000) {  // below fp16's smallest normal: a subnormal or zero
        if (magnitude < 0x33000000) return (unsigned short)sign;  // below 2^-25
        unsigned int exponent = magnitude >> 23, mantissa = (magnitude & 0x7FFFFF) | 0x800000, shift = 126 - exponent;
        unsigned int r = mantissa >> shift, rest = mantissa & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (r & 1))) r++;
        return (unsigned short)(sign | r);
    }
    unsigned int r = (magnitude - 0x38000000) >> 13, rest = magnitude & 0x1FFF;
    if (rest > 0x1000 || (rest == 0x1000 && (r & 1))) r++;
    return (unsigned short)(sign | r);
}

#if SG_X86
SG_AVX2Q static void to_half_f16c(long n, const float *src, unsigned short *dst) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = sg_float_to_half(src[i]);
}

SG_AVX2Q static void from_half_f16c(long n, const unsigned short *src, float *dst) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = sg_half_to_float(src[i]);
}
#endif

void sg_to_half(int isa, long n, const float *src, unsigned short *dst) {
#if SG_X86
    if (isa >= SG_ISA_AVX2_FMA) { to_half_f16c(n, src, dst); return; }
#endif
    (void)isa;
    for (long i = 0; i < n; i++) dst[i] = sg_float_to_half(src[i]);
}

void sg_from_half(int isa, long n, const unsigned short *src, float *dst) {
#if SG_X86
    if (isa >= SG_ISA_AVX2_FMA) { from_half_f16c(n, src, dst); return; }
#endif
    (void)isa;
    for (long i = 0; i < n; i++) dst[i] = sg_half_to_float(src[i]);
}

void sg_dequantize(int isa, int type, const void *src, long n, float *dst) {
#if SG_X86
    if (isa == SG_ISA_AVX512 && type_block_bytes(type) > 0) { dequantize_avx512(type, (const unsigned char *)src, n, dst); return; }
    if (isa == SG_ISA_AVX2_FMA && type_block_bytes(type) > 0) { dequantize_avx2(type, (const unsigned char *)src, n, dst); return; }
#endif
    (void)isa;
    dequantize_portable(type, (const unsigned char *)src, n, dst);
}

#if SG_X86
// dst[i · ldd + j] = src[j · lds + i] for an 8 x 8 block, in registers.
SG_AVX2 static inline void transpose8_avx2(const float *src, long lds, float *dst, long ldd) {
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i += 2) { t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]); t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]); }
    // u[0..3]: columns (0|4), (1|5), (2|6), (3|7) of rows 0-3; u[4..7] the same of rows 4-7.
    for (int h = 0; h < 8; h += 4) {
        u[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
        u[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);
        u[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
        u[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        _mm256_storeu_ps(dst + c * ldd, _mm256_permute2f128_ps(u[c], u[c + 4], 0x20));
        _mm256_storeu_ps(dst + (c + 4) * ldd, _mm256_permute2f128_ps(u[c], u[c + 4], 0x31));
    }
}
#endif

#if SG_X86
// Four rows x 8 columns transposed in registers: eight 4-float columns, stored mr apart.
SG_AVX2 static void pack_a_avx2(long rows, long columns, const float *a, long lda, long mr, float *dst) {
    long p = 0;
    for (; p + 8 <= columns; p += 8) {
        for (long i = 0; i < rows; i += 4) {
            __m256 r0 = _mm256_loadu_ps(a + i * lda + p), r1 = _mm256_loadu_ps(a + (i + 1) * lda + p);
            __m256 r2 = _mm256_loadu_ps(a + (i + 2) * lda + p), r3 = _mm256_loadu_ps(a + (i + 3) * lda + p);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            // Columns (0|4), (1|5), (2|6), (3|7) of the four rows.
            __m256 c04 = _mm256_shuffle_ps(t0, t2, 0x44), c15 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 c26 = _mm256_shuffle_ps(t1, t3, 0x44), c37 = _mm256_shuffle_ps(t1, t3, 0xEE);
            float *d = dst + p * mr + i;
            _mm_storeu_ps(d, _mm256_castps256_ps128(c04));
            _mm_storeu_ps(d + mr, _mm256_castps256_ps128(c15));
            _mm_storeu_ps(d + 2 * mr, _mm256_castps256_ps128(c26));
            _mm_storeu_ps(d + 3 * mr, _mm256_castps256_ps128(c37));
            _mm_storeu_ps(d + 4 * mr, _mm256_extractf128_ps(c04, 1));
            _mm_storeu_ps(d + 5 * mr, _mm256_extractf128_ps(c15, 1));
            _mm_storeu_ps(d + 6 * mr, _mm256_extractf128_ps(c26, 1));
            _mm_storeu_ps(d + 7 * mr, _mm256_extractf128_ps(c37, 1));
        }
    }
    for (; p < columns; p++)
        for (long i = 0; i < rows; i++) dst[p * mr + i] = a[i * lda + p];
}
#endif

void sg_pack_a(int isa, long rows, long columns, const float *a, long lda, long mr, float *dst) {
    if (rows < mr) memset(dst, 0, (size_t)(columns * mr) * sizeof(float));
#if SG_X86
    if (rows % 4 == 0 && mr % 4 == 0 && isa >= SG_ISA_AVX2_FMA) { pack_a_avx2(rows, columns, a, lda, mr, dst); return; }
#endif
    (void)isa;
    for (long i = 0; i < rows; i++)
        for (long p = 0; p < columns; p++) dst[p * mr + i] = a[i * lda + p];
}

#if SG_X86
// dst[p · ldd + j] = src[p · lds + j] for j < columns (a multiple of 8), p < rows.
SG_AVX2 static void copy_rows8_avx2(long rows, long columns, const float *src, long lds, float *dst, long ldd) {
    for (long p = 0; p < rows; p++)
        for (long j = 0; j < columns; j += 8) _mm256_storeu_ps(dst + p * ldd + j, _mm256_loadu_ps(src + p * lds + j));
}
#endif

void sg_pack_b_panels(int isa, long rows, long columns, const float *restrict b, long ldb, long nr, float *restrict dst) {
    long panels = (columns + nr - 1) / nr;
    for (long p0 = 0; p0 < rows; p0 += 8) {
        long count = rows - p0 < 8 ? rows - p0 : 8;
        for (long q = 0; q < panels; q++) {
            long width = columns - q * nr < nr ? columns - q * nr : nr;
            float *d = dst + q * rows * nr + p0 * nr;
            const float *s = b + p0 * ldb + q * nr;
            long j0 = 0;
#if SG_X86
            // Whole 8-float columns by vector copies (a memcpy call per row of a panel cost 3.5%).
            if (isa >= SG_ISA_AVX2_FMA) copy_rows8_avx2(count, j0 = width / 8 * 8, s, ldb, d, nr);
#endif
            for (long p = 0; p < count; p++) {
                for (long j = j0; j < width; j++) d[p * nr + j] = s[p * ldb + j];
                for (long j = width; j < nr; j++) d[p * nr + j] = 0.0f;
            }
        }
    }
}

void sg_pack_b(int isa, int transposed, long rows, long columns, const float *restrict b, long ldb, long nr, float *restrict dst) {
    if (!transposed) {
        sg_pack_b_panels(isa, rows, columns, b, ldb, nr, dst);
        return;
    }
    if (columns < nr) memset(dst, 0, (size_t)(rows * nr) * sizeof(float));
    (void)isa;
    long p = 0, j0 = 0;  // vector code did rows [0, p), columns [0, j0)
#if SG_X86
    if (isa >= SG_ISA_AVX2_FMA) {
        for (; p + 8 <= rows; p += 8)
            for (long j = 0; j + 8 <= columns; j += 8) transpose8_avx2(b + j * ldb + p, ldb, dst + p * nr + j, nr);
        j0 = columns / 8 * 8;
    }
#endif
    for (long q = 0; q < rows; q++)
        for (long j = q < p ? j0 : 0; j < columns; j++) dst[q * nr + j] = b[j * ldb + q];
}

// Packs W's rows w[0..columns) (each row_bytes long, columns <= 32, a type of 32-element blocks),
// elements [32 · first_block, + rows), as the gemm's B panel: dst[p · nr + j] =
// W[j][32 · first_block + p]. A block of 32 elements of
// every row is dequantised into an L1 tile first, then written out a panel row at a time, so
// the stores run along the panel instead of striding across it.

void sg_pack_quantized(int isa, int type, const void *w, long row_bytes, long first_block, long rows, long columns, long nr,
                       float *dst) {
    long bb = type_block_bytes(type);
    float tile[32 * 32] __attribute__((aligned(64)));
    for (long p0 = 0; p0 < rows; p0 += 32) {
        const unsigned char *block = (const unsigned char *)w + (first_block + p0 / 32) * bb;
        for (long j = 0; j < columns; j++) sg_dequantize(isa, type, block + j * row_bytes, 32, tile + 32 * j);
        long count = rows - p0 < 32 ? rows - p0 : 32, p = 0, j0 = 0;
#if SG_X86
        if (isa >= SG_ISA_AVX2_FMA) {
            // Whole 8 x 8 blocks transposed in registers; the ragged edges below.
            for (; p + 8 <= count; p += 8)
                for (long j = 0; j + 8 <= columns; j += 8) transpose8_avx2(tile + 32 * j + p, 32, dst + (p0 + p) * nr + j, nr);
            j0 = columns / 8 * 8;
        }
#endif
        for (long q = 0; q < count; q++) {
            float *out = dst + (p0 + q) * nr;
            for (long j = q < p ? j0 : 0; j < columns; j++) out[j] = tile[32 * j + q];
        }
    }
}

#if SG_X86
// The AVX2 form of qmatmul_avx512: three rows dequantised once into an L1 panel, then tiles of
// 3 rows x 4 vectors (12 accumulators, 3 weight and 1 x register: all 16 ymm) run over it.
SG_AVX2Q static void qmatmul_avx2(int type, long rows, long k, const unsigned char *w, long row_bytes, long n,
                                  const float *x, long ldx, float *y, long ldy) {
    float stack_panel[3 * 4096] __attribute__((aligned(32)));
    float *panel = k <= 4096 ? stack_panel : (float *)aligned_alloc(32, (size_t)(3 * k) * sizeof(float));
    long r0 = 0;
    for (; r0 + 3 <= rows; r0 += 3) {
        for (int r = 0; r < 3; r++) dequantize_avx2(type, w + (r0 + r) * row_bytes, k, panel + r * k);
        const float *p0 = panel, *p1 = panel + k, *p2 = panel + 2 * k;
        for (long v0 = 0; v0 < n; v0 += 4) {
            long count = n - v0 < 4 ? n - v0 : 4;
            prefetch_share(w + (r0 + 3) * row_bytes, 3 * row_bytes, v0 / 4, (n + 3) / 4);  // the next panel, while this one computes
            const float *x0 = x + v0 * ldx;
            const float *x1 = count > 1 ? x0 + ldx : x0, *x2 = count > 2 ? x0 + 2 * ldx : x0, *x3 = count > 3 ? x0 + 3 * ldx : x0;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m256 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            for (long i = 0; i < k; i += 8) {
                __m256 w0 = _mm256_load_ps(p0 + i), w1 = _mm256_load_ps(p1 + i), w2 = _mm256_load_ps(p2 + i), v;
                v = _mm256_loadu_ps(x0 + i);
                a00 = _mm256_fmadd_ps(w0, v, a00); a10 = _mm256_fmadd_ps(w1, v, a10); a20 = _mm256_fmadd_ps(w2, v, a20);
                v = _mm256_loadu_ps(x1 + i);
                a01 = _mm256_fmadd_ps(w0, v, a01); a11 = _mm256_fmadd_ps(w1, v, a11); a21 = _mm256_fmadd_ps(w2, v, a21);
                v = _mm256_loadu_ps(x2 + i);
                a02 = _mm256_fmadd_ps(w0, v, a02); a12 = _mm256_fmadd_ps(w1, v, a12); a22 = _mm256_fmadd_ps(w2, v, a22);
                v = _mm256_loadu_ps(x3 + i);
                a03 = _mm256_fmadd_ps(w0, v, a03); a13 = _mm256_fmadd_ps(w1, v, a13); a23 = _mm256_fmadd_ps(w2, v, a23);
            }
            __m256 sums[4][3] = {{a00, a10, a20}, {a01, a11, a21}, {a02, a12, a22}, {a03, a13, a23}};
            for (long v = 0; v < count; v++)
                for (int r = 0; r < 3; r++) y[(v0 + v) * ldy + r0 + r] = hsum_avx(sums[v][r]);
        }
    }
    for (; r0 < rows; r0++) {
        dequantize_avx2(type, w + r0 * row_bytes, k, panel);
        for (long v = 0; v < n; v++) y[v * ldy + r0] = dot_avx2(k, panel, x + v * ldx);
    }
    if (panel != stack_panel) free(panel);
}
#endif

void sg_quantized_matmul(int isa, int type, long rows, long k, const void *w, long row_bytes, long n,
                         const float *x, long ldx, float *y, long ldy) {
#if SG_X86
    if (isa == SG_ISA_AVX512 && type_block_bytes(type) > 0) {
        qmatmul_avx512(type, rows, k, (const unsigned char *)w, row_bytes, n, x, ldx, y, ldy);
        return;
    }
    if (isa == SG_ISA_AVX2_FMA && type_block_bytes(type) > 0) {
        qmatmul_avx2(type, rows, k, (const unsigned char *)w, row_bytes, n, x, ldx, y, ldy);
        return;
    }
#endif
    // Other types and the portable path: one row at a time into a stack buffer, then a dot product per vector.
    float row_buffer[4096];
    float *buffer = k <= 4096 ? row_buffer : (float *)malloc((size_t)k * sizeof(float));
    for (long r = 0; r < rows; r++) {
        sg_dequantize(isa, type, (const unsigned char *)w + r * row_bytes, k, buffer);
        for (long v = 0; v < n; v++) y[v * ldy + r] = sg_dot(isa, k, buffer, x + v * ldx);
    }
    if (buffer != row_buffer) free(buffer);
}

void sg_quantized_matvec(int isa, int type, long rows, long k, const void *w, long row_bytes,
                         const float *x, float *y) {
#if SG_X86
    if (isa == SG_ISA_AVX512 && type_block_bytes(type) > 0) {
        qmatvec_avx512(type, rows, k, (const unsigned char *)w, row_bytes, x, y);
        return;
    }
    if (isa == SG_ISA_AVX2_FMA && type_block_bytes(type) > 0) {
        qmatvec_avx2(type, rows, k, (const unsigned char *)w, row_bytes, x, y);
        return;
    }
#endif
    // Other types and the portable path: dequantise one row at a time into a stack buffer, then a dot product.
    float row_buffer[4096];
    float *buffer = k <= 4096 ? row_buffer : (float *)malloc((size_t)k * sizeof(float));
    for (long r = 0; r < rows; r++) {
        dequantize_portable(type, (const unsigned char *)w + r * row_bytes, k, buffer);
        y[r] = sg_dot(isa, k, buffer, x);
    }
    if (buffer != row_buffer) free(buffer);
}
