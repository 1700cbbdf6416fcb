/* test_rng.c - Philox4x32-10 against the Random123 known answers, stream
 * values independent of how the work is split across threads, normal
 * moments, and a short training run that is bit-identical with 1 and 2
 * OpenMP threads. */
#include <math.h>
#include <omp.h>

#include "common.h"
#include "compute/fastnormal.h"
#include "core/log.h"
#include "tasks/task_density.h"

SUITE(philox);
SUITE(streams);
SUITE(training);

static void philox_is(uint32_t k0, uint32_t k1, const uint32_t ctr[4], const uint32_t want[4])
{
    fl_rng_key key = { { k0, k1 } };
    uint32_t out[4];
    fl_philox4x32(key, ctr, out);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(out[i], want[i], "word %d: %08x, expected %08x", i, out[i], want[i]);
}

Test(philox, known_answers)
{
    const uint32_t zero[4] = { 0, 0, 0, 0 };
    const uint32_t want0[4] = { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 };
    philox_is(0, 0, zero, want0);

    const uint32_t ones[4] = { 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff };
    const uint32_t want1[4] = { 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd };
    philox_is(0xffffffff, 0xffffffff, ones, want1);

    const uint32_t pi[4] = { 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344 };
    const uint32_t want2[4] = { 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 };
    philox_is(0xa4093822, 0x299f31d0, pi, want2);
}

/* Numbers 0..3 of key 0, sub-stream 0 come from the all-zero counter, whose
 * words are the first known answer: u = (w + 0.5) / 2^32, and Box-Muller
 * on the word pairs (0,1) and (2,3) as rng.h documents. */
Test(philox, uniform_and_normal_from_the_known_block)
{
    const uint32_t w[4] = { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 };
    fl_rng_key key = { { 0, 0 } };
    fl_real u[4], z[4];
    fl_rng_uniform(key, 0, 0, 4, u);
    fl_rng_normal(key, 0, 0, 4, z);
    const double tol = sizeof(fl_real) == 4 ? 1e-6 : 1e-13;
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(u[i], (w[i] + 0.5) / 4294967296.0, tol, "u[%d]", i);
    for (int p = 0; p < 4; p += 2) {
        double r = sqrt(-2 * log((w[p] + 0.5) / 4294967296.0));
        double a = 2 * 3.14159265358979323846 * ((w[p + 1] + 0.5) / 4294967296.0);
        cr_assert_float_eq(z[p], r * cos(a), tol * 4, "z[%d]", p);
        cr_assert_float_eq(z[p + 1], r * sin(a), tol * 4, "z[%d]", p + 1);
    }
    /* Starting mid-block gives the same numbers as the full block. */
    fl_real tail[2];
    fl_rng_normal(key, 0, 2, 2, tail);
    cr_assert_eq(memcmp(tail, z + 2, sizeof tail), 0);
}

Test(philox, keys_from_names)
{
    fl_rng_key a = fl_rng_key_make(1, "data.train"), b = fl_rng_key_make(1, "data.train");
    fl_rng_key c = fl_rng_key_make(2, "data.train"), d = fl_rng_key_make(1, "data.test");
    cr_assert(a.k[0] == b.k[0] && a.k[1] == b.k[1], "a key is a pure function of its inputs");
    cr_assert(a.k[0] != c.k[0] || a.k[1] != c.k[1], "the seed does not change the key");
    cr_assert(a.k[0] != d.k[0] || a.k[1] != d.k[1], "the name does not change the key");
}

enum { N = 10007, FIRST = 3, CHUNK = 37 };

/* out[0..N) = numbers FIRST .. FIRST+N-1 of (key, sub), filled in uneven
 * chunks by `threads` OpenMP threads; returns the team size seen. */
static int fill_split(int normal, fl_rng_key key, uint64_t sub, int threads, fl_real *out)
{
    int team = 0;
    omp_set_num_threads(threads);
#pragma omp parallel
    {
#pragma omp single
        team = omp_get_num_threads();
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < (N + CHUNK - 1) / CHUNK; c++) {
            size_t i0 = (size_t)c * CHUNK, len = N - i0 < CHUNK ? N - i0 : CHUNK;
            if (normal) fl_rng_normal(key, sub, FIRST + i0, len, out + i0);
            else fl_rng_uniform(key, sub, FIRST + i0, len, out + i0);
        }
    }
    return team;
}

