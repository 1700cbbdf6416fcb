/* test_flows.c - the built-in flow layers under the conformance kit
 * (inverse, log-determinant and gradients against finite differences) in
 * every configuration that changes their code path, plus direct checks of
 * what the kit cannot see: a zero-initialised coupling is the identity,
 * and the permutations permute. */
#include <math.h>

#include "common.h"
#include "kit/kit.h"
#include "model/stack.h"
#include "tasks/task_density.h"

SUITE(kit);
SUITE(direct);

/* Resolved values of a [flow] section of type `type` with the given
 * "key=value" settings (NULL-terminated), as the kit and stack take them. */
static fl_values flow_values(const fl_registry *r, const char *type, const char *const *kv)
{
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    cr_assert_not_null(c, "flow %s is not registered", type);
    fl_config *cfg = fl_config_new("flows-test");
    cr_assert_eq(fl_config_put(cfg, "flow", "type", type, 0), FL_OK);
    for (size_t i = 0; kv && kv[i]; i++) {
        char *assign = fl_strfmt("flow.%s", kv[i]);
        cr_assert_eq(fl_config_set(cfg, assign), FL_OK, "%s", fl_err_msg());
        free(assign);
    }
    const fl_key *tabs[2] = { fl_flow_host_keys, c->cls.base.keys };
    uint32_t ns[2] = { fl_flow_host_nkeys, c->cls.base.n_keys };
    fl_values v;
    cr_assert_eq(fl_values_resolve(cfg, "flow", tabs, ns, 2, &v), FL_OK, "%s", fl_err_msg());
    fl_config_free(cfg);
    return v;
}

/* Runs the kit on `type` with `kv` for each dim and context width; every
 * check must pass and there must be some. */
static void kit_all(const char *type, const char *const *kv, const uint32_t *dims, size_t nd,
                    const uint32_t *ctxs, size_t nc)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    fl_values v = flow_values(r, type, kv);
    char what[256] = ""; /* the settings, for failure messages */
    for (size_t i = 0; kv && kv[i]; i++)
        snprintf(what + strlen(what), sizeof what - strlen(what), " %s", kv[i]);
    for (size_t i = 0; i < nd; i++) {
        for (size_t j = 0; j < nc; j++) {
            fl_kit_opts o = { dims[i], ctxs[j], 8, 100 + 10 * i + j, 0.3, NULL, 0, 0, 0 };
            fl_kit_report rep;
            fl_status st = fl_kit_flow(&c->cls.flow, &v, &o, &rep);
            cr_assert_eq(st, FL_OK, "%s%s dim %u ctx %u: %s", type, what, dims[i], ctxs[j],
                         fl_err_msg());
            cr_assert_gt(rep.checks, 0);
            cr_assert_eq(rep.failed, 0, "%s%s dim %u ctx %u: %s", type, what, dims[i], ctxs[j],
                         rep.first_failure);
        }
    }
    fl_values_free(&v);
    fl_registry_free(r);
}

static const uint32_t dims[] = { 2, 3, 6 };
static const uint32_t ctxs[] = { 0, 4 };

