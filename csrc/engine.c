/* The native streaming engine: one call runs a whole streaming step of an AudioDec encoder (with
 * its projector and residual VQ) or of a receiver (code lookup, then the symmetric AudioDec decoder
 * or a grouped HiFi-GAN vocoder).
 *
 * Why: at 300-sample chunks a step is ~50 small convolutions, and through PyTorch each one costs a
 * fixed preparation beside its arithmetic (utils/runtime/native.py, docs/performance.md). Here
 * the plan (buffers, packed weights, layer order) is made once per chunk shape in Python, and a
 * step is one C call: one OpenMP team runs the operations in order, with a barrier between them.
 *
 * Layout: activations are time-major, (rows, channels), as oneDNN keeps them. A causal layer reads
 * an "ext" buffer: its state (the last `pad` input rows of the previous step) followed by the new
 * rows, which the layer before writes there directly, so there is no concatenation.
 *
 * Exactness (Contract 2): every output value is summed in one fixed order, tap by tap and input
 * channel by input channel, whatever the number of rows, the row's position, the blocking or the
 * thread count; the VQ searches each frame on its own. So the codes of a signal do not depend on
 * how it is cut into chunks, by construction (tests/test_native_engine.py checks it bit for bit).
 *
 * Built by utils/runtime/native_build.py with the machine's C compiler (-O3 -march=native -fopenmp, or
 * the -march in $AUDIODEC_NATIVE_MARCH; with -pthread instead where the compiler has no OpenMP, e.g.
 * Apple's clang: then a team of POSIX threads of its own runs each step, with the same sums). The
 * vectors are GCC vector extensions; their width and the kernels' register blocks follow the
 * instruction set the compiler targets (below), so one source builds for AVX-512, AVX2+FMA, NEON or
 * plain SSE2. A column's sum runs in the same order whatever the width, so targets with FMA give the
 * same bits.
 * csrc/selftest.c checks every kernel shape against a plain loop (tests/test_native_selftest.py).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Teams. team_run(n, body, ctx) runs body(ctx, tid, size) on n threads (the caller is tid 0) and
 * returns when all are done; team_barrier() inside body waits for the whole team. With OpenMP that
 * is a parallel region; without it (Apple's clang) each calling thread keeps a team of POSIX
 * threads of its own, which spin briefly between runs and then sleep. A team of one runs body
 * directly. Which threads compute which rows never changes a sum (Contract 2). */
typedef void (*TeamBody)(void *ctx, int tid, int size);

#ifdef _OPENMP
#include <omp.h>
#define TEAM_THREADS "openmp"

static void team_barrier(void) {
#pragma omp barrier
}

static void team_run(int nthreads, TeamBody body, void *ctx) {
    if (nthreads <= 1) {
        body(ctx, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nthreads)
    body(ctx, omp_get_thread_num(), omp_get_num_threads());
}
#else
#include <pthread.h>
#include <sched.h>
#define TEAM_THREADS "pthreads"
#define TEAM_SPINS 20000 /* polls of a waiting thread before it yields (barrier) or sleeps (between runs) */

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

typedef struct Team Team;
typedef struct {
    Team *team;
    int tid;
} Seat;

struct Team {
    int size; /* threads, the caller's included */
    pthread_t *threads;
    Seat *seats;
    TeamBody body;
    void *ctx;
    unsigned run;     /* bumped to start a run (or to stop) */
    int busy;         /* workers still in the current run */
    unsigned passage; /* bumped when the last thread reaches a barrier */
    int arrived;
    int stop;
    pthread_mutex_t lock;
    pthread_cond_t wake;
};

static _Thread_local Team *led;    /* the team this thread calls team_run with */
static _Thread_local Team *inside; /* the team whose run this thread is in, for team_barrier */
static pthread_key_t team_key;     /* ends a thread's team when the thread ends */
static pthread_once_t team_once = PTHREAD_ONCE_INIT;

static void *team_worker(void *arg) {
    Seat *seat = arg;
    Team *t = seat->team;
    inside = t;
    unsigned seen = 0;
    for (;;) {
        unsigned run;
        for (int spin = 0; (run = __atomic_load_n(&t->run, __ATOMIC_ACQUIRE)) == seen; spin++) {
            if (spin < TEAM_SPINS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&t->lock);
            while (__atomic_load_n(&t->run, __ATOMIC_ACQUIRE) == seen) pthread_cond_wait(&t->wake, &t->lock);
            pthread_mutex_unlock(&t->lock);
        }
        seen = run;
        if (__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) return NULL;
        t->body(t->ctx, seat->tid, t->size);
        __atomic_fetch_sub(&t->busy, 1, __ATOMIC_ACQ_REL);
    }
}

/* Starts the team's workers on the body and ctx set beside it (or, with stop set, ends them). */
static void team_start(Team *t) {
    pthread_mutex_lock(&t->lock);
    __atomic_fetch_add(&t->run, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

/* Ends the workers of `t` (the first `started` of them) and frees it. */
static void team_free(Team *t, int started) {
    __atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
    team_start(t);
    for (int i = 0; i < started; i++) pthread_join(t->threads[i], NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->wake);
    free(t->threads);
    free(t->seats);
    free(t);
}

static void team_end_with_thread(void *t) { team_free(t, ((Team *)t)->size - 1); }

/* In a child process only the forking thread lives on: its team's workers are gone. */
static void team_forget_after_fork(void) {
    led = inside = NULL;
    pthread_setspecific(team_key, NULL);
}

static void team_init(void) {
    pthread_key_create(&team_key, team_end_with_thread);
    pthread_atfork(NULL, NULL, team_forget_after_fork);
}

/* The calling thread's team of `size`, made (or remade) on first use; NULL if threads cannot start. */
static Team *team_of(int size) {
    pthread_once(&team_once, team_init);
    if (led && led->size == size) return led;
    if (led) {
        team_free(led, led->size - 1);
        led = NULL;
        pthread_setspecific(team_key, NULL);
    }
    Team *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->size = size;
    t->threads = calloc(size - 1, sizeof *t->threads);
    t->seats = calloc(size - 1, sizeof *t->seats);
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->wake, NULL);
    int started = 0;
    if (t->threads && t->seats) {
        for (; started < size - 1; started++) {
            t->seats[started] = (Seat){t, started + 1};
            if (pthread_create(t->threads + started, NULL, team_worker, t->seats + started) != 0) break;
        }
    }
    if (started < size - 1) {
        team_free(t, started);
        return NULL;
    }
    led = t;
    pthread_setspecific(team_key, t);
    return t;
}

/* The pause between two polls of a thread that waits for the others: a spin hint, then the core. */
static inline void poll_pause(unsigned spin) {
    if (spin < TEAM_SPINS) {
        cpu_relax();
    } else {
        sched_yield();
    }
}

static void team_barrier(void) {
    Team *t = inside;
    if (!t) return;
    const unsigned passage = __atomic_load_n(&t->passage, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&t->arrived, 1, __ATOMIC_ACQ_REL) == t->size) {
        __atomic_store_n(&t->arrived, 0, __ATOMIC_RELAXED);
        __atomic_fetch_add(&t->passage, 1, __ATOMIC_RELEASE);
        return;
    }
    for (unsigned spin = 0; __atomic_load_n(&t->passage, __ATOMIC_ACQUIRE) == passage; spin++) poll_pause(spin);
}

static void team_run(int nthreads, TeamBody body, void *ctx) {
    Team *t = nthreads > 1 ? team_of(nthreads) : NULL;
    if (!t) {
        body(ctx, 0, 1);
        return;
    }
    t->body = body;
    t->ctx = ctx;
    __atomic_store_n(&t->busy, t->size - 1, __ATOMIC_RELAXED);
    team_start(t);
    inside = t;
    body(ctx, 0, t->size);
    for (unsigned spin = 0; __atomic_load_n(&t->busy, __ATOMIC_ACQUIRE) > 0; spin++) poll_pause(spin);
    inside = NULL;
}
#endif

/* VL: floats per vector. ROWS_NVn: rows of a register block n vectors wide (0: no such kernels).
 * A block keeps R * NV accumulators, NV weight vectors and one broadcast input in registers: with
 * 32 vector registers (AVX-512, NEON) up to 12 x 2 and 6 x 4; with 16 (AVX, SSE) 12 x 1 and 6 x 2.
 * ROW_VECTORS: column vectors of the one-row kernels (a layer of one output row: independent
 * sums in flight, where a 12 x 1 block's single row would wait on each multiply-add). */
#if defined(__AVX512F__)
#define VL 16
#define ROWS_NV1 12
#define ROWS_NV2 12
#define ROWS_NV4 6
#define ROW_VECTORS 8
#define ISA "avx512"
#elif defined(__AVX__)
#define VL 8
#define ROWS_NV1 12
#define ROWS_NV2 6
#define ROWS_NV4 0
#define ROW_VECTORS 4
#define ISA "avx2"
#elif defined(__aarch64__)
#define VL 4
#define ROWS_NV1 12
#define ROWS_NV2 12
#define ROWS_NV4 6
#define ROW_VECTORS 8
#define ISA "neon"
#else
#define VL 4
#define ROWS_NV1 12
#define ROWS_NV2 6
#define ROWS_NV4 0
#define ROW_VECTORS 4
#define ISA "generic"
#endif
#if defined(__FMA__) || defined(__aarch64__)
#define HAS_FMA 1
#else
#define HAS_FMA 0
#endif

typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));

