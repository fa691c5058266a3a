// The innermost loops of SwiftGPT's numeric kernels, and nothing above them.
//
// Each hot function exists twice: a portable C version the compiler vectorises for whatever the
// build targets (SSE2 on baseline x86-64, NEON on arm64), and an x86-64 version compiled with
// __attribute__((target("avx2,fma"))) so that a plain `swift build` gets FMA code without any
// build flags. The `isa` argument picks one; `sg_best_isa()` says what this CPU can run.
#ifndef SWIFTGPT_CKERNELS_H
#define SWIFTGPT_CKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction sets the kernels can be run with.
enum { SG_ISA_PORTABLE = 0, SG_ISA_AVX2_FMA = 1, SG_ISA_AVX512 = 2 };

/// The fastest instruction set this CPU supports (checked once with cpuid).
int sg_best_isa(void);

/// The microkernel over `tiles` row tiles x `panels` column panels of one block, panel by panel:
/// A's tile t packed at a + t·kc·MR, B's panel p at b + p·kc·NR, C's tile (t, p) at
/// c + t·MR·ldc + p·NR; `rows` and `columns` in all (the last tile and panel may be partial).
void sg_gemm_block(int isa, long kc, long tiles, long panels, const float *a, const float *b, float *c, long ldc, long rows,
                   long columns, float alpha, float beta);

/// Rows (mr) and columns (nr) of the gemm microkernel's register tile for an instruction set:
/// 6 x 16 for portable, 4 x 24 for AVX2 (12 ymm accumulators), 12 x 32 for AVX-512 (24 zmm).
void sg_gemm_tile(int isa, int *mr, int *nr);

/// The portable tile, and the AVX2 one.
enum { SG_GEMM_MR = 6, SG_GEMM_NR = 16, SG_GEMM_AVX2_MR = 4, SG_GEMM_AVX2_NR = 24 };

/// GFLOP/s of a loop of independent FMAs with the widest vectors of `isa`, over about
/// `iterations` x 24 vector FMAs: this core's fp32 peak, the ceiling for gemm.
double sg_fma_peak_gflops(int isa, long iterations);

/// The gemm microkernel: one MR x NR tile of C from packed panels.
///
/// `a` is an MR x kc panel packed column by column (a[p*MR + i] = A[i][p]); `b` is a kc x NR
/// panel packed row by row (b[p*NR + j] = B[p][j]), 64-byte aligned; both zero-padded past
/// mr / nr. MR and NR are the tile of `isa` (sg_gemm_tile).
/// Computes C[i][j] = alpha * sum_p A[i][p] B[p][j] + beta * C[i][j] for i < mr, j < nr,
/// where C is row-major with leading dimension ldc. With beta == 0, C is not read.
void sg_gemm_micro(int isa, long kc, const float *a, const float *b, float *c, long ldc,
                   int mr, int nr, float alpha, float beta);

/// y[r] = alpha * dot(A[r, 0..<k], x) + beta * y[r] for r < rows; A row-major with leading
/// dimension lda. With beta == 0, y is not read.
void sg_matvec(int isa, long rows, long k, const float *a, long lda, const float *x,
               float *y, float alpha, float beta);

/// sum_i x[i] * y[i], accumulated in float with several partial sums.
float sg_dot(int isa, long n, const float *x, const float *y);

/// y[i] = exp(x[i]) (y may be x). The SIMD forms use a degree-6 polynomial after range
/// reduction: relative error about 2e-7. Inputs are clamped to [-87.3, 88] in every form, so
/// results stay finite and normal (e^88 = 1.65e38).
void sg_exp(int isa, long n, const float *x, float *y);

/// Softmax of a row in place (stable: the maximum is subtracted); returns ln Σ exp(x), the
/// row's log-sum-exp, taken before the row is overwritten.
float sg_softmax_row(int isa, long n, float *x);

/// Σ exp((x[i] - shift) · scale), writing each term to y[i] unless y is NULL (the sampler's
/// weights at a temperature, or a log-sum-exp without a copy of the row).
float sg_exp_shifted(int isa, long n, const float *x, float shift, float scale, float *y);

/// The largest of x[0..<n] (n >= 1).
float sg_max(long n, const float *x);

/// GELU, tanh form: y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))).
void sg_gelu_forward(int isa, long n, const float *x, float *y);

/// dx[i] += gelu'(x[i]) * dy[i].
void sg_gelu_backward(int isa, long n, const float *x, const float *dy, float *dx);

/// GGML tensor types the quantised kernels take (the values are GGML's type codes).
enum { SG_TYPE_F32 = 0, SG_TYPE_F16 = 1, SG_TYPE_Q4_0 = 2, SG_TYPE_Q4_1 = 3, SG_TYPE_Q8_0 = 8, SG_TYPE_BF16 = 30 };

