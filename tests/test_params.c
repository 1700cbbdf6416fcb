/* test_params.c - the parameter arena (layout, initialisation), Adam, the
 * parameter average, and checkpoints (round trip, every refusal, atomic
 * writes). */
#include <math.h>
#include <stdint.h>

#include "train/checkpoint.h"
#include "common.h"
#include "train/optim.h"
#include "core/params.h"

SUITE(arena);
SUITE(init);
SUITE(adam);
SUITE(ema);
SUITE(checkpoint);

static size_t request(fl_arena *a, const char *name, size_t size, fl_init init, double value)
{
    fl_param_spec s = { name, size, init, 0, 0, value, 0 };
    size_t off = (size_t)-1;
    fl_status st = fl_arena_request(a, name, &s, NULL, &off);
    cr_assert_eq(st, FL_OK, "request %s: %s", name, fl_err_msg());
    return off;
}

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

/* ---- arena layout ------------------------------------------------------- */

Test(arena, offsets_are_contiguous_and_16_aligned)
{
    static const size_t sizes[] = { 5, 16, 1, 33, 64, 17 };
    const size_t n = sizeof sizes / sizeof sizes[0];
    fl_arena a = { 0 };
    size_t off[6];
    for (size_t i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%zu", i);
        off[i] = request(&a, name, sizes[i], FL_INIT_ZERO, 0);
    }
    cr_assert_eq(off[0], 0);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(off[i] % 16, 0, "slice %zu starts at %zu", i, off[i]);
        if (i + 1 < n)
            cr_assert_eq(off[i + 1], off[i] + round16(sizes[i]), "gap or overlap after slice %zu",
                         i);
        const fl_param_rec *p = &a.p[i];
        cr_assert_eq(p->offset, off[i]);
        cr_assert_eq(p->size, sizes[i]);
    }
    cr_assert_eq(a.total, off[n - 1] + round16(sizes[n - 1]));
    cr_assert_eq(a.n, n);
    cr_assert_eq(fl_arena_find(&a, "p3"), &a.p[3]);
    cr_assert_null(fl_arena_find(&a, "p9"));

    cr_assert_eq(fl_arena_finalize(&a, 1), FL_OK);
    cr_assert_eq((uintptr_t)a.theta % 64, 0, "theta is not 64-byte aligned");
    cr_assert_eq((uintptr_t)a.grad % 64, 0, "grad is not 64-byte aligned");
    for (size_t i = 0; i < a.total; i++) cr_assert_eq(a.grad[i], 0);
    fl_arena_free(&a);
}

Test(arena, duplicate_name_is_rejected)
{
    fl_arena a = { 0 };
    request(&a, "flow.1.s.W0", 8, FL_INIT_ZERO, 0);
    fl_param_spec s = { "W0", 4, FL_INIT_ZERO, 0, 0, 0, 0 };
    size_t off = 12345;
    fl_status st = fl_arena_request(&a, "flow.1.s.W0", &s, NULL, &off);
    cr_assert_eq(st, FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "'flow.1.s.W0' requested twice");
    cr_assert_eq(off, 12345, "*offset written on failure");
    cr_assert_eq(a.n, 1);
    cr_assert_eq(a.total, 16);
    fl_arena_free(&a);
}

Test(arena, request_after_finalize_is_rejected)
{
    fl_arena a = { 0 };
    request(&a, "a", 3, FL_INIT_ZERO, 0);
    cr_assert_eq(fl_arena_finalize(&a, 1), FL_OK);
    fl_param_spec s = { "b", 3, FL_INIT_ZERO, 0, 0, 0, 0 };
    size_t off;
    fl_status st = fl_arena_request(&a, "b", &s, NULL, &off);
    cr_assert_neq(st, FL_OK);
    assert_contains(fl_err_msg(), "'b' requested after the model was built");
    cr_assert_eq(a.n, 1);
    cr_assert_eq(a.total, 16);
    fl_arena_free(&a);
}

/* ---- initialisation ----------------------------------------------------- */