typedef uint16_t vh __attribute__((vector_size(VL * 2), aligned(2)));
typedef int8_t vc __attribute__((vector_size(VL), aligned(1)));

static inline vf vload(const float *p) { return *(const vfu *)p; }
/* VL bfloat16 values widened to floats (a bfloat16 is a float's upper 16 bits): exact. On x86 one
 * zero-extending load (GCC splits the generic conversion into halves). */
#if VL == 16 && defined(__AVX512F__)
static inline vf vload_bf16(const uint16_t *p) {
    return (vf)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
}
#elif VL == 8 && defined(__AVX2__)
static inline vf vload_bf16(const uint16_t *p) {
    return (vf)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
}
#else
static inline vf vload_bf16(const uint16_t *p) { return (vf)(__builtin_convertvector(*(const vh *)p, vi) << 16); }
#endif
/* VL int8 values as floats (exact). On x86 one sign-extending load and a conversion. */
#if VL == 16 && defined(__AVX512F__)
static inline vf vload_i8(const int8_t *p) {
    return (vf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
#elif VL == 8 && defined(__AVX2__)
static inline vf vload_i8(const int8_t *p) {
    return (vf)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
#else
static inline vf vload_i8(const int8_t *p) { return __builtin_convertvector(*(const vc *)p, vf); }
#endif
static inline void vstore(float *p, vf v) { *(vfu *)p = v; }
/* A broadcast: lane 0 copied to every lane ((vf){} + s would first add 0.0f to s). */
#if defined(__clang__)
#if VL == 16
#define BROADCAST_INDICES 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
#elif VL == 8
#define BROADCAST_INDICES 0, 0, 0, 0, 0, 0, 0, 0
#else
#define BROADCAST_INDICES 0, 0, 0, 0
#endif
static inline vf vset(float s) { return __builtin_shufflevector((vf){s}, (vf){s}, BROADCAST_INDICES); }
#else
static inline vf vset(float s) { return __builtin_shuffle((vf){s}, (vi){}); }
#endif

enum { OP_CONV = 1, OP_VQ = 2, OP_LOOKUP = 3 };
enum { ACT_ELU = 0, ACT_LEAKY = 1 };    /* the activation written to `out_act` */
enum { OUT_RAW = 0, OUT_TANH = 1 };     /* what is written to `out` */
enum { W_F32 = 0, W_BF16 = 1, W_I8 = 2 };  /* a conv's weight storage */
#define WTYPES 3

/* One operation of a plan. Conv: out[t, c] = sum_k sum_i w[k, i, c] * x[t * stride + k * dilation,
 * g * cin + i] (+ bias[c]) (+ res[t, c]), g = c / group_cout (grouped convolutions: `cin` input
 * channels per group, rows of `x_channels`; each group's `group_cout` output columns padded to
 * `group_pad`, a whole number of vectors); written to `out` (raw, or through tanh) and/or through
 * the activation to `out_act` (either may be NULL), each `rep` times side by side in `seg`-column
 * pieces when rep > 1 (the channel repeat before a grouped block). Rows of `res`, `out` and
 * `out_act` lie `res_stride`, `out_stride` and `act_stride` floats apart, or, where that is 0, as
 * wide as their row (cout, or cout * rep): a stride wider than the row reads or writes a column
 * band of a wider buffer (one branch of a multi-receptive-field block). VQ: the residual VQ of `t_out`
 * frames of `cin` values, `k` codebooks of `cout` codes, whose tables are padded to `cpad` codes
 * (the padding's |code|^2 is +inf, so it is never chosen). Lookup: the latent of `t_out` frames
 * from the codes of the first `k` codebooks, then (latent - bias) / w when bias is set (a
 * vocoder's input normalization). The layout is mirrored by utils/runtime/native_build.py. */
typedef struct {
    int32_t kind, cin, cout, cpad, k, dilation, stride, t_out;
    float alpha;        /* ELU's alpha, or LeakyReLU's negative slope */
    int32_t nv;         /* conv: VL-wide column vectors per block (1, 2 or 4; see engine_rows) */
    int32_t act, out_kind, x_channels, group_cout, group_pad, rep, seg;
    int32_t wtype;      /* conv: W_F32; W_BF16 (`w` holds bfloat16 weights; sums stay float); W_I8 (`w`
                           holds int8 weights, each column's sum is multiplied by its `wscale`) */
    int32_t res_stride, out_stride, act_stride, unused;  /* conv: row strides, 0 = the row's width */
    const float *x;     /* conv: ext buffer (state rows, then the new rows); VQ: latents (frames, D);
                           lookup: codes, int64 (k, frames) */
    const float *w;     /* conv: (cpad / (VL nv), k, cin, VL nv), each column block's weights in one
                           stretch (bfloat16 or int8 by wtype); VQ: 2 * embed, (K, N / VL, D, VL);
                           lookup: scale or NULL */
    const float *bias;  /* conv: (cpad,) (padded as the columns) or NULL; VQ: |code|^2, (K, N); lookup: mean or NULL */
    const float *res;   /* conv: (t_out, cout) skip or NULL; VQ and lookup: code vectors, (K, N, D) */
    float *out;         /* conv: (t_out, cout * rep) or NULL; VQ: codes, int64 (K, frames);
                           lookup: (frames, D) */
    float *out_act;     /* conv: activation of the raw output, (t_out, cout * rep), or NULL */
    const float *wscale;  /* conv with W_I8 weights: (cpad,) scale of each column's weights; else NULL */
} Op;

/* A streaming layer's state: `n` floats at `offset` of a stream's state vector; copied into the
 * start of `ext` before the step, and from `ext + shift` (the last `pad` rows) after it. */
typedef struct {
    float *ext;
    int64_t n, offset, shift;
} Slot;

static inline vf vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* expm1(z) for z in [-87, 88], about 1 ulp: z = n ln2 + r, |r| <= ln2 / 2, expm1(z) =
 * 2^n expm1(r) + (2^n - 1), expm1(r) by its Taylor series to r^9 / 9! (error below 1e-10
 * relative); exact for z = 0. Below -87 it rounds to -1. */
static inline vf expm1v(vf z) {
    z = vselect(z < -87.0f, vset(-87.0f), z);
    const float magic = 12582912.0f;              /* 1.5 * 2^23: adding it rounds to an integer */
    vf nf = (z * 1.44269504088896341f + magic) - magic;
    vf r = z - nf * 0.693145751953125f;           /* ln 2 in two parts (Cody and Waite) */
    r = r - nf * 1.42860682030941723212e-6f;
    vf p = vset(1.0f / 362880.0f);
    p = p * r + 1.0f / 40320.0f;
    p = p * r + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r * r + r;                            /* expm1(r) */
    vi n = __builtin_convertvector(nf, vi);
    vf scale = (vf)((n + 127) << 23);             /* 2^n, -126 <= n <= 127 */
    return scale * p + (scale - 1.0f);
}

/* ELU: x if x > 0 else alpha * expm1(x). */
static inline vf elu(vf x, float alpha) {
    vi pos = x > 0.0f;
    vf neg = expm1v(vselect(pos, vset(0.0f), x)) * alpha;
    return vselect(pos, x, neg);
}

/* LeakyReLU as PyTorch computes it: x if x > 0 else x * slope. */
static inline vf leaky(vf x, float slope) { return vselect(x > 0.0f, x, x * slope); }

/* tanh(x) = e / (e + 2), e = expm1(2 |x|), with x's sign; |x| >= 9 gives +-1 (as rounding does). */
static inline vf tanhv(vf x) {
    vi negative = x < 0.0f;
    vf a = vselect(negative, -x, x);
    a = vselect(a > 9.0f, vset(9.0f), a);
    vf e = expm1v(a + a);
    vf t = e / (e + 2.0f);
    return vselect(negative, -t, t);
}

static inline vf activate(const Op *op, vf v) {
    return op->act == ACT_LEAKY ? leaky(v, op->alpha) : elu(v, op->alpha);
}

/* Store `v` (real columns col.. of row `row`, `n` of them valid) into a (t_out, cout * rep) output
 * whose rows lie `stride` floats apart (0: cout * rep). */
static inline void put(const Op *op, float *base, int stride, int row, int col, vf v, int n) {
    const int64_t row_floats = stride ? stride : (int64_t)op->cout * op->rep;
    if (op->rep == 1) {
        float *at = base + (int64_t)row * row_floats + col;
        if (n == VL) {
            vstore(at, v);
        } else {
            for (int j = 0; j < n; j++) at[j] = v[j];
        }
        return;
    }
    const int seg = op->seg;
    float *start = base + (int64_t)row * row_floats;
    if (seg % VL == 0 && n == VL) {  /* the vector lies within one piece */
        float *at = start + (int64_t)(col / seg) * seg * op->rep + col % seg;
        for (int r = 0; r < op->rep; r++) vstore(at + (int64_t)r * seg, v);
        return;
    }
    for (int j = 0; j < n; j++) {
        float *at = start + (int64_t)((col + j) / seg) * seg * op->rep + (col + j) % seg;
        for (int r = 0; r < op->rep; r++) at[(int64_t)r * seg] = v[j];
    }
}

/* The finished sums of one vector of (padded) columns from `col`: bias, skip, then the outputs.
 * Padded columns (groups rounded up to whole vectors) are dropped here. */
static inline void epilogue(const Op *op, int row, int col, vf v) {
    const int group = col / op->group_pad, within = col % op->group_pad;
    int n = op->group_cout - within;
    if (n <= 0) return;
    if (n > VL) n = VL;
    const int real = group * op->group_cout + within;
    if (op->wscale) v = v * vload(op->wscale + col);
    if (op->bias) v = v + vload(op->bias + col);
    if (op->res) {
        const float *res = op->res + (int64_t)row * (op->res_stride ? op->res_stride : op->cout) + real;
        if (n == VL) {
            v = vload(res) + v;
        } else {
            for (int j = 0; j < n; j++) v[j] = res[j] + v[j];
        }
    }
    if (op->out) put(op, op->out, op->out_stride, row, real, op->out_kind == OUT_TANH ? tanhv(v) : v, n);
    if (op->out_act) put(op, op->out_act, op->act_stride, row, real, activate(op, v), n);
}

/* Where a chunk has few rows, a step streams its weights from memory once (a 256-channel vocoder
 * layer: 8.6 MB for 5 rows), and the hardware prefetchers alone keep too few lines in flight for
 * that: each weight load also asks for the line PREFETCH_BYTES further on, into L2 (not NTA: a
 * layer's other row blocks read the lines again). */
#define PREFETCH_BYTES 16384
#define prefetch_ahead(p) __builtin_prefetch((const char *)(p) + PREFETCH_BYTES, 0, 2)

/* R rows from `row0` by NV vectors of columns from `col0`. Every row runs the same sequence of
 * fused multiply-adds, so a row's result does not depend on R or on which rows share the block. */
#define DEFINE_KERNEL(R, NV, NAME, WT, LOADW)                                                        \
    static void NAME##_##R##_##NV(const Op *op, int row0, int col0) {                               \
        vf acc[R][NV];                                                                              \
        _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                                        \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = vset(0.0f);            \
        const int cin = op->cin, width = NV * VL, channels = op->x_channels;                        \
        const int64_t row_step = (int64_t)op->stride * channels;                                    \
        const WT *block = (const WT *)op->w + (int64_t)(col0 / width) * op->k * cin * width;        \
        const float *xg = op->x + (int64_t)(col0 / op->group_pad) * cin;  /* this group's inputs */  \
        for (int k = 0; k < op->k; k++) {                                                           \
            const float *xk = xg + ((int64_t)row0 * op->stride + (int64_t)k * op->dilation) * channels; \
            const WT *wk = block + (int64_t)k * cin * width;                                        \
            for (int i = 0; i < cin; i++) {                                                         \
                vf w[NV];                                                                           \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                              \
                    w[v] = LOADW(wk + (int64_t)i * width + v * VL);                                 \
                    prefetch_ahead(wk + (int64_t)i * width + v * VL);                               \
                }                                                                                   \
                _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {                              \
                    vf b = vset(xk[r * row_step + i]);                                              \
                    _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] += w[v] * b;     \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        for (int r = 0; r < R; r++)                                                                 \
            for (int v = 0; v < NV; v++) epilogue(op, row0 + r, col0 + v * VL, acc[r][v]);          \
    }

/* Each shape three times: `conv` on float weights, `convh` on bfloat16 ones and `convq` on int8
 * ones (the same sums, in the same order, of the weights converted to floats). */
#define KERNEL_PAIR(R, NV) \
    DEFINE_KERNEL(R, NV, conv, float, vload) DEFINE_KERNEL(R, NV, convh, uint16_t, vload_bf16) \
    DEFINE_KERNEL(R, NV, convq, int8_t, vload_i8)
#define KERNELS_6(NV) \
    KERNEL_PAIR(1, NV) KERNEL_PAIR(2, NV) KERNEL_PAIR(3, NV) KERNEL_PAIR(4, NV) KERNEL_PAIR(5, NV) KERNEL_PAIR(6, NV)
#define KERNELS_12(NV) KERNELS_6(NV) \
    KERNEL_PAIR(7, NV) KERNEL_PAIR(8, NV) KERNEL_PAIR(9, NV) KERNEL_PAIR(10, NV) KERNEL_PAIR(11, NV) KERNEL_PAIR(12, NV)
#define TABLE_6(N, NV) N##_1_##NV, N##_2_##NV, N##_3_##NV, N##_4_##NV, N##_5_##NV, N##_6_##NV
#define TABLE_12(N, NV) TABLE_6(N, NV), N##_7_##NV, N##_8_##NV, N##_9_##NV, N##_10_##NV, N##_11_##NV, N##_12_##NV
#define ROWS_MAX 12

typedef void (*kernel_fn)(const Op *, int, int);
/* KERNELS[wtype][s][R - 1]: R rows by 2^s vectors; ROWS[s] of them (0: none). */
static const int ROWS[3] = {ROWS_NV1, ROWS_NV2, ROWS_NV4};
KERNELS_12(1)
#if ROWS_NV2 == 12
KERNELS_12(2)
#define TABLE_NV2(N) TABLE_12(N, 2)
#else
KERNELS_6(2)
#define TABLE_NV2(N) TABLE_6(N, 2)
#endif
#if ROWS_NV4
KERNELS_6(4)
#define TABLE_NV4(N) TABLE_6(N, 4)
#else
#define TABLE_NV4(N) 0
#endif
static const kernel_fn KERNELS[WTYPES][3][ROWS_MAX] = {
    {{TABLE_12(conv, 1)}, {TABLE_NV2(conv)}, {TABLE_NV4(conv)}},
    {{TABLE_12(convh, 1)}, {TABLE_NV2(convh)}, {TABLE_NV4(convh)}},
    {{TABLE_12(convq, 1)}, {TABLE_NV2(convq)}, {TABLE_NV4(convq)}},
};

/* One row by N column vectors from `col0` (all in one group), the vectors' weights wherever the
 * layout's column blocks put them; each column summed in the block kernels' order. */
#define DEFINE_ROW_KERNEL(N, NAME, WT, LOADW)                                                       \
    static void NAME##_row_##N(const Op *op, int row, int col0) {                                   \
        const int cin = op->cin, width = op->nv * VL, channels = op->x_channels;                    \
        const WT *wv[N];                                                                            \
        vf acc[N];                                                                                  \
        _Pragma("GCC unroll 8") for (int v = 0; v < N; v++) {                                       \
            const int c = col0 / VL + v;                                                            \
            wv[v] = (const WT *)op->w + (int64_t)(c / op->nv) * op->k * cin * width + (c % op->nv) * VL; \
            acc[v] = vset(0.0f);                                                                    \
        }                                                                                           \
        const float *xg = op->x + (int64_t)(col0 / op->group_pad) * cin + (int64_t)row * op->stride * channels; \
        for (int k = 0; k < op->k; k++) {                                                           \
            const float *xk = xg + (int64_t)k * op->dilation * channels;                            \
            const int64_t wk = (int64_t)k * cin * width;                                            \
            for (int i = 0; i < cin; i++) {                                                         \
                vf b = vset(xk[i]);                                                                 \
                _Pragma("GCC unroll 8") for (int v = 0; v < N; v++) {                               \
                    prefetch_ahead(wv[v] + wk + (int64_t)i * width);                                \
                    acc[v] += LOADW(wv[v] + wk + (int64_t)i * width) * b;                           \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        for (int v = 0; v < N; v++) epilogue(op, row, col0 + v * VL, acc[v]);                       \
    }
#define ROW_KERNEL_PAIR(N) \
    DEFINE_ROW_KERNEL(N, conv, float, vload) DEFINE_ROW_KERNEL(N, convh, uint16_t, vload_bf16) \
    DEFINE_ROW_KERNEL(N, convq, int8_t, vload_i8)
ROW_KERNEL_PAIR(1) ROW_KERNEL_PAIR(2) ROW_KERNEL_PAIR(3) ROW_KERNEL_PAIR(4)
#if ROW_VECTORS == 8
ROW_KERNEL_PAIR(5) ROW_KERNEL_PAIR(6) ROW_KERNEL_PAIR(7) ROW_KERNEL_PAIR(8)
#define ROW_TABLE(N) N##_row_1, N##_row_2, N##_row_3, N##_row_4, N##_row_5, N##_row_6, N##_row_7, N##_row_8
#else
#define ROW_TABLE(N) N##_row_1, N##_row_2, N##_row_3, N##_row_4
#endif
/* ROW_KERNELS[wtype][N - 1] */
static const kernel_fn ROW_KERNELS[WTYPES][ROW_VECTORS] = {{ROW_TABLE(conv)}, {ROW_TABLE(convh)}, {ROW_TABLE(convq)}};
/* WEIGHTS_PER_FLOAT[wtype]: how many weights of that type the bytes of one float hold */
static const int WEIGHTS_PER_FLOAT[WTYPES] = {1, 2, 4};

/* A layer of one output row: each group's column vectors ROW_VECTORS at a time. */
static void run_conv_row(const Op *op, int tid, int nthreads) {
    const int group_vectors = op->group_pad / VL, groups = op->cpad / op->group_pad;
    const int per_group = (group_vectors + ROW_VECTORS - 1) / ROW_VECTORS;
    const int64_t items = (int64_t)groups * per_group;
    const int64_t first = items * tid / nthreads, last = items * (tid + 1) / nthreads;
    for (int64_t item = first; item < last; item++) {
        const int group = (int)(item / per_group), v0 = (int)(item % per_group) * ROW_VECTORS;
        const int n = group_vectors - v0 < ROW_VECTORS ? group_vectors - v0 : ROW_VECTORS;
        ROW_KERNELS[op->wtype][n - 1](op, 0, group * op->group_pad + v0 * VL);
    }
}

static void run_conv(const Op *op, int tid, int nthreads) {
    if (op->t_out == 1) {
        run_conv_row(op, tid, nthreads);
        return;
    }
    const int slot = op->nv == 4 ? 2 : op->nv - 1;
    const int col_blocks = op->cpad / (op->nv * VL);
    const int row_blocks = (op->t_out + ROWS[slot] - 1) / ROWS[slot];
    /* rows spread evenly over the blocks (25 rows: 5 x 5, not 4 x 6 + 1: a 1-row block reads its
     * weights for few sums) */
    const int rows = (op->t_out + row_blocks - 1) / row_blocks;
    const int64_t items = (int64_t)row_blocks * col_blocks;
    const int64_t first = items * tid / nthreads, last = items * (tid + 1) / nthreads;
    /* When the weights outweigh the input (the few rows of a streaming chunk), column block by
     * column block, all rows of one before the next: each weight is read from memory once and
     * stays in cache while its rows are computed. Otherwise (long blocks of a whole file) row
     * block by row block, all columns of one before the next: the input rows stay in cache. */
    const int64_t weights = (int64_t)op->k * op->cin * op->cpad / WEIGHTS_PER_FLOAT[op->wtype];
    const int64_t inputs = ((int64_t)(op->t_out - 1) * op->stride + (int64_t)(op->k - 1) * op->dilation + 1) * op->x_channels;
    const int by_column = weights >= inputs;
    for (int64_t item = first; item < last; item++) {
        int cb = (int)(item / row_blocks), rb = (int)(item % row_blocks);
        if (!by_column) {
            rb = (int)(item / col_blocks);
            cb = (int)(item % col_blocks);
        }
        int row0 = rb * rows;
        int n = op->t_out - row0 < rows ? op->t_out - row0 : rows;
        KERNELS[op->wtype][slot][n - 1](op, row0, cb * op->nv * VL);
    }
}

#define VQ_BLOCKS 4

/* Per lane, the least distance so far and its code: `d` of codes `codes` replaces it only when
 * strictly smaller, so a lane keeps its first minimum. */
static inline void keep_nearer(vf *best, vi *where, vf d, vi codes) {
    vi closer = d < *best;
    *best = vselect(closer, d, *best);
    *where = (codes & closer) | (*where & ~closer);
}

/* The nearest code of codebook `q` to `x` among codes [from, to) (whole vectors): its distance
 * |x|^2 - x . (2 code) + |code|^2 (the original's arithmetic, in a fixed order) and its index, the
 * first of equal ones. A code's distance is summed the same way whatever the range. */
static void nearest_code(const Op *op, int q, const float *x, float xx, int from, int to,
                         float *least_out, int64_t *index_out) {
    const int dim = op->cin, size = op->cpad;  /* size: padded to VL */
    const float *embed2 = op->w + (int64_t)q * dim * size;  /* (size / VL, dim, VL) */
    const float *norm = op->bias + (int64_t)q * size;
    vi lane;
    for (int l = 0; l < VL; l++) lane[l] = l;
    vf best = vset(__builtin_inff());
    vi where = lane + from;
    int j = from;
    /* VQ_BLOCKS blocks of codes at a time: independent sums, so the FMAs overlap (each code's
     * sum runs over i in order, as in the one-block loop after it). */
    for (; j + VQ_BLOCKS * VL <= to; j += VQ_BLOCKS * VL) {
        const float *block = embed2 + (int64_t)j * dim;
        vf acc[VQ_BLOCKS];
        for (int b = 0; b < VQ_BLOCKS; b++) acc[b] = vset(0.0f);
        for (int i = 0; i < dim; i++) {
            vf xi = vset(x[i]);
            _Pragma("GCC unroll 4") for (int b = 0; b < VQ_BLOCKS; b++)
                acc[b] += vload(block + ((int64_t)b * dim + i) * VL) * xi;
        }
        for (int b = 0; b < VQ_BLOCKS; b++) {
            vf d = (vset(xx) - acc[b]) + vload(norm + j + b * VL);
            keep_nearer(&best, &where, d, lane + j + b * VL);
        }
    }
    for (; j < to; j += VL) {
        const float *block = embed2 + (int64_t)j * dim;
        vf acc = vset(0.0f);
        for (int i = 0; i < dim; i++) acc += vload(block + i * VL) * vset(x[i]);
        vf d = (vset(xx) - acc) + vload(norm + j);
        keep_nearer(&best, &where, d, lane + j);
    }
    float least = best[0];
    int64_t index = where[0];
    for (int l = 1; l < VL; l++) {  /* the least distance; among equal ones, the first code */
        if (best[l] < least || (best[l] == least && where[l] < index)) {
            least = best[l];
            index = where[l];
        }
    }
    *least_out = least;
    *index_out = index;
}

static float squared_norm(const float *x, int dim) {
    float xx = 0.0f;
    for (int i = 0; i < dim; i++) xx += x[i] * x[i];
    return xx;
}

/* The residual after codebook `q`'s code `index`: x minus the straight-through value
 * x + (code - x), as the original subtracts it; the code is stored for frame `t`. */
static void take_code(const Op *op, int q, int t, float *x, int64_t index) {
    const int dim = op->cin;
    const float *code = op->res + ((int64_t)q * op->cpad + index) * dim;
    for (int i = 0; i < dim; i++) {
        float st = x[i] + (code[i] - x[i]);  /* as the original: not simplified to code */
        x[i] = x[i] - st;
    }
    ((int64_t *)op->out)[(int64_t)q * op->t_out + t] = index;
}

/* Residual VQ of one frame: for each codebook, the nearest code, then the residual. */
static void vq_frame(const Op *op, int t) {
    const int dim = op->cin;
    float x[dim];
    memcpy(x, op->x + (int64_t)t * dim, sizeof(float) * dim);
    for (int q = 0; q < op->k; q++) {
        float least;
        int64_t index;
        nearest_code(op, q, x, squared_norm(x, dim), 0, op->cpad, &least, &index);
        take_code(op, q, t, x, index);
    }
}

/* Floats of `shared` that run_vq needs with `nthreads` threads: none when every thread has frames
 * of its own; else the residuals, (frames, dim), and each thread's nearest code, (threads, frames)
 * distances and as many int64 indices. */
static int64_t vq_shared_floats(const Op *op, int nthreads) {
    if (op->t_out >= nthreads) return 0;
    return (int64_t)op->t_out * op->cin + 3 * (int64_t)nthreads * op->t_out;
}

static void run_vq(const Op *op, int tid, int nthreads, float *shared) {
    if (op->t_out >= nthreads) {
        for (int t = tid; t < op->t_out; t += nthreads) vq_frame(op, t);
        return;
    }
    /* Fewer frames than threads (a streaming chunk's single frame): the threads share each
     * codebook's codes, in ascending ranges, and thread 0 takes the least of their nearest codes
     * (ties to the lower range: the first code, as one thread would find it). */
    const int dim = op->cin, frames = op->t_out, vectors = op->cpad / VL;
    int64_t *index = (int64_t *)shared;                          /* (nthreads, frames) */
    float *least = shared + 2 * (int64_t)nthreads * frames;     /* (nthreads, frames) */
    float *residual = least + (int64_t)nthreads * frames;       /* (frames, dim) */
    const int from = (int)((int64_t)vectors * tid / nthreads) * VL;
    const int to = (int)((int64_t)vectors * (tid + 1) / nthreads) * VL;
    if (tid == 0) memcpy(residual, op->x, sizeof(float) * frames * dim);
    team_barrier();
    for (int q = 0; q < op->k; q++) {
        for (int t = 0; t < frames; t++) {
            const float *x = residual + (int64_t)t * dim;
            const int64_t at = (int64_t)tid * frames + t;
            least[at] = __builtin_inff();
            index[at] = from;
            if (from < to) nearest_code(op, q, x, squared_norm(x, dim), from, to, least + at, index + at);
        }
        team_barrier();
        if (tid == 0) {
            for (int t = 0; t < frames; t++) {
                int best = 0;
                for (int s = 1; s < nthreads; s++)
                    if (least[(int64_t)s * frames + t] < least[(int64_t)best * frames + t]) best = s;
                take_code(op, q, t, residual + (int64_t)t * dim, index[(int64_t)best * frames + t]);
            }
        }
        team_barrier();
    }
}

/* The receiver's latent: for each frame, the code vectors of the first `k` codebooks summed in
 * codebook order (as the original sums them), frame by frame. Returns 0, or 1 for a code outside
 * [0, N) (its frame then gets zeros). */
static int run_lookup(const Op *op, int tid, int nthreads) {
    const int dim = op->cin, size = op->cout, rows = op->cpad, books = op->k, frames = op->t_out;
    const int64_t *codes = (const int64_t *)op->x;
    int bad = 0;
    for (int t = tid; t < frames; t += nthreads) {
        float *row = op->out + (int64_t)t * dim;
        for (int q = 0; q < books; q++) {
            int64_t code = codes[(int64_t)q * frames + t];
            if (code < 0 || code >= size) {
                bad = 1;
                memset(row, 0, sizeof(float) * dim);
                break;
            }
            const float *vector = op->res + ((int64_t)q * rows + code) * dim;
            if (q == 0) {
                memcpy(row, vector, sizeof(float) * dim);
            } else {
                for (int i = 0; i < dim; i++) row[i] += vector[i];
            }
        }
        if (op->bias) {
            for (int i = 0; i < dim; i++) row[i] = (row[i] - op->bias[i]) / op->w[i];
        }
    }
    return bad;
}

/* One streaming step for `batch` streams, each its own state vector of `state_size` floats:
 * states in, input copied to `in_dst`, operations in order, output copied out, states out.
 * Returns 0, or 1 when a lookup met a code out of range. */
enum { ENGINE_BAD_CODE = 1, ENGINE_NO_MEMORY = 2 };  /* engine_run's failures (utils/runtime/native.py) */

typedef struct {
    const Op *ops;
    int n_ops;
    const Slot *slots;
    int n_slots;
    int64_t state_size;
    const void *x;
    void *in_dst;
    int64_t in_bytes;
    const void *out_src;
    void *y;
    int64_t out_bytes;
    const float *state_in;
    float *state_out;
    int batch;
    float *shared;
    int bad;
} Step;

static void run_step(void *context, int tid, int team) {
    const Step *step = context;
    const Slot *slots = step->slots;
    for (int b = 0; b < step->batch; b++) {
        const float *s_in = step->state_in + (int64_t)b * step->state_size;
        for (int s = tid; s < step->n_slots; s += team)
            memcpy(slots[s].ext, s_in + slots[s].offset, sizeof(float) * slots[s].n);
        if (tid == 0) memcpy(step->in_dst, (const char *)step->x + b * step->in_bytes, step->in_bytes);
        team_barrier();
        for (int o = 0; o < step->n_ops; o++) {
            const Op *op = step->ops + o;
            if (op->kind == OP_CONV) {
                run_conv(op, tid, team);
            } else if (op->kind == OP_VQ) {
                run_vq(op, tid, team, step->shared);
            } else if (op->kind == OP_LOOKUP && run_lookup(op, tid, team)) {
                __atomic_store_n(&((Step *)context)->bad, ENGINE_BAD_CODE, __ATOMIC_RELAXED);
            }
            team_barrier();
        }
        float *s_out = step->state_out + (int64_t)b * step->state_size;
        for (int s = tid; s < step->n_slots; s += team)
            memcpy(s_out + slots[s].offset, slots[s].ext + slots[s].shift, sizeof(float) * slots[s].n);
        if (tid == 0) memcpy((char *)step->y + b * step->out_bytes, step->out_src, step->out_bytes);
        team_barrier();
    }
}

#define STACK_SHARED_FLOATS (1 << 16)  /* 256 KB */

int engine_run(const Op *ops, int n_ops, const Slot *slots, int n_slots, int64_t state_size,
               const void *x, void *in_dst, int64_t in_bytes,
               const void *out_src, void *y, int64_t out_bytes,
               const float *state_in, float *state_out, int batch, int nthreads) {
    int64_t shared_floats = 1;  /* run_vq's scratch, shared by the team */
    for (int o = 0; o < n_ops; o++) {
        if (ops[o].kind == OP_VQ && vq_shared_floats(ops + o, nthreads) > shared_floats)
            shared_floats = vq_shared_floats(ops + o, nthreads);
    }
    /* On this thread's stack, but for the thousands of threads that would overflow it: from the heap. */
    const int on_stack = shared_floats <= STACK_SHARED_FLOATS;
    float stack_shared[on_stack ? shared_floats : 1] __attribute__((aligned(64)));
    float *shared = on_stack ? stack_shared : aligned_alloc(64, (size_t)(shared_floats + 15) / 16 * 64);
    if (shared == NULL) return ENGINE_NO_MEMORY;
    Step step = {ops, n_ops, slots, n_slots, state_size, x, in_dst, in_bytes, out_src, y, out_bytes,
                 state_in, state_out, batch, shared, 0};
    team_run(nthreads, run_step, &step);
    if (!on_stack) free(shared);
    return step.bad;
}

/* Training's ELU and LeakyReLU (trainer/fast_activation.py): ATen's ELU goes through expm1, which
 * costs several times its exp, and each writes the causal padding of the convolution that reads it.
 * Arrays are `rows` rows of `n` values, float32 or (bf16 != 0) bfloat16, computed in float32 and
 * rounded to nearest even as ATen rounds; each array's rows lie `*_stride` values apart. */
#define ACTIVATION_CHUNK 4096        /* values per piece of work: a thread's share is whole pieces */
#define ACTIVATION_SERIAL (1 << 16)  /* below this many values one thread is quicker than waking the team */

/* bfloat16 of each float, rounded to nearest even as ATen rounds (a NaN becomes the quiet NaN). */
typedef uint32_t vu __attribute__((vector_size(VL * 4)));
static inline vh to_bf16v(vf v) {
    vu bits = (vu)v;
    vu rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    vu nan = (vu){} + 0x7fc0u;
    return __builtin_convertvector((vu)vselect(v == v, (vf)rounded, (vf)nan), vh);
}

static inline vf load_values(const void *p, int bf16) {
    return bf16 ? vload_bf16((const uint16_t *)p) : vload((const float *)p);
}

static inline void store_values(void *p, vf v, int bf16) {
    if (bf16) {
        *(vh *)p = to_bf16v(v);
    } else {
        vstore((float *)p, v);
    }
}

/* The last `n` < VL values of a row through a full vector: staged in `buffer`, so a tail is
 * computed by the same vector code as the rest of the row. */
static inline void stage_in(float *buffer, const void *p, int64_t n, int bf16) {
    for (int64_t i = 0; i < VL; i++) {
        if (i >= n) {
            buffer[i] = 0.0f;
        } else if (bf16) {
            uint32_t bits = (uint32_t)((const uint16_t *)p)[i] << 16;
            memcpy(buffer + i, &bits, 4);
        } else {
            buffer[i] = ((const float *)p)[i];
        }
    }
}

static inline void stage_out(void *p, const float *buffer, int64_t n, int bf16) {
    if (bf16) {
        vh h = to_bf16v(vload(buffer));
        for (int64_t i = 0; i < n; i++) ((uint16_t *)p)[i] = h[i];
    } else {
        memcpy(p, buffer, sizeof(float) * n);
    }
}

/* The training activations (ACT_ELU with alpha > 0 or ACT_LEAKY with slope > 0, of `param`). */
static inline vf activation(vf x, float param, int kind) { return kind == ACT_ELU ? elu(x, param) : leaky(x, param); }

static inline void activation_piece(const char *x, char *out, int64_t n, float param, int kind, int bf16) {
    const int size = bf16 ? 2 : 4;
    int64_t j = 0;
    for (; j + VL <= n; j += VL)
        store_values(out + j * size, activation(load_values(x + j * size, bf16), param, kind), bf16);
    if (j < n) {
        float buffer[VL] __attribute__((aligned(64)));
        stage_in(buffer, x + j * size, n - j, bf16);
        vstore(buffer, activation(vload(buffer), param, kind));
        stage_out(out + j * size, buffer, n - j, bf16);
    }
}

/* The activation's derivative times the incoming gradient, from its output (the output is kept anyway
 * by the convolution that reads it, so a training step keeps one activation fewer alive per call).
 * ELU as ATen takes it for an in-place ELU: g where out > 0, else g * (out + alpha). LeakyReLU: g where
 * out > 0, else g * slope, which is ATen's from the input (out > 0 exactly where x > 0). */
static inline vf activation_grad(vf g, vf out, float param, int kind) {
    return vselect(out > 0.0f, g, kind == ACT_ELU ? g * (out + param) : g * param);
}

static inline void grad_piece(const char *g, const char *out, char *gin, int64_t n, float param, int kind, int bf16) {
    const int size = bf16 ? 2 : 4;
    int64_t j = 0;
    for (; j + VL <= n; j += VL)
        store_values(gin + j * size,
                     activation_grad(load_values(g + j * size, bf16), load_values(out + j * size, bf16), param, kind),
                     bf16);
    if (j < n) {
        float gb[VL] __attribute__((aligned(64))), ob[VL] __attribute__((aligned(64)));
        stage_in(gb, g + j * size, n - j, bf16);
        stage_in(ob, out + j * size, n - j, bf16);
        vstore(gb, activation_grad(vload(gb), vload(ob), param, kind));
        stage_out(gin + j * size, gb, n - j, bf16);
    }
}

/* out = activation `kind` of x, with `lead` zeros written before each output row (the causal padding
 * of the convolution that reads it). Each (kind, bf16) pair is its own loop, so the vector code is
 * specialized. */
typedef struct {
    const char *x; /* forward: the input; backward: the incoming gradient */
    const char *out;
    char *to;      /* forward: the output; backward: the gradient of the input */
    int64_t x_stride, out_stride, to_stride, lead, rows, n;
    float param;
    int kind, bf16, backward;
} Activation;

/* `m` values of row `r` from column `j`, forward or backward. */
static void activation_values(const Activation *a, int64_t r, int64_t j, int64_t m) {
    const int64_t size = a->bf16 ? 2 : 4;
    const float param = a->param;
    if (a->backward) {
        const char *g = a->x + (r * a->x_stride + j) * size;
        const char *o = a->out + (r * a->out_stride + j) * size;
        char *gi = a->to + (r * a->to_stride + j) * size;
        if (a->kind == ACT_ELU) {
            if (a->bf16) grad_piece(g, o, gi, m, param, ACT_ELU, 1); else grad_piece(g, o, gi, m, param, ACT_ELU, 0);
        } else {
            if (a->bf16) grad_piece(g, o, gi, m, param, ACT_LEAKY, 1); else grad_piece(g, o, gi, m, param, ACT_LEAKY, 0);
        }
        return;
    }
    char *row = a->to + r * a->to_stride * size;
    if (j == 0 && a->lead) memset(row, 0, size * a->lead);
    const char *in = a->x + (r * a->x_stride + j) * size;
    char *to = row + (a->lead + j) * size;
    if (a->kind == ACT_ELU) {
        if (a->bf16) activation_piece(in, to, m, param, ACT_ELU, 1); else activation_piece(in, to, m, param, ACT_ELU, 0);
    } else {
        if (a->bf16) activation_piece(in, to, m, param, ACT_LEAKY, 1); else activation_piece(in, to, m, param, ACT_LEAKY, 0);
    }
}

/* A thread's share of the rows' pieces of ACTIVATION_CHUNK values. */
static void run_activation(void *context, int tid, int team) {
    const Activation *a = context;
    const int64_t pieces = (a->n + ACTIVATION_CHUNK - 1) / ACTIVATION_CHUNK;
    const int64_t first = a->rows * pieces * tid / team, last = a->rows * pieces * (tid + 1) / team;
    for (int64_t p = first; p < last; p++) {
        const int64_t r = p / pieces, j = (p % pieces) * ACTIVATION_CHUNK;
        activation_values(a, r, j, a->n - j < ACTIVATION_CHUNK ? a->n - j : ACTIVATION_CHUNK);
    }
}

void engine_activation(const void *x, int64_t x_stride, void *out, int64_t out_stride, int64_t lead, int64_t rows,
                       int64_t n, float param, int kind, int bf16, int nthreads) {
    Activation a = {x, NULL, out, x_stride, 0, out_stride, lead, rows, n, param, kind, bf16, 0};
    team_run(rows * n >= ACTIVATION_SERIAL ? nthreads : 1, run_activation, &a);
}

/* grad_in = the backward pass of activation `kind` for grad, from its output `out`. */
void engine_activation_backward(const void *grad, int64_t grad_stride, const void *out, int64_t out_stride,
                                void *grad_in, int64_t grad_in_stride, int64_t rows, int64_t n, float param, int kind,
                                int bf16, int nthreads) {
    Activation a = {grad, out, grad_in, grad_stride, out_stride, grad_in_stride, 0, rows, n, param, kind, bf16, 1};
    team_run(rows * n >= ACTIVATION_SERIAL ? nthreads : 1, run_activation, &a);
}

/* What the Python side needs to know of this build: the layout of Op (to check its mirror against),
 * floats per vector (weights and codebooks are padded to whole vectors), the rows of the register
 * blocks per width (engine_rows(s): 2^s vectors; 0 where this build has no such kernels), the
 * instruction set the build targets, and what runs its teams ("openmp" or "pthreads"). */
int64_t engine_op_size(void) { return sizeof(Op); }
int engine_lanes(void) { return VL; }
int engine_rows(int s) { return s >= 0 && s < 3 ? ROWS[s] : 0; }
int engine_fma(void) { return HAS_FMA; }
const char *engine_isa(void) { return ISA; }
const char *engine_threads(void) { return TEAM_THREADS; }

/* Runs a little of each kind of the build's vector code: a convolution through the row kernel and
 * a block kernel with both epilogues, and the activations in float32 and bfloat16. A build for
 * instructions this CPU lacks stops here, in the child process utils/runtime/native_build.py runs it
 * in after building, rather than in a codec. Returns a sum of the results (finite when all ran). */
float engine_probe(void) {
    enum { ROWS_PROBED = 3, COLS = VL, N = ROWS_PROBED * COLS };
    float x[ROWS_PROBED], w[COLS], bias[COLS], out[N], act[N], values[N];
    uint16_t halves[N];
    for (int i = 0; i < ROWS_PROBED; i++) x[i] = 0.25f * (float)(i - 1);
    for (int c = 0; c < COLS; c++) w[c] = 0.5f - 0.03125f * (float)c, bias[c] = 0.0625f * (float)(c % 5) - 0.125f;
    float sum = 0.0f;
    for (int rows = 1; rows <= ROWS_PROBED; rows += ROWS_PROBED - 1) {
        Op op = {.kind = OP_CONV, .cin = 1, .cout = COLS, .cpad = COLS, .k = 1, .dilation = 1, .stride = 1,
                 .t_out = rows, .alpha = 1.0f, .nv = 1, .act = ACT_ELU, .out_kind = OUT_TANH, .x_channels = 1,
                 .group_cout = COLS, .group_pad = COLS, .rep = 1, .seg = COLS, .x = x, .w = w, .bias = bias,
                 .out = out, .out_act = act};
        engine_run(&op, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, 1);
        for (int i = 0; i < rows * COLS; i++) sum += out[i] + act[i];
    }
    engine_activation(act, N, values, N, 0, 1, N, 1.0f, ACT_ELU, 0, 1);
    engine_activation(act, N, values, N, 0, 1, N, 0.2f, ACT_LEAKY, 0, 1);
    for (int i = 0; i < N; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        halves[i] = (uint16_t)(bits >> 16);
    }
    engine_activation(halves, N, halves, N, 0, 1, N, 1.0f, ACT_ELU, 1, 1);
    for (int i = 0; i < N; i++) {
        uint32_t bits = (uint32_t)halves[i] << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        sum += values[i] + f;
    }
    return sum;
}