/// Expands `n` elements (a multiple of 32 for the block types) of a GGML tensor to floats.
///   Q8_0: blocks of {f16 d; i8 q[32]}: x = d q
///   Q4_0: blocks of {f16 d; u8 q[16]}: x[j] = d ((q[j] & 15) - 8), x[j+16] = d ((q[j] >> 4) - 8)
///   Q4_1: blocks of {f16 d; f16 m; u8 q[16]}: x[j] = d (q[j] & 15) + m, x[j+16] = d (q[j] >> 4) + m
void sg_dequantize(int isa, int type, const void *src, long n, float *dst);

/// y[r] = Σ_i W[r][i] x[i] for r < rows, W a GGML tensor of `rows` rows of `k` elements
/// (`row_bytes` apart), dequantised block by block inside the loop; x stays in fp32.
void sg_quantized_matvec(int isa, int type, long rows, long k, const void *w, long row_bytes,
                         const float *x, float *y);

/// y[v][r] = Σ_i W[r][i] x[v][i] for r < rows and v < n vectors (x rows `ldx` apart, y rows
/// `ldy` apart): a few rows of activations times a GGML tensor, W read once for all of them.
void sg_quantized_matmul(int isa, int type, long rows, long k, const void *w, long row_bytes, long n,
                         const float *x, long ldx, float *y, long ldy);

/// The gemm's A panel: rows [0, rows) of a row-major matrix (rows `lda` apart, rows <= mr),
/// elements [0, columns), stored column by column: dst[p · mr + i] = a[i · lda + p], rows past
/// `rows` zero.
void sg_pack_a(int isa, long rows, long columns, const float *a, long lda, long mr, float *dst);

/// The gemm's B panel: op(B)[0..rows) x [0..columns) (columns <= nr) stored row by row,
/// dst[p · nr + j] = op(B)[p][j], columns past `columns` zero. op(B)[p][j] is b[p · ldb + j], or
/// b[j · ldb + p] when `transposed`.
void sg_pack_b(int isa, int transposed, long rows, long columns, const float *b, long ldb, long nr, float *dst);

/// Several B panels at once, B not transposed: columns [0, columns) cut into nr-wide panels, panel
/// q at dst + q · rows · nr laid out as `sg_pack_b`'s (the last one zero past `columns`). B is
/// read eight rows at a time across all the panels, along its rows (one panel at a time reads
/// a few floats of every row and comes back to the same lines for the next panel).
void sg_pack_b_panels(int isa, long rows, long columns, const float *b, long ldb, long nr, float *dst);

/// The gemm's B panel from a GGML tensor of 32-element blocks (Q4_0, Q4_1, Q8_0): its rows
/// w[0..columns) (row_bytes apart, columns <= 32), elements
/// [32 · first_block, 32 · first_block + rows): dst[p · nr + j] = W[j][32 · first_block + p].
void sg_pack_quantized(int isa, int type, const void *w, long row_bytes, long first_block, long rows, long columns, long nr,
                       float *dst);

/// Decoding attention over one run of n cached positions (rows `ld` apart) for nq query heads that
/// share a key/value head of size hd (queries `ldq` apart): out[i][j] = scale · q[i] · keys[j]
/// (rows of out `ldo` apart), and out[i] += Σ_j weights[i][j] · values[j] (weights rows `ldw`
/// apart, out rows `ldout` apart). Each key and value row is read once for all the queries.
/// Key and value rows hold fp32, or fp16 when `half` is nonzero (`ld` counts elements).
void sg_attention_scores(int isa, int half, long nq, long n, long hd, const float *q, long ldq, const void *keys, long ld,
                         float scale, float *out, long ldo);
void sg_attention_values(int isa, int half, long nq, long n, long hd, const float *weights, long ldw, const void *values, long ld,
                         float *out, long ldout);

/// Float to IEEE half, rounded to nearest even (infinity past the largest half), as F16C does.
unsigned short sg_float_to_half(float f);
/// n floats to halves and back (F16C where the ISA has it).
void sg_to_half(int isa, long n, const float *src, unsigned short *dst);
void sg_from_half(int isa, long n, const unsigned short *src, float *dst);

/// y = silu(gate) · up = gate / (1 + exp(-gate)) · up, elementwise (SwiGLU's forward).
void sg_swiglu(int isa, long n, const float *gate, const float *up, float *y);

/// IEEE half to float (for scales and F16 tensors).
float sg_half_to_float(unsigned short h);

/// Asks for the cache line at `address` ahead of its use (no fault if it is not mapped).
static inline void sg_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }

#ifdef __cplusplus
}
#endif
#endif