Test(init, glorot_range)
{
    const uint32_t fi = 30, fo = 20;
    fl_arena a = { 0 };
    fl_param_spec s = { "W", (size_t)fi * fo, FL_INIT_GLOROT, fi, fo, 0, 0 };
    size_t off;
    cr_assert_eq(fl_arena_request(&a, "W", &s, NULL, &off), FL_OK);
    cr_assert_eq(fl_arena_finalize(&a, 5), FL_OK);
    const double lim = sqrt(6.0 / (fi + fo));
    double maxabs = 0, sum = 0;
    size_t zeros = 0;
    for (size_t i = 0; i < s.size; i++) {
        double w = a.theta[off + i];
        cr_assert(fabs(w) <= lim, "|w[%zu]| = %g > %g", i, fabs(w), lim);
        maxabs = fmax(maxabs, fabs(w));
        sum += w;
        zeros += w == 0;
    }
    cr_assert_lt(zeros, 2, "Glorot init left %zu zeros", zeros);
    /* 600 draws of U(-lim, lim) reach close to the bound and average ~0. */
    cr_assert_gt(maxabs, 0.9 * lim, "values do not fill the range: max %g of %g", maxabs, lim);
    cr_assert_lt(fabs(sum / s.size), 0.1 * lim);
    fl_arena_free(&a);
}

Test(init, const_normal_uniform_and_explicit_values)
{
    fl_arena a = { 0 };
    size_t oc = request(&a, "c", 7, FL_INIT_CONST, 0.25);
    size_t on = request(&a, "n", 20000, FL_INIT_NORMAL, 0.5);
    size_t ou = request(&a, "u", 1000, FL_INIT_UNIFORM, 0.1);
    size_t oz = request(&a, "z", 9, FL_INIT_ZERO, 3.0);
    const fl_real vals[3] = { 1, -2, 3 };
    fl_param_spec sv = { "v", 3, FL_INIT_NORMAL, 0, 0, 1.0, 0 };
    size_t ov;
    cr_assert_eq(fl_arena_request(&a, "v", &sv, vals, &ov), FL_OK);
    cr_assert_eq(fl_arena_finalize(&a, 9), FL_OK);

    for (size_t i = 0; i < 7; i++) cr_assert_eq(a.theta[oc + i], (fl_real)0.25);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < 20000; i++) {
        s += a.theta[on + i];
        s2 += (double)a.theta[on + i] * a.theta[on + i];
    }
    double mean = s / 20000, sd = sqrt(s2 / 20000 - mean * mean);
    cr_assert_lt(fabs(mean), 0.02, "N(0, 0.5^2) mean %g", mean);
    cr_assert_lt(fabs(sd - 0.5), 0.02, "N(0, 0.5^2) sd %g", sd);
    for (size_t i = 0; i < 1000; i++) cr_assert_leq(fabs((double)a.theta[ou + i]), 0.1);
    for (size_t i = 0; i < 9; i++) cr_assert_eq(a.theta[oz + i], 0);
    for (size_t i = 0; i < 3; i++) cr_assert_eq(a.theta[ov + i], vals[i], "explicit values win");
    fl_arena_free(&a);
}

/* theta of an arena with slices "x" (and "y" before it when y_first). */
static fl_real *init_values(uint64_t seed, int y_first, size_t *ox)
{
    fl_arena a = { 0 };
    if (y_first) request(&a, "y", 50, FL_INIT_NORMAL, 1.0);
    fl_param_spec s = { "x", 100, FL_INIT_GLOROT, 10, 10, 0, 0 };
    cr_assert_eq(fl_arena_request(&a, "x", &s, NULL, ox), FL_OK);
    cr_assert_eq(fl_arena_finalize(&a, seed), FL_OK);
    fl_real *copy = malloc(100 * sizeof *copy);
    memcpy(copy, a.theta + *ox, 100 * sizeof *copy);
    fl_arena_free(&a);
    return copy;
}

Test(init, deterministic_per_seed_and_name)
{
    size_t o1, o2, o3, o4;
    fl_real *a = init_values(42, 0, &o1), *b = init_values(42, 0, &o2);
    fl_real *c = init_values(43, 0, &o3), *d = init_values(42, 1, &o4);
    const size_t bytes = 100 * sizeof(fl_real);
    cr_assert_eq(memcmp(a, b, bytes), 0, "same seed, different values");
    cr_assert_neq(memcmp(a, c, bytes), 0, "another seed, same values");
    cr_assert_neq(o4, o1, "the slice moved");
    cr_assert_eq(memcmp(a, d, bytes), 0, "values depend on the request order");
    free(a);
    free(b);
    free(c);
    free(d);
}

