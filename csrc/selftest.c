/* Self-test of the native engine's kernels (csrc/engine.c) against plain loops, for whatever
 * instruction set it is compiled for: every register-block shape (R rows x NV vectors) of the
 * build, grouped and padded columns, strides, dilations, each epilogue (bias, skip, ELU, LeakyReLU,
 * tanh, channel repeat, row strides wider than the row), bfloat16 and int8 weights, the rows' independence from the blocking (Contract 2),
 * training's ELU and its backward pass (float32 and bfloat16),
 * the VQ search with ties, and the code lookup. Prints one line per failure and a summary; exit status 0 when all pass.
 *
 *   gcc -O3 -march=native --param=avoid-fma-max-bits=0 -ffp-contract=fast -fopenmp -std=gnu11 \
 *       csrc/selftest.c -lm && ./a.out
 *
 * (-pthread instead of -fopenmp: the engine's own teams, as a compiler without OpenMP builds it.)
 *
 * tests/test_native_selftest.py builds and runs it natively, for x86-64-v3 and x86-64, and for
 * arm64 under qemu-user when a cross compiler is installed (utils/system_deps.sh).
 */
#include "engine.c"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int failures, checks;

static void fail(const char *what, int a, int b, double got, double want) {
    if (failures++ < 20) fprintf(stderr, "FAIL %s [%d, %d]: got %.9g, want %.9g\n", what, a, b, got, want);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float uniform(void) { /* [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}

static float *random_floats(int64_t n) {
    float *p = malloc(sizeof(float) * (n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = uniform();
    return p;
}

typedef struct {
    int cin, group_cout, groups, k, dilation, stride, t_out, nv, rep, seg;
    int bias, res, act, out_kind, want_out, want_act;
    float alpha;
} Case;

static double activation_ref(int act, float alpha, double v) {
    if (act == ACT_LEAKY) return v > 0 ? v : v * alpha;
    return v > 0 ? v : alpha * expm1(v);
}

/* Runs one convolution case through the engine on `threads` threads and compares it with a plain
 * double loop; returns the engine's `out` (or NULL). */
static float *run_case(const Case *c, const char *name, int threads) {
    const int cout = c->group_cout * c->groups, width = c->nv * VL;
    const int group_pad = (c->group_cout + VL - 1) / VL * VL;
    const int cpad = group_pad * c->groups;
    if (group_pad % width) return NULL; /* not a shape the Python side would pick */
    const int x_channels = c->cin * c->groups;
    const int64_t x_rows = (int64_t)(c->t_out - 1) * c->stride + (int64_t)(c->k - 1) * c->dilation + 1;
    float *x = random_floats(x_rows * x_channels);
    float *weight = random_floats((int64_t)cout * c->cin * c->k); /* (cout, cin, k), as torch */
    float *bias = random_floats(cpad), *res = random_floats((int64_t)c->t_out * cout);
    float *packed = calloc((size_t)cpad * c->k * c->cin, sizeof(float));
    for (int col = 0; col < cpad; col++) {
        int g = col / group_pad, within = col % group_pad;
        if (within >= c->group_cout) {
            bias[col] = 0.0f;
            continue;
        }
        int co = g * c->group_cout + within;
        for (int kk = 0; kk < c->k; kk++)
            for (int i = 0; i < c->cin; i++)
                packed[(((int64_t)(col / width) * c->k + kk) * c->cin + i) * width + col % width] =
                    weight[((int64_t)co * c->cin + i) * c->k + kk];
    }
    const int64_t out_size = (int64_t)c->t_out * cout * c->rep;
    float *out = c->want_out ? calloc(out_size, sizeof(float)) : NULL;
    float *out_act = c->want_act ? calloc(out_size, sizeof(float)) : NULL;
    Op op = {.kind = OP_CONV, .cin = c->cin, .cout = cout, .cpad = cpad, .k = c->k, .dilation = c->dilation,
             .stride = c->stride, .t_out = c->t_out, .alpha = c->alpha, .nv = c->nv, .act = c->act,
             .out_kind = c->out_kind, .x_channels = x_channels, .group_cout = c->group_cout,
             .group_pad = group_pad, .rep = c->rep, .seg = c->seg, .x = x, .w = packed,
             .bias = c->bias ? bias : NULL, .res = c->res ? res : NULL, .out = out, .out_act = out_act};
    engine_run(&op, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, threads);
    for (int t = 0; t < c->t_out; t++) {
        for (int co = 0; co < cout; co++) {
            int g = co / c->group_cout;
            double sum = 0.0, scale = 0.0;
            for (int kk = 0; kk < c->k; kk++)
                for (int i = 0; i < c->cin; i++) {
                    double term = (double)weight[((int64_t)co * c->cin + i) * c->k + kk] *
                                  x[((int64_t)t * c->stride + kk * c->dilation) * x_channels + g * c->cin + i];
                    sum += term;
                    scale += fabs(term);
                }
            int col = g * group_pad + co % c->group_cout;
            if (c->bias) sum += bias[col], scale += fabs(bias[col]);
            if (c->res) sum += res[(int64_t)t * cout + co], scale += fabs(res[(int64_t)t * cout + co]);
            double tolerance = 1e-5 * (scale + 1.0);
            int64_t piece = co / c->seg, at = (int64_t)t * cout * c->rep + piece * c->seg * c->rep + co % c->seg;
            for (int r = 0; r < c->rep; r++) {
                checks++;
                if (out) {
                    double want = c->out_kind == OUT_TANH ? tanh(sum) : sum;
                    if (fabs(out[at + (int64_t)r * c->seg] - want) > tolerance) fail(name, t, co, out[at + r * c->seg], want);
                }
                if (out_act) {
                    double want = activation_ref(c->act, c->alpha, sum);
                    if (fabs(out_act[at + (int64_t)r * c->seg] - want) > tolerance)
                        fail(name, t, co, out_act[at + r * c->seg], want);
                }
            }
        }
    }
    free(x), free(weight), free(bias), free(res), free(packed), free(out_act);
    return out;
}

/* Every block shape of the build: t_out = R rows runs kernel R x NV alone. */
static void test_kernel_shapes(void) {
    char name[64];
    for (int s = 0; s < 3; s++) {
        for (int rows = 1; rows <= ROWS[s]; rows++) {
            Case c = {.cin = 5, .group_cout = 2 * (1 << s) * VL, .groups = 1, .k = 3, .dilation = 2, .stride = 1,
                      .t_out = rows, .nv = 1 << s, .rep = 1, .bias = 1, .want_out = 1, .alpha = 1.0f};
            c.seg = c.group_cout;
            snprintf(name, sizeof name, "kernel %dx%d", rows, 1 << s);
            free(run_case(&c, name, 1));
        }
    }
}

/* Row independence with identical inputs: one op over T rows against the same op started at each
 * row with fewer rows (the engine picks other blocks and threads), bit for bit. */
static void test_rows_do_not_depend_on_blocking(int nv, int threads) {
    const int cin = 7, cout = 3 * nv * VL, k = 4, dilation = 3, total = 29;
    const int x_rows = total + (k - 1) * dilation;
    float *x = random_floats((int64_t)x_rows * cin), *w = random_floats((int64_t)cout * k * cin);
    float *bias = random_floats(cout), *whole = calloc((size_t)total * cout, sizeof(float));
    float *part = calloc((size_t)total * cout, sizeof(float));
    Op op = {.kind = OP_CONV, .cin = cin, .cout = cout, .cpad = cout, .k = k, .dilation = dilation, .stride = 1,
             .t_out = total, .alpha = 1.0f, .nv = nv, .x_channels = cin, .group_cout = cout, .group_pad = cout,
             .rep = 1, .seg = cout, .x = x, .w = w, .bias = bias, .out = NULL, .out_act = whole};
    engine_run(&op, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, threads);
    for (int size = 1; size <= 5; size += 4) { /* pieces of 1 row (its own kernel) and of 5 */
        memset(part, 0, sizeof(float) * total * cout);
        for (int start = 0; start < total; start += size) {
            Op piece = op;
            piece.x = x + (int64_t)start * cin;
            piece.t_out = total - start < size ? total - start : size;
            piece.out_act = part + (int64_t)start * cout;
            engine_run(&piece, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, 1);
        }
        for (int i = 0; i < total * cout; i++) {
            checks++;
            if (memcmp(&whole[i], &part[i], sizeof(float))) fail("rows vs blocking", i / cout, i % cout, part[i], whole[i]);
        }
    }
    free(x), free(w), free(bias), free(whole), free(part);
}

/* Row strides (a branch of a multi-receptive-field block): the op reading its skip from, and writing
 * its outputs into, a column band of buffers `bands` times wider gives the bits of the same op on
 * buffers of its own width, and leaves the other columns alone; many rows and one row. */
static void test_row_strides(int t_out) {
    const int cin = 5, cout = 2 * VL + 3, cpad = 3 * VL, k = 3, dilation = 2, bands = 3, band = 1;
    const int wide = bands * cout, x_rows = t_out + (k - 1) * dilation;
    float *x = random_floats((int64_t)x_rows * cin), *w = random_floats((int64_t)cpad * k * cin);
    float *bias = random_floats(cpad), *res = random_floats((int64_t)t_out * wide);
    float *own_res = malloc(sizeof(float) * t_out * cout), *own_out = calloc((size_t)t_out * cout, sizeof(float));
    float *own_act = calloc((size_t)t_out * cout, sizeof(float));
    float *out = random_floats((int64_t)t_out * wide), *act = random_floats((int64_t)t_out * wide);
    float *out_before = malloc(sizeof(float) * t_out * wide), *act_before = malloc(sizeof(float) * t_out * wide);
    memcpy(out_before, out, sizeof(float) * t_out * wide), memcpy(act_before, act, sizeof(float) * t_out * wide);
    for (int t = 0; t < t_out; t++) memcpy(own_res + t * cout, res + t * wide + band * cout, sizeof(float) * cout);
    Op op = {.kind = OP_CONV, .cin = cin, .cout = cout, .cpad = cpad, .k = k, .dilation = dilation, .stride = 1,
             .t_out = t_out, .alpha = 0.1f, .nv = 1, .act = ACT_LEAKY, .x_channels = cin, .group_cout = cout,
             .group_pad = cpad, .rep = 1, .seg = cout, .x = x, .w = w, .bias = bias, .res = own_res,
             .out = own_out, .out_act = own_act};
    engine_run(&op, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, 2);
    op.res = res + band * cout, op.out = out + band * cout, op.out_act = act + band * cout;
    op.res_stride = op.out_stride = op.act_stride = wide;
    engine_run(&op, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, 2);
    for (int t = 0; t < t_out; t++) {
        for (int c = 0; c < wide; c++) {
            const int64_t i = (int64_t)t * wide + c;
            const int inside = c / cout == band;
            const float want_out = inside ? own_out[t * cout + c % cout] : out_before[i];
            const float want_act = inside ? own_act[t * cout + c % cout] : act_before[i];
            checks += 2;
            if (memcmp(&out[i], &want_out, sizeof(float))) fail("row strides, out", t, c, out[i], want_out);
            if (memcmp(&act[i], &want_act, sizeof(float))) fail("row strides, out_act", t, c, act[i], want_act);
        }
    }
    free(x), free(w), free(bias), free(res), free(own_res), free(own_out), free(own_act);
    free(out), free(act), free(out_before), free(act_before);
}

static void test_epilogues(void) {
    /* groups of 3 channels padded to a vector, stride 2, each output kind, LeakyReLU and ELU, a channel
     * repeat in pieces that do and do not fill whole vectors */
    Case base = {.cin = 4, .group_cout = 3, .groups = 5, .k = 2, .dilation = 1, .stride = 2, .t_out = 17, .nv = 1,
                 .rep = 1, .seg = 15, .bias = 1, .res = 1, .want_out = 1, .want_act = 1, .alpha = 1.0f};
    free(run_case(&base, "grouped, padded, ELU", 2));
    Case leaky = base;
    leaky.act = ACT_LEAKY, leaky.alpha = 0.1f, leaky.res = 0;
    free(run_case(&leaky, "LeakyReLU", 2));
    Case output = base;
    output.out_kind = OUT_TANH, output.want_act = 0, output.groups = 1, output.group_cout = 1, output.seg = 1;
    free(run_case(&output, "tanh output", 1));
    Case repeat = {.cin = 6, .group_cout = 2 * VL, .groups = 1, .k = 3, .dilation = 1, .stride = 1, .t_out = 9,
                   .nv = 1, .rep = 3, .seg = VL, .bias = 1, .want_out = 1, .want_act = 1, .alpha = 0.2f,
                   .act = ACT_LEAKY};
    free(run_case(&repeat, "repeat, whole vectors", 2));
    repeat.group_cout = VL + 3, repeat.seg = VL + 3;
    free(run_case(&repeat, "repeat, part vectors", 2));
    /* one output row (the row kernels): grouped and padded; 7 vectors per group (a full and a part
     * batch of vectors); vectors of 2-vector column blocks */
    Case one_row = base;
    one_row.t_out = 1;
    free(run_case(&one_row, "one row, grouped", 2));
    Case wide = {.cin = 6, .group_cout = 7 * VL - 3, .groups = 2, .k = 3, .dilation = 2, .stride = 1, .t_out = 1,
                 .nv = 1, .rep = 1, .seg = 2 * (7 * VL - 3), .bias = 1, .res = 1, .want_out = 1, .want_act = 1,
                 .alpha = 1.0f};
    free(run_case(&wide, "one row, 7 vectors per group", 2));
    Case blocks = wide;
    blocks.group_cout = 6 * VL, blocks.groups = 1, blocks.nv = 2, blocks.seg = 6 * VL;
    free(run_case(&blocks, "one row, 2-vector blocks", 1));
}

static void test_activations(void) {
    for (int i = -2000; i <= 2000; i++) {
        float v = i * 0.05f;
        vf in = vset(v), e = elu(in, 1.0f), t = tanhv(in);
        double want_e = v > 0 ? v : expm1((double)v), want_t = tanh((double)v);
        checks += 2;
        if (fabs(e[0] - want_e) > 2e-7 * (fabs(want_e) + 1e-30) + 1e-45) fail("elu", i, 0, e[0], want_e);
        if (fabs(t[VL - 1] - want_t) > 3e-7 * fabs(want_t) + 1e-45) fail("tanh", i, 0, t[VL - 1], want_t);
    }
}

/* The plain residual VQ: picks[q * frames + t], the first code at the least distance. */
static void plain_vq(const float *codes, const float *x, int dim, int size, int books, int frames, int64_t *picks) {
    for (int t = 0; t < frames; t++) {
        double residual[64];
        for (int i = 0; i < dim; i++) residual[i] = x[(int64_t)t * dim + i];
        for (int q = 0; q < books; q++) {
            int best = 0;
            double least = INFINITY;
            for (int j = 0; j < size; j++) {
                double d = 0.0;
                for (int i = 0; i < dim; i++) {
                    double diff = residual[i] - codes[((int64_t)q * size + j) * dim + i];
                    d += diff * diff;
                }
                if (d < least) least = d, best = j;
            }
            picks[(int64_t)q * frames + t] = best;
            for (int i = 0; i < dim; i++) residual[i] -= codes[((int64_t)q * size + best) * dim + i];
        }
    }
}

/* Residual VQ of a few frames against the plain search. The code frame 0 picks in codebook 1 is
 * copied one block later (same lane) and to the last code (another lane): exact ties, which the
 * first code must win. */
static void test_vq(int threads) {
    const int dim = 12, size = 3 * VL + 5, books = 3, frames = 5, cpad = (size + VL - 1) / VL * VL;
    float *codes = random_floats((int64_t)books * size * dim), *x = random_floats((int64_t)frames * dim);
    int64_t *want = calloc((size_t)books * frames, sizeof(int64_t));
    plain_vq(codes, x, dim, size, books, frames, want);
    const int64_t pick = want[frames], copies[2] = {want[frames] + VL, size - 1};
    for (int c = 0; c < 2; c++)
        if (copies[c] < size && copies[c] != pick)
            memcpy(codes + ((int64_t)size + copies[c]) * dim, codes + ((int64_t)size + pick) * dim, sizeof(float) * dim);
    plain_vq(codes, x, dim, size, books, frames, want);
    float *embed2 = calloc((size_t)books * cpad * dim, sizeof(float)), *norm = malloc(sizeof(float) * books * cpad);
    float *vectors = calloc((size_t)books * cpad * dim, sizeof(float));
    for (int q = 0; q < books; q++)
        for (int j = 0; j < cpad; j++) {
            float n = 0.0f;
            for (int i = 0; i < dim; i++) {
                float c = j < size ? codes[((int64_t)q * size + j) * dim + i] : 0.0f;
                embed2[(int64_t)q * cpad * dim + ((int64_t)(j / VL) * dim + i) * VL + j % VL] = 2 * c;
                vectors[((int64_t)q * cpad + j) * dim + i] = c;
                n += c * c;
            }
            norm[q * cpad + j] = j < size ? n : __builtin_inff();
        }
    int64_t *got = calloc((size_t)books * frames, sizeof(int64_t));
    Op op = {.kind = OP_VQ, .cin = dim, .cout = size, .cpad = cpad, .k = books, .t_out = frames, .x = x,
             .w = embed2, .bias = norm, .res = vectors, .out = (float *)got};
    engine_run(&op, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, threads);
    for (int i = 0; i < books * frames; i++) {
        checks++;
        if (got[i] != want[i]) fail("vq", i % frames, i / frames, (double)got[i], (double)want[i]);
    }
    /* lookup: the sum of the chosen vectors, normalized; an out-of-range code is reported */
    float *latent = malloc(sizeof(float) * frames * dim), mean[12], scale[12];
    for (int i = 0; i < dim; i++) mean[i] = uniform(), scale[i] = 1.5f + uniform();
    Op lookup = {.kind = OP_LOOKUP, .cin = dim, .cout = size, .cpad = cpad, .k = books, .t_out = frames,
                 .x = (const float *)got, .res = vectors, .out = latent, .w = scale, .bias = mean};
    int bad = engine_run(&lookup, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, threads);
    checks++;
    if (bad) fail("lookup reported a bad code", 0, 0, bad, 0);
    for (int t = 0; t < frames; t++)
        for (int i = 0; i < dim; i++) {
            double sum = 0.0;
            for (int q = 0; q < books; q++) sum += vectors[((int64_t)q * cpad + got[(int64_t)q * frames + t]) * dim + i];
            double want = (sum - mean[i]) / scale[i];
            checks++;
            if (fabs(latent[(int64_t)t * dim + i] - want) > 1e-5 * (fabs(want) + 1)) fail("lookup", t, i, latent[t * dim + i], want);
        }
    got[3] = size;
    checks++;
    if (!engine_run(&lookup, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, threads)) fail("lookup took an out-of-range code", 0, 0, 0, 1);
    free(codes), free(x), free(want), free(embed2), free(norm), free(vectors), free(got), free(latent);
}

static uint16_t to_bf16(float f) { /* round to nearest even, as torch does (no NaN here) */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* Weights stored as bfloat16, or as int8 with a scale per column (`wtype`), every block shape: bit for
 * bit the float kernels on the same weights as floats (bf16 with a bias; int8 without one, each sum
 * then multiplied by its column's scale, so that the reference is one exact product). */
static void test_stored_weights(int wtype) {
    char name[64];
    for (int s = 0; s < 3; s++) {
        for (int rows = 1; rows <= ROWS[s]; rows++) {
            const int cin = 5, cout = 2 * (1 << s) * VL, k = 3, dilation = 2;
            const int64_t n_w = (int64_t)cout * k * cin, x_rows = rows + (k - 1) * dilation;
            float *x = random_floats(x_rows * cin), *w = random_floats(n_w), *scale = random_floats(cout);
            float *bias = random_floats(cout);
            uint16_t *wh = malloc(sizeof(uint16_t) * n_w);
            int8_t *wq = malloc((size_t)n_w);
            for (int64_t i = 0; i < n_w; i++) {
                if (wtype == W_BF16) {
                    wh[i] = to_bf16(w[i]);
                    uint32_t bits = (uint32_t)wh[i] << 16;
                    memcpy(&w[i], &bits, 4);
                } else {
                    wq[i] = (int8_t)(127.0f * w[i]);
                    w[i] = wq[i];
                }
            }
            for (int c = 0; c < cout; c++) scale[c] = 0.01f * (2.5f + scale[c]);
            float *want = calloc((size_t)rows * cout, sizeof(float)), *got = calloc((size_t)rows * cout, sizeof(float));
            Op op = {.kind = OP_CONV, .cin = cin, .cout = cout, .cpad = cout, .k = k, .dilation = dilation,
                     .stride = 1, .t_out = rows, .alpha = 1.0f, .nv = 1 << s, .x_channels = cin,
                     .group_cout = cout, .group_pad = cout, .rep = 1, .seg = cout, .x = x, .w = w,
                     .bias = wtype == W_BF16 ? bias : NULL, .out = want, .wtype = W_F32};
            engine_run(&op, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, 1);
            if (wtype == W_I8)
                for (int i = 0; i < rows * cout; i++) want[i] = want[i] * scale[i % cout];
            op.w = wtype == W_BF16 ? (const float *)wh : (const float *)wq, op.wtype = wtype, op.out = got;
            op.wscale = wtype == W_I8 ? scale : NULL;
            engine_run(&op, 1, NULL, 0, 0, x, x, 0, x, x, 0, x, x, 1, 2);
            snprintf(name, sizeof name, "%s kernel %dx%d", wtype == W_BF16 ? "bf16" : "int8", rows, 1 << s);
            for (int i = 0; i < rows * cout; i++) {
                checks++;
                if (memcmp(&want[i], &got[i], sizeof(float))) fail(name, i / cout, i % cout, got[i], want[i]);
            }
            free(x), free(w), free(scale), free(bias), free(wh), free(wq), free(want), free(got);
        }
    }
}

static float from_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* got within `ulps` units in the last place of want in float32 (the ELU and its gradient round
 * twice: expm1 and times alpha; plus alpha and times the gradient), or in bfloat16 (bf16) want's rounding or a neighbour of it, where
 * the float32 result and want lie on either side of a rounding boundary. Zeros exact. */
static int close_to(double got, double want, int bf16, double ulps) {
    if (want == 0) return got == 0;
    if (bf16) return abs((int)to_bf16((float)got) - (int)to_bf16((float)want)) <= 1;
    return fabs(got - want) <= ulps * fabs(want) / 8388608;
}

/* A training array's value i, float32 or bfloat16 (as stored, so a bfloat16 store rounds). */
static void store_value(char *p, int64_t i, float v, int bf16) {
    if (bf16) {
        ((uint16_t *)p)[i] = to_bf16(v);
    } else {
        ((float *)p)[i] = v;
    }
}

static float load_value(const char *p, int64_t i, int bf16) {
    return bf16 ? (float)from_bf16(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* One activation forward (out: `lead` zeros, then the values; filled with garbage first) and backward
 * from that output, over `rows` rows of `n` values `stride` apart (`out_stride` for out). */
static void run_training_activation(int kind, float param, const char *x, const char *g, char *out, char *gin,
                                    int64_t rows, int64_t n, int64_t lead, int64_t stride, int64_t out_stride,
                                    int bf16, int threads) {
    const int size = bf16 ? 2 : 4;
    memset(out, 0xff, size * rows * out_stride);
    engine_activation(x, stride, out, out_stride, lead, rows, n, param, kind, bf16, threads);
    engine_activation_backward(g, stride, out + size * lead, out_stride, gin, stride, rows, n, param, kind, bf16,
                               threads);
}

/* Training's ELU and its backward pass (engine_activation(_backward) with ACT_ELU) against double loops:
 * rows of several pieces of work with a tail, row strides wider than a row, the causal zeros before
 * each output row, the kink at 0, inputs far below -87, float32 and bfloat16 arrays; bfloat16
 * rounding to nearest even. */
static void test_training_elu(int bf16, int threads) {
    /* 9 rows: more than ACTIVATION_SERIAL values, so that the team computes them */
    const int64_t rows = 9, n = 2 * ACTIVATION_CHUNK + VL + 3, lead = 5, stride = n + 7, out_stride = lead + n + 2;
    const int size = bf16 ? 2 : 4;
    const float alpha = 0.7f;
    char *x = malloc(size * rows * stride), *g = malloc(size * rows * stride);
    char *out = malloc(size * rows * out_stride), *gin = malloc(size * rows * stride);
    double *xs = malloc(sizeof(double) * rows * stride), *gs = malloc(sizeof(double) * rows * stride);
    for (int64_t i = 0; i < rows * stride; i++) {
        float v = 8 * uniform(), w = uniform();
        if (i % 1000 == 1) v = 0.0f;
        if (i % 1000 == 2) v = -100.0f;
        store_value(x, i, v, bf16), store_value(g, i, w, bf16);
        xs[i] = load_value(x, i, bf16), gs[i] = load_value(g, i, bf16);
    }
    run_training_activation(ACT_ELU, alpha, x, g, out, gin, rows, n, lead, stride, out_stride, bf16, threads);
    const char *name = bf16 ? "training elu, bf16" : "training elu";
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < lead + n; j++) {
            const int64_t at = r * out_stride + j;
            double got = bf16 ? from_bf16(((uint16_t *)out)[at]) : ((float *)out)[at];
            double v = j < lead ? 0.0 : xs[r * stride + j - lead];
            double want = j < lead ? 0.0 : v > 0 ? v : alpha * expm1(v);
            checks++;
            if (!close_to(got, want, bf16, 2) && !(v < -87 && fabs(got + alpha) < 1e-7)) fail(name, r, j, got, want);
        }
        for (int64_t j = 0; j < n; j++) {  /* from the output as stored, ATen's formula in double */
            const int64_t at = r * stride + j, o_at = r * out_stride + lead + j;
            double got = bf16 ? from_bf16(((uint16_t *)gin)[at]) : ((float *)gin)[at];
            double o = bf16 ? from_bf16(((uint16_t *)out)[o_at]) : ((float *)out)[o_at];
            double want = o > 0 ? gs[at] : gs[at] * (o + alpha);
            checks++;
            if (!close_to(got, want, bf16, 2)) fail(name, r, j, got, want);
        }
    }
    float nan = NAN, tie;
    uint32_t tie_bits = 0x3f818000u; /* halfway between bfloat16 0x3f81 and 0x3f82: rounds to the even 0x3f82 */
    memcpy(&tie, &tie_bits, 4);
    vh h = to_bf16v(vset(nan)), t = to_bf16v(vset(tie));
    checks += 2;
    if (h[0] != 0x7fc0) fail("bf16 of NaN", 0, 0, h[0], 0x7fc0);
    if (t[VL - 1] != 0x3f82) fail("bf16 of a tie", 0, 0, t[VL - 1], 0x3f82);
    free(x), free(g), free(out), free(gin), free(xs), free(gs);
}

/* Training's LeakyReLU: ATen's values and gradients exactly (x > 0 ? x : x * slope, and the gradient's
 * branch taken from the output), the float32 product rounded to bfloat16 as ATen rounds it. */
static void test_training_leaky(int bf16, int threads) {
    const int64_t rows = 17, n = ACTIVATION_CHUNK + VL + 5, lead = 3, stride = n + 4, out_stride = lead + n + 1;
    const int size = bf16 ? 2 : 4;
    const float slope = 0.1f;
    char *x = malloc(size * rows * stride), *g = malloc(size * rows * stride);
    char *out = malloc(size * rows * out_stride), *gin = malloc(size * rows * stride);
    for (int64_t i = 0; i < rows * stride; i++) {
        store_value(x, i, 8 * uniform() * (i % 7 == 3 ? 0.0f : 1.0f), bf16), store_value(g, i, uniform(), bf16);
    }
    run_training_activation(ACT_LEAKY, slope, x, g, out, gin, rows, n, lead, stride, out_stride, bf16, threads);
    const char *name = bf16 ? "training leaky relu, bf16" : "training leaky relu";
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < lead + n; j++) {
            const int64_t at = r * out_stride + j, in = r * stride + j - lead;
            float v = j < lead ? 0.0f : load_value(x, in, bf16), want = v > 0 ? v : v * slope;
            double got = load_value(out, at, bf16);
            checks++;
            if (got != (bf16 ? from_bf16(to_bf16(want)) : want)) fail(name, r, j, got, want);
        }
        for (int64_t j = 0; j < n; j++) {
            const int64_t at = r * stride + j;
            float w = load_value(g, at, bf16), want = load_value(x, at, bf16) > 0 ? w : w * slope;
            double got = load_value(gin, at, bf16);
            checks++;
            if (got != (bf16 ? from_bf16(to_bf16(want)) : want)) fail(name, r, j, got, want);
        }
    }
    free(x), free(g), free(out), free(gin);
}

int main(void) {
    test_kernel_shapes();
    for (int s = 0; s < 3; s++)
        if (ROWS[s]) test_rows_do_not_depend_on_blocking(1 << s, 2);
    test_epilogues();
    test_row_strides(13);
    test_row_strides(1);
    test_stored_weights(W_BF16);
    test_stored_weights(W_I8);
    test_activations();
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (int threads = 1; threads <= 3; threads++) test_training_elu(bf16, threads), test_training_leaky(bf16, threads);
    for (int threads = 1; threads <= 3; threads++) test_vq(threads);
    printf("%s (%d lanes, fma %d): %d checks, %d failures\n", ISA, VL, HAS_FMA, checks, failures);
    return failures != 0;
}