#define COUPLING_KIT(mask, net)                                                        \
    Test(kit, coupling_##mask##_##net)                                                 \
    {                                                                                  \
        static const char *const kv[] = { "mask=" #mask, "net=" #net, "hidden=32,32", \
                                          NULL };                                      \
        kit_all("affine-coupling", kv, dims, 3, ctxs, 2);                              \
    }

COUPLING_KIT(alternate, separate)
COUPLING_KIT(alternate, shared)
COUPLING_KIT(checkerboard, separate)
COUPLING_KIT(checkerboard, shared)
COUPLING_KIT(random, separate)
COUPLING_KIT(random, shared)

Test(kit, coupling_smooth_activations_and_unbounded_scale)
{
    static const char *const acts[] = { "activation=tanh", "activation=elu",
                                        "activation=softplus" };
    static const uint32_t d3[] = { 3 };
    for (size_t i = 0; i < 3; i++) {
        const char *kv[] = { acts[i], "scale_bound=0", "hidden=16", NULL };
        kit_all("affine-coupling", kv, d3, 1, ctxs, 2);
    }
}

Test(kit, coupling_without_zero_init)
{
    /* Glorot last layers: the kit's parameter noise is not all there is. */
    static const char *const kv[] = { "zero_init=false", "scale_bound=2", NULL };
    kit_all("affine-coupling", kv, dims, 3, ctxs, 1);
}

Test(kit, reverse) { kit_all("reverse", NULL, dims, 3, ctxs, 1); }
Test(kit, permute) { kit_all("permute", NULL, dims, 3, ctxs, 1); }

/* ---- direct checks ------------------------------------------------------ */

enum { ROWS = 64 };

/* A stack of `n` layers of `type` (positions 0..n-1 in one repeat group). */
static fl_stack *make_stack(const fl_registry *r, fl_arena *a, const char *type,
                            const char *const *kv, uint32_t dim, uint32_t n)
{
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    fl_stack *s = fl_stack_new(a, 9, dim, 0, ROWS);
    cr_assert_not_null(s);
    for (uint32_t i = 0; i < n; i++) {
        fl_values v = flow_values(r, type, kv);
        char path[32];
        snprintf(path, sizeof path, "flow.1.%u", i);
        cr_assert_eq(fl_stack_push(s, &c->cls.flow, path, &v, i), FL_OK, "%s", fl_err_msg());
    }
    cr_assert_eq(fl_arena_finalize(a, 9), FL_OK);
    cr_assert_eq(fl_stack_ready(s), FL_OK);
    return s;
}

static void random_rows(fl_real *x, uint32_t dim)
{
    fl_rng_normal(fl_rng_key_make(3, "flows.x"), 0, 0, (size_t)ROWS * dim, x);
}

Test(direct, zero_init_coupling_is_the_identity)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    for (uint32_t dim = 2; dim <= 5; dim++) {
        fl_arena a = { 0 };
        /* Two layers: even and odd positions use different halves. */
        fl_stack *s = make_stack(r, &a, "affine-coupling", NULL, dim, 2);
        fl_real x[ROWS * 5], back[ROWS * 5], ld[ROWS] = { 0 }, ldi[ROWS] = { 0 };
        random_rows(x, dim);
        const fl_real *y;
        cr_assert_eq(fl_stack_forward(s, ROWS, FL_MODE_EVAL, x, NULL, ld, &y), FL_OK);
        for (size_t i = 0; i < (size_t)ROWS * dim; i++)
            cr_assert_eq(y[i], x[i], "dim %u: y[%zu] = %g, x = %g", dim, i, (double)y[i],
                         (double)x[i]);
        for (int i = 0; i < ROWS; i++) cr_assert_eq(ld[i], 0, "dim %u: logdet %g", dim, ld[i]);
        cr_assert_eq(fl_stack_inverse(s, ROWS, FL_MODE_EVAL, x, NULL, back, ldi), FL_OK);
        cr_assert_eq(memcmp(back, x, (size_t)ROWS * dim * sizeof(fl_real)), 0);
        for (int i = 0; i < ROWS; i++) cr_assert_eq(ldi[i], 0);
        fl_stack_free(s);
        fl_arena_free(&a);
    }
    fl_registry_free(r);
}

Test(direct, coupling_without_zero_init_is_not_the_identity)
{
    /* The identity check above would also pass for a layer that ignores its
     * parameters; this one shows the layer does transform. */
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    static const char *const kv[] = { "zero_init=false", NULL };
    fl_arena a = { 0 };
    fl_stack *s = make_stack(r, &a, "affine-coupling", kv, 4, 1);
    fl_real x[ROWS * 4], ld[ROWS] = { 0 };
    random_rows(x, 4);
    const fl_real *y;
    cr_assert_eq(fl_stack_forward(s, ROWS, FL_MODE_EVAL, x, NULL, ld, &y), FL_OK);
    /* alternate mask, position 0: coordinates 0,1 pass through, 2,3 change. */
    size_t changed = 0;
    for (int rr = 0; rr < ROWS; rr++) {
        cr_assert_eq(y[rr * 4 + 0], x[rr * 4 + 0]);
        cr_assert_eq(y[rr * 4 + 1], x[rr * 4 + 1]);
        changed += y[rr * 4 + 2] != x[rr * 4 + 2];
        changed += y[rr * 4 + 3] != x[rr * 4 + 3];
    }
    cr_assert_gt(changed, ROWS, "the transformed half barely changed");
    size_t nonzero = 0;
    for (int i = 0; i < ROWS; i++) nonzero += ld[i] != 0;
    cr_assert_gt(nonzero, ROWS / 2);
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}

/* A coupling layer is affine in each coordinate it transforms (s and t see
 * only the others), so dy_k/dx_k = y_k(x + e_k) - y_k(x) exactly, and
 * logdet = sum_k log of that slope (1 for the conditioning ones). This
 * checks the logdet to float rounding, far tighter than the kit's finite
 * differences can. */
