/* test_kit.c - the conformance kit catches broken layers.
 *
 * tests/plugins/broken.c builds one correct MADE-style layer and five
 * broken copies of it, each with one bug. The correct one must pass every
 * check; each broken one must fail, and the report must name the check
 * that caught it and the measured error beside its tolerance. */
#include "common.h"
#include "kit/kit.h"

SUITE(kit);

/* Loads build/tests/NAME.so and runs the kit over its configurations. */
static fl_kit_report run_kit(const char *name)
{
    fl_runtime_init();
    fl_registry *r = fl_registry_new();
    char *path = fl_strfmt("%s/%s.so", test_env("FLOWLAB_TEST_DIR"), name);
    cr_assert_eq(fl_registry_load(r, path), FL_OK, "%s", fl_err_msg());
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, "made-shift");
    cr_assert_not_null(c);
    fl_kit_opts o = { 0, 0, 8, 1, 0.3, NULL, 0, 0, 0 };
    fl_kit_report rep;
    cr_assert_eq(fl_kit_class(&c->cls.flow, &o, NULL, &rep), FL_OK, "%s", fl_err_msg());
    free(path);
    fl_registry_free(r);
    return rep;
}

/* The broken layer fails, and the named check is among the failures with
 * the message format the kit promises. */
static void expect_caught(const char *name, int check, const char *check_name)
{
    fl_kit_report rep = run_kit(name);
    cr_assert_gt(rep.failed, 0, "%s passed the kit", name);
    cr_assert_gt(rep.stat[check].fails, 0, "%s: the %s check did not fail (first failure: %s)",
                 name, check_name, rep.first_failure);
    assert_contains(rep.first_failure, "exceeds tolerance");
    cr_assert_gt(rep.stat[check].worst_err, rep.stat[check].tol);
    cr_assert_str_eq(fl_kit_check_name(check), check_name);
}

Test(kit, correct_layer_passes_every_check)
{
    fl_kit_report rep = run_kit("made_shift");
    cr_assert_gt(rep.checks, 20);
    cr_assert_eq(rep.failed, 0, "%s", rep.first_failure);
    /* It is autoregressive: the triangularity check ran. */
    cr_assert_gt(rep.stat[FL_KIT_TRIANGULAR].runs, 0);
}

Test(kit, catches_logdet_with_the_wrong_sign)
{
    expect_caught("broken_logdet_sign", FL_KIT_LOGDET, "logdet");
}

Test(kit, catches_backward_missing_a_term)
{
    expect_caught("broken_backward", FL_KIT_GRAD_X, "grad x");
}

Test(kit, catches_an_inverse_that_is_not_one)
{
    expect_caught("broken_inverse", FL_KIT_INVERSE, "inverse");
}

Test(kit, catches_a_made_mask_leaking_the_diagonal)
{
    expect_caught("broken_mask", FL_KIT_LOGDET, "logdet");
}

Test(kit, catches_a_jacobian_not_triangular_in_the_declared_order)
{
    expect_caught("broken_order", FL_KIT_TRIANGULAR, "triangular");
}

Test(kit, command_names_the_check_and_the_error)
{
    /* `flowlab check` prints the failing check beside its tolerance. */
    char *cmd = fl_strfmt("%s check --plugin %s/broken_backward.so 2>&1",
                          test_env("FLOWLAB_EXE"), test_env("FLOWLAB_TEST_DIR"));
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    int rc = pclose(p);
    free(cmd);
    cr_assert_neq(rc, 0, "flowlab check exited 0 on a broken layer");
    assert_contains(buf, "grad x");
    assert_contains(buf, "FAIL");
    assert_contains(buf, "-> FAILED: grad x: ");
    assert_contains(buf, "exceeds tolerance");
}