/* ---- Adam --------------------------------------------------------------- */

Test(adam, one_step_moves_toward_the_minimum)
{
    /* f(theta) = 0.5 |theta - m|^2, gradient theta - m. */
    const fl_real m[5] = { 0.5, -1, 2, 0, 0.25 };
    fl_real theta[5] = { 1.5, -3, 2.5, 0, -0.75 }, grad[5];
    fl_adam o;
    cr_assert_eq(fl_adam_init(&o, 5, 0.1, 0.9, 0.999, 1e-8), FL_OK);
    for (int i = 0; i < 5; i++) grad[i] = theta[i] - m[i];
    fl_real before[5];
    memcpy(before, theta, sizeof theta);
    fl_adam_step(&o, theta, grad);
    cr_assert_eq(o.t, 1);
    for (int i = 0; i < 5; i++) {
        double d0 = fabs((double)before[i] - m[i]), d1 = fabs((double)theta[i] - m[i]);
        if (grad[i] == 0) {
            cr_assert_eq(theta[i], before[i], "a zero gradient moved theta[%d]", i);
            continue;
        }
        cr_assert_lt(d1, d0, "theta[%d] moved away from the minimum", i);
        /* Adam's first step is lr * sign(g) after bias correction. */
        cr_assert_float_eq(fabs((double)theta[i] - before[i]), 0.1, 1e-5, "step %d", i);
    }
    fl_adam_free(&o);
}

Test(adam, converges_on_a_quadratic)
{
    const fl_real m[3] = { 0.5, -1, 2 };
    fl_real theta[3] = { 3, 3, -3 }, grad[3];
    fl_adam o;
    cr_assert_eq(fl_adam_init(&o, 3, 0.05, 0.9, 0.999, 1e-8), FL_OK);
    for (int t = 0; t < 1000; t++) {
        for (int i = 0; i < 3; i++) grad[i] = theta[i] - m[i];
        fl_adam_step(&o, theta, grad);
    }
    for (int i = 0; i < 3; i++)
        cr_assert_float_eq(theta[i], m[i], 0.05, "theta[%d] = %g", i, (double)theta[i]);
    fl_adam_free(&o);
}

/* The zeroing step is Adam exactly, and leaves a zero gradient (over more
 * parameters than one thread's share, so the parallel path runs too). */
Test(adam, step_zero_equals_step_and_clears_the_gradient)
{
    const size_t n = 600000;
    fl_real *t1 = malloc(n * sizeof *t1), *t2 = malloc(n * sizeof *t2);
    fl_real *g1 = malloc(n * sizeof *g1), *g2 = malloc(n * sizeof *g2);
    cr_assert(t1 && t2 && g1 && g2);
    fl_adam a, b;
    cr_assert_eq(fl_adam_init(&a, n, 1e-3, 0.9, 0.999, 1e-4), FL_OK);
    cr_assert_eq(fl_adam_init(&b, n, 1e-3, 0.9, 0.999, 1e-4), FL_OK);
    for (size_t i = 0; i < n; i++) t1[i] = t2[i] = (fl_real)((double)(i % 97) / 50 - 1);
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < n; i++)
            g1[i] = g2[i] = (fl_real)(((double)((i * 7 + (size_t)step) % 31) - 15) * 1e-3);
        fl_adam_step(&a, t1, g1);
        fl_adam_step_zero(&b, t2, g2);
        for (size_t i = 0; i < n; i++) {
            cr_assert(t1[i] == t2[i], "step %d: theta[%zu] %g vs %g", step, i, (double)t1[i],
                      (double)t2[i]);
            cr_assert(g2[i] == 0, "step %d: gradient[%zu] = %g left", step, i, (double)g2[i]);
        }
    }
    fl_adam_free(&a);
    fl_adam_free(&b);
    free(t1);
    free(t2);
    free(g1);
    free(g2);
}

/* ---- parameter average -------------------------------------------------- */