static void check_affine_logdet(const char *mask, uint32_t dim, uint32_t index)
{
    fl_registry *r = load_builtin_plugins();
    char mask_kv[64];
    snprintf(mask_kv, sizeof mask_kv, "mask=%s", mask);
    const char *kv[] = { mask_kv, "zero_init=false", "scale_bound=2", "hidden=16", NULL };
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, "affine-coupling");
    fl_arena a = { 0 };
    fl_stack *s = fl_stack_new(&a, 4, dim, 0, ROWS);
    fl_values v = flow_values(r, "affine-coupling", kv);
    cr_assert_eq(fl_stack_push(s, &c->cls.flow, "flow.1", &v, index), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_arena_finalize(&a, 4), FL_OK);
    cr_assert_eq(fl_stack_ready(s), FL_OK);
    /* Larger weights than the init, so the log-scales are far from 0. */
    for (size_t i = 0; i < a.total; i++) a.theta[i] *= 3;

    fl_real x[ROWS * 6], y0[ROWS * 6], xk[ROWS * 6], ld[ROWS] = { 0 }, ldk[ROWS];
    random_rows(x, dim);
    const fl_real *y;
    cr_assert_eq(fl_stack_forward(s, ROWS, FL_MODE_EVAL, x, NULL, ld, &y), FL_OK);
    memcpy(y0, y, sizeof(fl_real) * ROWS * dim);
    double want[ROWS] = { 0 };
    for (uint32_t k = 0; k < dim; k++) {
        memcpy(xk, x, sizeof(fl_real) * ROWS * dim);
        for (int rr = 0; rr < ROWS; rr++) xk[rr * dim + k] += 1;
        cr_assert_eq(fl_stack_forward(s, ROWS, FL_MODE_EVAL, xk, NULL, ldk, &y), FL_OK);
        for (int rr = 0; rr < ROWS; rr++) {
            double slope = (double)y[rr * dim + k] - y0[rr * dim + k];
            cr_assert_gt(slope, 0, "row %d coordinate %u: slope %g", rr, k, slope);
            want[rr] += log(slope);
        }
    }
    double size = 0;
    for (int rr = 0; rr < ROWS; rr++) {
        cr_assert_float_eq(ld[rr], want[rr], 2e-4 * (1 + fabs(want[rr])),
                           "%s dim %u index %u row %d: logdet %.7g, slopes give %.7g", mask,
                           dim, index, rr, (double)ld[rr], want[rr]);
        size += fabs(want[rr]);
    }
    cr_assert_gt(size / ROWS, 0.1, "log-scales too small to test anything");
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}

Test(direct, coupling_logdet_is_the_sum_of_log_slopes)
{
    fl_runtime_init();
    static const char *const masks[] = { "alternate", "checkerboard", "random" };
    for (int m = 0; m < 3; m++)
        for (uint32_t index = 0; index < 2; index++) {
            check_affine_logdet(masks[m], 3, index);
            check_affine_logdet(masks[m], 6, index);
        }
}

/* Each output row must be the input row with its coordinates reordered. */
static void check_permutation(const char *type, uint32_t dim, int want_reverse)
{
    fl_registry *r = load_builtin_plugins();
    fl_arena a = { 0 };
    fl_stack *s = make_stack(r, &a, type, NULL, dim, 1);
    cr_assert_eq(a.total, 0, "%s has parameters", type);
    fl_real x[ROWS * 8], ld[ROWS] = { 0 };
    for (int rr = 0; rr < ROWS; rr++)
        for (uint32_t j = 0; j < dim; j++) x[rr * dim + j] = (fl_real)(rr * 100 + j);
    const fl_real *y;
    cr_assert_eq(fl_stack_forward(s, ROWS, FL_MODE_EVAL, x, NULL, ld, &y), FL_OK);
    int identity = 1;
    for (int rr = 0; rr < ROWS; rr++) {
        uint32_t seen = 0;
        for (uint32_t j = 0; j < dim; j++) {
            int k = (int)y[rr * dim + j] - rr * 100;
            cr_assert(k >= 0 && k < (int)dim, "%s row %d: value from another row", type, rr);
            seen |= 1u << k;
            identity &= k == (int)j;
            if (want_reverse) cr_assert_eq(k, (int)(dim - 1 - j));
            if (rr > 0) cr_assert_eq(k, (int)y[j], "%s: rows permuted differently", type);
        }
        cr_assert_eq(seen, (1u << dim) - 1, "%s row %d: not a permutation", type, rr);
        cr_assert_eq(ld[rr], 0);
    }
    cr_assert_not(identity, "%s left dim %u unchanged", type, dim);
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}

Test(direct, reverse_reverses) { check_permutation("reverse", 5, 1); }
Test(direct, permute_permutes) { check_permutation("permute", 8, 0); }

Test(direct, repeat_interleaves_permutations)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    static const char *const ini = "[data]\ntype = moons\ntest_size = 10\n"
                                   "[flow.2]\ntype = reverse\n"
                                   "[flow.1]\ntype = affine-coupling\nrepeat = 3\n"
                                   "permute = reverse\nhidden = 8\n";
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "stack.ini", ini, NULL, &e), FL_OK, "%s", fl_err_msg());
    /* flow.1 x3 with a reverse between copies, then flow.2 (sorted by N). */
    static const char *const want[] = { "affine-coupling", "reverse", "affine-coupling",
                                        "reverse", "affine-coupling", "reverse" };
    static const char *const paths[] = { "flow.1.0", "flow.1.0.perm", "flow.1.1",
                                         "flow.1.1.perm", "flow.1.2", "flow.2" };
    cr_assert_eq(fl_density_flows(e)->n, 6);
    for (size_t i = 0; i < 6; i++) {
        cr_assert_str_eq(fl_density_flows(e)->L[i].cls->base.name, want[i], "layer %zu", i);
        cr_assert_str_eq(fl_density_flows(e)->L[i].cx->path, paths[i], "layer %zu", i);
    }
    fl_experiment_free(e);
    fl_registry_free(r);
}