static void check_split(int normal)
{
    fl_rng_key key = fl_rng_key_make(7, "test.split");
    fl_real *one = malloc(N * sizeof *one), *split = malloc(N * sizeof *split);
    cr_assert(one && split);
    if (normal) fl_rng_normal(key, 5, FIRST, N, one);
    else fl_rng_uniform(key, 5, FIRST, N, one);
    for (int threads = 1; threads <= 2; threads++) {
        memset(split, 0, N * sizeof *split);
        int team = fill_split(normal, key, 5, threads, split);
        cr_assert_eq(team, threads, "asked for %d threads, got %d", threads, team);
        cr_assert_eq(memcmp(one, split, N * sizeof *one), 0,
                     "%s numbers depend on the split with %d threads",
                     normal ? "normal" : "uniform", threads);
    }
    /* Another sub-stream gives other numbers. */
    if (normal) fl_rng_normal(key, 6, FIRST, N, split);
    else fl_rng_uniform(key, 6, FIRST, N, split);
    cr_assert_neq(memcmp(one, split, N * sizeof *one), 0);
    free(one);
    free(split);
}

Test(streams, normal_independent_of_split_and_threads) { check_split(1); }
Test(streams, uniform_independent_of_split_and_threads) { check_split(0); }

Test(streams, normal_moments)
{
    enum { M = 100000 };
    fl_real *z = malloc(M * sizeof *z);
    cr_assert_not_null(z);
    fl_rng_normal(fl_rng_key_make(11, "moments"), 0, 0, M, z);
    double s = 0, s2 = 0, s4 = 0;
    for (int i = 0; i < M; i++) {
        cr_assert(isfinite(z[i]));
        s += z[i];
        s2 += (double)z[i] * z[i];
        s4 += (double)z[i] * z[i] * z[i] * z[i];
    }
    /* Neighbours share a Philox block (and a Box-Muller pair): they must
     * still be uncorrelated. */
    double lag = 0;
    for (int i = 0; i + 1 < M; i++) lag += (double)z[i] * z[i + 1];
    cr_assert_lt(fabs(lag / (M - 1)), 0.015, "lag-1 correlation %g", lag / (M - 1));
    double mean = s / M, var = s2 / M - mean * mean;
    /* Standard errors: mean 0.0032, variance 0.0045, fourth moment ~0.03. */
    cr_assert_lt(fabs(mean), 0.015, "mean %g", mean);
    cr_assert_lt(fabs(var - 1), 0.02, "variance %g", var);
    cr_assert_lt(fabs(s4 / M - 3), 0.15, "fourth moment %g", s4 / M);
    free(z);
}

Test(streams, uniform_in_open_interval)
{
    enum { M = 100000 };
    fl_real *u = malloc(M * sizeof *u);
    fl_rng_uniform(fl_rng_key_make(12, "uniform"), 0, 0, M, u);
    double s = 0;
    for (int i = 0; i < M; i++) {
        cr_assert(u[i] >= 0 && u[i] <= 1, "u[%d] = %g", i, (double)u[i]);
        s += u[i];
    }
    cr_assert_lt(fabs(s / M - 0.5), 0.005);
    cr_assert_eq(fl_rng_u01(0) > 0, 1);
    cr_assert_eq(fl_rng_u01(0xffffffffu) < 1, 1);
    free(u);
}

/* ---- whole training runs ------------------------------------------------ */

static const char *const train_ini = "[experiment]\n"
                                     "seed = 1\n"
                                     "[data]\n"
                                     "type = moons\n"
                                     "test_size = 1000\n"
                                     "[flow.1]\n"
                                     "type = affine-coupling\n"
                                     "repeat = 8\n"
                                     "hidden = 64,64\n"
                                     "[train]\n"
                                     "steps = 30\n"
                                     "batch = 256\n"
                                     "eval_every = 10\n"
                                     "[eval]\n"
                                     "batch = 512\n";