Test(ema, bias_corrected_average)
{
    fl_ema e;
    cr_assert_eq(fl_ema_init(&e, 3, 0.9), FL_OK);
    const fl_real a[3] = { 1, -2, 4 }, b[3] = { 3, 0, 4 };
    fl_real out[3];
    fl_ema_update(&e, a);
    fl_ema_get(&e, out);
    for (int i = 0; i < 3; i++) cr_assert_float_eq(out[i], a[i], 1e-5, "one update: the value");
    fl_ema_update(&e, b);
    fl_ema_get(&e, out);
    /* (0.9 * 0.1 a + 0.1 b) / (1 - 0.81) */
    for (int i = 0; i < 3; i++)
        cr_assert_float_eq(out[i], (0.09 * a[i] + 0.1 * b[i]) / 0.19, 1e-5, "out[%d]", i);
    cr_assert_eq(e.t, 2);
    fl_ema_free(&e);

    cr_assert_eq(fl_ema_init(&e, 3, 0), FL_OK);
    cr_assert_null(e.avg, "decay 0 means no average");
    fl_ema_update(&e, a);
    cr_assert_eq(e.t, 0);
    fl_ema_free(&e);
}

/* ---- checkpoints -------------------------------------------------------- */

typedef struct model {
    fl_arena a;
    fl_adam opt;
    fl_ema ema;
} model;

/* A small model: three named slices, two Adam steps taken so m, v, t and
 * the average are all non-trivial. `extra` adds one more slice; `rename`
 * renames one. */
static void make_model(model *md, int extra, int rename)
{
    memset(md, 0, sizeof *md);
    request(&md->a, "flow.1.s.W0", 37, FL_INIT_NORMAL, 1.0);
    request(&md->a, rename ? "flow.1.t.b0" : "flow.1.s.b0", 5, FL_INIT_NORMAL, 1.0);
    request(&md->a, "flow.2.b", 2, FL_INIT_NORMAL, 1.0);
    if (extra) request(&md->a, "flow.3.b", 2, FL_INIT_NORMAL, 1.0);
    cr_assert_eq(fl_arena_finalize(&md->a, 3), FL_OK);
    cr_assert_eq(fl_adam_init(&md->opt, md->a.total, 1e-2, 0.9, 0.999, 1e-8), FL_OK);
    cr_assert_eq(fl_ema_init(&md->ema, md->a.total, 0.5), FL_OK);
    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; i < md->a.total; i++) md->a.grad[i] = md->a.theta[i] * (s + 1);
        fl_adam_step(&md->opt, md->a.theta, md->a.grad);
        fl_ema_update(&md->ema, md->a.theta);
    }
}

static void free_model(model *md)
{
    fl_ema_free(&md->ema);
    fl_adam_free(&md->opt);
    fl_arena_free(&md->a);
}

static char *save_model(const char *dir, model *md)
{
    char *path = fl_strfmt("%s/model.flc", dir);
    cr_assert_eq(fl_checkpoint_save(path, &md->a, &md->opt, &md->ema, 42), FL_OK, "%s",
                 fl_err_msg());
    return path;
}

static void read_bytes(const char *path, char **data, size_t *n)
{
    cr_assert_eq(fl_read_file(path, data, n), FL_OK, "%s", fl_err_msg());
}