/* Every built-in flow passes the whole kit in all its configurations. */
Test(kit, every_builtin_flow_passes, .timeout = 600)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    int flows = 0;
    for (size_t i = 0; i < r->n_comps; i++) {
        const fl_comp_rec *c = &r->comps[i];
        if (c->kind != FL_KIND_FLOW) continue;
        flows++;
        fl_kit_opts o = { 0, 0, 8, 1, 0.3, NULL, 0, 0, 0 };
        fl_kit_report rep;
        cr_assert_eq(fl_kit_class(&c->cls.flow, &o, NULL, &rep), FL_OK, "%s: %s",
                     c->cls.base.name, fl_err_msg());
        cr_assert_gt(rep.checks, 0, "%s: no checks ran", c->cls.base.name);
        cr_assert_eq(rep.failed, 0, "%s: %s", c->cls.base.name, rep.first_failure);
    }
    /* affine and additive coupling, reverse, permute, planar, radial,
     * batch-norm, actnorm, iaf, maf, squeeze, split, conv-coupling,
     * invconv */
    cr_assert_geq(flows, 14);
    fl_registry_free(r);
}

/* The kit as a debugger: each broken layer's first failure, written to a
 * dump and read back, replays to the same numbers (bit for bit: the same
 * inputs, parameters and seed), and names its offending row. */
Test(kit, failures_dump_and_replay_to_the_same_numbers, .timeout = 300)
{
    static const char *const broken[] = { "broken_logdet_sign", "broken_backward",
                                          "broken_inverse", "broken_mask", "broken_order" };
    fl_runtime_init();
    for (size_t b = 0; b < sizeof broken / sizeof *broken; b++) {
        fl_registry *r = fl_registry_new();
        char *path = fl_strfmt("%s/%s.so", test_env("FLOWLAB_TEST_DIR"), broken[b]);
        char *dump = fl_strfmt("%s/kit_%s.dump", test_env("FLOWLAB_TEST_DIR"), broken[b]);
        cr_assert_eq(fl_registry_load(r, path), FL_OK, "%s", fl_err_msg());
        const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, "made-shift");
        cr_assert_not_null(c);
        fl_kit_opts o = { 3, 0, 8, 1, 0.3, NULL, 0, 0, 0 };
        fl_kit_report rep, rep2;
        fl_kit_failure f, d, again;
        fl_kit_failure_init(&f);
        fl_kit_failure_init(&d);
        fl_kit_failure_init(&again);
        fl_kit_debug dbg = { NULL, 0, &f };
        cr_assert_eq(fl_kit_class_debug(&c->cls.flow, &o, &dbg, NULL, &rep), FL_OK, "%s",
                     fl_err_msg());
        cr_assert_geq(f.check, 0, "%s: no failure captured", broken[b]);
        cr_assert(!(f.err <= f.tol), "%s: the captured check passed", broken[b]);
        cr_assert(f.row >= 0 || f.check == FL_KIT_EXTREME_X || f.check == FL_KIT_LARGE_THETA,
                  "%s: no offending row", broken[b]);
        f.plugin = fl_strdup(path);
        cr_assert_eq(fl_kit_dump_write(&f, dump), FL_OK, "%s", fl_err_msg());
        cr_assert_eq(fl_kit_dump_read(dump, &d), FL_OK, "%s", fl_err_msg());
        cr_assert_eq(d.check, f.check);
        cr_assert_eq(d.n_theta, f.n_theta);
        cr_assert_eq(memcmp(d.x, f.x, (size_t)f.rows * f.dim * sizeof(fl_real)), 0);
        cr_assert_eq(fl_kit_replay(&c->cls.flow, &d, &again, &rep2), FL_OK, "%s", fl_err_msg());
        cr_assert_eq(again.check, f.check, "%s: replay failed %d, not %d", broken[b],
                     again.check, f.check);
        cr_assert_eq(again.err, f.err, "%s: error %g, then %g", broken[b], f.err, again.err);
        cr_assert_eq(again.a, f.a);
        cr_assert_eq(again.b, f.b);
        cr_assert_eq(again.row, f.row);
        remove(dump);
        fl_kit_failure_free(&f);
        fl_kit_failure_free(&d);
        fl_kit_failure_free(&again);
        free(path);
        free(dump);
        fl_registry_free(r);
    }
}