/* Trains train_ini with `threads` threads; returns a copy of theta. */
static fl_real *train(const fl_registry *r, int threads, size_t *total, fl_density_result *res,
                      fl_real **init)
{
    omp_set_num_threads(threads);
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "det.ini", train_ini, NULL, &e), FL_OK, "%s",
                 fl_err_msg());
    size_t bytes = e->arena.total * sizeof(fl_real);
    if (init) {
        *init = malloc(bytes);
        memcpy(*init, e->arena.theta, bytes);
    }
    cr_assert_eq(fl_density_train(e, NULL, 0, res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(res->steps, 30);
    fl_real *theta = malloc(bytes);
    memcpy(theta, e->arena.theta, bytes);
    *total = e->arena.total;
    fl_experiment_free(e);
    return theta;
}

Test(training, bit_identical_with_1_and_2_threads, .timeout = 120)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    size_t n1, n2;
    fl_density_result r1, r2;
    fl_real *init = NULL;
    fl_real *t1 = train(r, 1, &n1, &r1, &init);
    fl_real *t2 = train(r, 2, &n2, &r2, NULL);
    cr_assert_eq(n1, n2);
    cr_assert_neq(memcmp(t1, init, n1 * sizeof(fl_real)), 0, "training did not move theta");
    size_t diff = 0;
    for (size_t i = 0; i < n1; i++) diff += memcmp(&t1[i], &t2[i], sizeof(fl_real)) != 0;
    cr_assert_eq(diff, 0, "%zu of %zu parameters differ between 1 and 2 threads", diff, n1);
    cr_assert_eq(memcmp(&r1.test_nll, &r2.test_nll, sizeof(double)), 0,
                 "test NLL %.17g vs %.17g", r1.test_nll, r2.test_nll);
    cr_assert_eq(memcmp(&r1.train_nll, &r2.train_nll, sizeof(double)), 0);
    cr_assert(isfinite(r1.test_nll));
    free(init);
    free(t1);
    free(t2);
    fl_registry_free(r);
}

/* fl_normals (the VAE's vectorised noise): moments and tails of N(0,1),
 * and the same number at the same index whatever the split. */
Test(rng, fast_normals_are_standard_normal_and_split_invariant)
{
    const size_t n = 2000000;
    fl_real *z = malloc(n * sizeof *z);
    cr_assert_not_null(z);
    fl_rng_key key = fl_rng_key_make(9, "fast");
    fl_normals(key, 4, 0, n, z);
    double m = 0, v = 0, s3 = 0, k4 = 0;
    size_t tail3 = 0;
    for (size_t i = 0; i < n; i++) {
        double x = z[i];
        cr_assert(isfinite(x));
        m += x, v += x * x, s3 += x * x * x, k4 += x * x * x * x;
        tail3 += fabs(x) > 3;
    }
    m /= n, v /= n, s3 /= n, k4 /= n;
    /* 5 standard errors of each sample moment */
    cr_expect(fabs(m) < 5 * sqrt(1.0 / n), "mean %g", m);
    cr_expect(fabs(v - 1) < 5 * sqrt(2.0 / n), "variance %g", v);
    cr_expect(fabs(s3) < 5 * sqrt(15.0 / n), "third moment %g", s3);
    cr_expect(fabs(k4 - 3) < 5 * sqrt(96.0 / n), "fourth moment %g", k4);
    double p3 = (double)tail3 / n; /* P(|z| > 3) = 0.0026998 */
    cr_expect(fabs(p3 - 0.0026998) < 5 * sqrt(0.0027 / n), "P(|z|>3) = %g", p3);
    fl_real part[37];
    for (uint64_t first = 0; first < 9; first++) {
        fl_normals(key, 4, 1000 + first, 37, part);
        for (int i = 0; i < 37; i++)
            cr_assert_eq(part[i], z[1000 + first + (uint64_t)i], "offset %llu", (unsigned long long)first);
    }
    free(z);
}