static void write_bytes(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* Loading `path` into `md` must fail with FL_ERR_FORMAT, leave theta as it
 * was, and say `why`. */
static void expect_load_fails(const char *path, model *md, const char *why)
{
    size_t bytes = md->a.total * sizeof(fl_real);
    fl_real *keep = malloc(bytes);
    memcpy(keep, md->a.theta, bytes);
    fl_err_clear();
    fl_status st = fl_checkpoint_load(path, &md->a, &md->opt, &md->ema, 0, NULL);
    cr_assert_eq(st, FL_ERR_FORMAT, "expected FL_ERR_FORMAT, got %d (%s)", st, fl_err_msg());
    assert_contains(fl_err_msg(), path);
    assert_contains(fl_err_msg(), why);
    cr_assert_eq(memcmp(keep, md->a.theta, bytes), 0, "a refused checkpoint changed theta");
    free(keep);
}

Test(checkpoint, round_trip_restores_every_byte)
{
    char *dir = make_tmpdir();
    model md;
    make_model(&md, 0, 0);
    char *path = save_model(dir, &md);
    size_t bytes = md.a.total * sizeof(fl_real);
    fl_real *theta = malloc(bytes), *m = malloc(bytes), *v = malloc(bytes);
    fl_real *avg = malloc(bytes), *mean = malloc(bytes);
    memcpy(theta, md.a.theta, bytes);
    memcpy(m, md.opt.m, bytes);
    memcpy(v, md.opt.v, bytes);
    memcpy(avg, md.ema.avg, bytes);
    fl_ema_get(&md.ema, mean);
    cr_assert_neq(memcmp(mean, theta, bytes), 0, "the average must differ from the iterate");

    memset(md.a.theta, 0x5a, bytes);
    memset(md.opt.m, 0x5a, bytes);
    memset(md.opt.v, 0x5a, bytes);
    memset(md.ema.avg, 0x5a, bytes);
    md.opt.t = md.ema.t = 0;
    uint64_t step = 0;
    cr_assert_eq(fl_checkpoint_load(path, &md.a, &md.opt, &md.ema, 0, &step), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(step, 42);
    cr_assert_eq(md.opt.t, 2);
    cr_assert_eq(md.ema.t, 2);
    cr_assert_eq(memcmp(md.a.theta, theta, bytes), 0, "theta differs after the round trip");
    cr_assert_eq(memcmp(md.opt.m, m, bytes), 0, "Adam m differs after the round trip");
    cr_assert_eq(memcmp(md.opt.v, v, bytes), 0, "Adam v differs after the round trip");
    cr_assert_eq(memcmp(md.ema.avg, avg, bytes), 0, "the average differs after the round trip");

    /* Sampling: no optimizer, theta gets the bias-corrected average. */
    memset(md.a.theta, 0, bytes);
    cr_assert_eq(fl_checkpoint_load(path, &md.a, NULL, NULL, 1, NULL), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(memcmp(md.a.theta, mean, bytes), 0, "use_average did not load the average");
    /* ... or the iterate itself when asked. */
    cr_assert_eq(fl_checkpoint_load(path, &md.a, NULL, NULL, 0, NULL), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(memcmp(md.a.theta, theta, bytes), 0);

    free(theta);
    free(m);
    free(v);
    free(avg);
    free(mean);
    free(path);
    free_model(&md);
    remove_tree(dir);
}

Test(checkpoint, truncated_file)
{
    char *dir = make_tmpdir();
    model md;
    make_model(&md, 0, 0);
    char *path = save_model(dir, &md);
    char *data;
    size_t n;
    read_bytes(path, &data, &n);
    write_bytes(path, data, n - 7);
    expect_load_fails(path, &md, "truncated");
    write_bytes(path, data, 20); /* inside the header */
    expect_load_fails(path, &md, "truncated");
    write_bytes(path, data, 0);
    expect_load_fails(path, &md, "bad magic");
    free(data);
    free(path);
    free_model(&md);
    remove_tree(dir);
}

Test(checkpoint, flipped_byte_in_the_body)
{
    char *dir = make_tmpdir();
    model md;
    make_model(&md, 0, 0);
    char *path = save_model(dir, &md);
    char *data;
    size_t n;
    read_bytes(path, &data, &n);
    /* One bit of theta, which starts right after the 40-byte header and the
     * manifest (u32 length, name, u64 offset, u64 size per tensor). */
    size_t body = 40;
    for (size_t i = 0; i < md.a.n; i++) body += 20 + strlen(md.a.p[i].name);
    cr_assert_lt(body + 5, n);
    data[body + 5] ^= 0x10;
    write_bytes(path, data, n);
    expect_load_fails(path, &md, "checksum mismatch");
    data[body + 5] ^= 0x10;
    data[n - 1] ^= 0x01; /* the checksum itself */
    write_bytes(path, data, n);
    expect_load_fails(path, &md, "checksum mismatch");
    free(data);
    free(path);
    free_model(&md);
    remove_tree(dir);
}

/* Issue 13: a damaged byte in the manifest (a tensor's size) read as a
 * checkpoint "made from a different configuration"; the checksum is
 * checked first, and fl_checkpoint_peek (what `run --resume` reads first)
 * no longer calls a damaged file "of format version 2". */
Test(checkpoint, flipped_byte_in_the_manifest_is_corruption)
{
    char *dir = make_tmpdir();
    model md;
    make_model(&md, 0, 0);
    char *path = save_model(dir, &md);
    char *data;
    size_t n;
    read_bytes(path, &data, &n);
    /* the last byte of the first tensor's u64 size */
    size_t at = 40 + 4 + strlen(md.a.p[0].name) + 8 + 7;
    data[at] ^= 0xff;
    write_bytes(path, data, n);
    expect_load_fails(path, &md, "checksum mismatch");
    uint64_t step;
    fl_checkpoint_run rec;
    cr_assert_eq(fl_checkpoint_peek(path, &step, &rec), FL_ERR_FORMAT);
    assert_contains(fl_err_msg(), "checkpoint is corrupt (checksum mismatch");
    free(data);
    free(path);
    free_model(&md);
    remove_tree(dir);
}

Test(checkpoint, wrong_magic_version_and_real_size)
{
    char *dir = make_tmpdir();
    model md;
    make_model(&md, 0, 0);
    char *path = save_model(dir, &md);
    char *data;
    size_t n;
    read_bytes(path, &data, &n);
    data[0] = 'X';
    write_bytes(path, data, n);
    expect_load_fails(path, &md, "not a flowlab checkpoint (bad magic)");
    data[0] = 'F';
    data[8] = 99; /* u32 version */
    write_bytes(path, data, n);
    expect_load_fails(path, &md, "format version 99");
    data[8] = 1;
    data[12] = sizeof(fl_real) == 4 ? 8 : 4; /* u32 sizeof(fl_real) */
    write_bytes(path, data, n);
    expect_load_fails(path, &md, sizeof(fl_real) == 4 ? "8-byte reals" : "4-byte reals");
    free(data);
    free(path);
    free_model(&md);
    remove_tree(dir);
}

Test(checkpoint, different_model)
{
    char *dir = make_tmpdir();
    model md, bigger, renamed;
    make_model(&md, 0, 0);
    make_model(&bigger, 1, 0);
    make_model(&renamed, 0, 1);
    cr_assert_eq(renamed.a.total, md.a.total, "same size, different name");
    char *path = save_model(dir, &md);
    expect_load_fails(path, &bigger, "different configuration");
    expect_load_fails(path, &renamed, "different configuration");
    assert_contains(fl_err_msg(), "'flow.1.s.b0'");
    assert_contains(fl_err_msg(), "'flow.1.t.b0'");
    free(path);
    free_model(&md);
    free_model(&bigger);
    free_model(&renamed);
    remove_tree(dir);
}

Test(checkpoint, missing_file)
{
    model md;
    make_model(&md, 0, 0);
    cr_assert_eq(fl_checkpoint_load("/nonexistent/flowlab/model.flc", &md.a, NULL, NULL, 0, NULL),
                 FL_ERR_IO);
    assert_contains(fl_err_msg(), "/nonexistent/flowlab/model.flc");
    free_model(&md);
}

Test(checkpoint, written_atomically)
{
    char *dir = make_tmpdir();
    model md;
    make_model(&md, 0, 0);
    char *path = save_model(dir, &md);
    /* Overwrite it twice: each save replaces the file by a rename. */
    cr_assert_eq(fl_checkpoint_save(path, &md.a, NULL, NULL, 1), FL_OK);
    cr_assert_eq(fl_checkpoint_save(path, &md.a, &md.opt, &md.ema, 2), FL_OK);
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        files++;
        cr_assert_str_eq(de->d_name, "model.flc", "leftover file %s", de->d_name);
    }
    closedir(d);
    cr_assert_eq(files, 1);
    uint64_t step;
    cr_assert_eq(fl_checkpoint_load(path, &md.a, &md.opt, &md.ema, 0, &step), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(step, 2);

    /* A save into a missing folder fails cleanly. */
    char *bad = fl_strfmt("%s/no/such/dir/model.flc", dir);
    cr_assert_eq(fl_checkpoint_save(bad, &md.a, NULL, NULL, 0), FL_ERR_IO);
    assert_contains(fl_err_msg(), bad);
    free(bad);
    free(path);
    free_model(&md);
    remove_tree(dir);
}
