/* test_registry.c - loading plugins: each deliberately broken test plugin
 * (tests/plugins/) is refused with a message naming the file and the
 * reason, registers nothing, and leaves the registry usable; an
 * out-of-tree plugin built against include/ only loads and passes the
 * conformance kit. */
#include "common.h"
#include "kit/kit.h"

#include <signal.h>

SUITE(refused);
SUITE(good);

/* build/tests/NAME.so */
static char *test_plugin(const char *name)
{
    char *p = fl_strfmt("%s/%s.so", test_env("FLOWLAB_TEST_DIR"), name);
    cr_assert_not_null(p);
    cr_assert_eq(access(p, R_OK), 0, "test plugin %s was not built", p);
    return p;
}

/* Loads test plugin `name` into `r`, which must refuse it without changing
 * what is registered. Checks that the message names the file and contains
 * `reason`, and that it is recorded in r->refused. */
static void expect_refused(fl_registry *r, const char *name, const char *reason)
{
    char *path = test_plugin(name);
    size_t n_plugins = r->n_plugins, n_comps = r->n_comps, n_refused = r->n_refused;
    fl_err_clear();
    fl_status st = fl_registry_load(r, path);
    cr_assert_neq(st, FL_OK, "%s was accepted", name);
    char *file = fl_strfmt("%s.so", name);
    assert_contains(fl_err_msg(), file);
    assert_contains(fl_err_msg(), reason);
    cr_assert_eq(r->n_refused, n_refused + 1, "the refusal of %s is not recorded", name);
    cr_assert_str_eq(r->refused[n_refused], fl_err_msg());
    cr_assert_eq(r->n_plugins, n_plugins, "a refused plugin stays listed");
    cr_assert_eq(r->n_comps, n_comps, "a refused plugin registered components");
    free(file);
    free(path);
}

Test(refused, no_entry_symbol)
{
    fl_registry *r = fl_registry_new();
    expect_refused(r, "bad_noentry", "no 'flowlab_plugin_entry'");
    fl_registry_free(r);
}

Test(refused, other_abi_major)
{
    fl_registry *r = fl_registry_new();
    char want[64];
    snprintf(want, sizeof want, "built for ABI %d.", FL_ABI_MAJOR + 1);
    expect_refused(r, "bad_major", want);
    assert_contains(fl_err_msg(), "ABI");
    cr_assert_null(fl_registry_find(r, FL_KIND_FLOW, "bad-major-flow"));
    fl_registry_free(r);
}

Test(refused, other_real_size)
{
    fl_registry *r = fl_registry_new();
    expect_refused(r, "bad_realsize", "sizeof(fl_real)");
    assert_contains(fl_err_msg(), FL_REAL_NAME);
    cr_assert_null(fl_registry_find(r, FL_KIND_FLOW, "bad-realsize-flow"));
    fl_registry_free(r);
}

Test(refused, name_taken_by_a_builtin)
{
    fl_registry *r = load_builtin_plugins();
    const fl_comp_rec *before = fl_registry_find(r, FL_KIND_FLOW, "affine-coupling");
    const char *owner = r->plugins[before->plugin].path;
    expect_refused(r, "dup_name", "flow 'affine-coupling' is already registered");
    assert_contains(fl_err_msg(), owner);
    /* dup_name registered "dup-first" before the clash: it must be gone too. */
    cr_assert_null(fl_registry_find(r, FL_KIND_FLOW, "dup-first"));
    const fl_comp_rec *after = fl_registry_find(r, FL_KIND_FLOW, "affine-coupling");
    cr_assert_not_null(after);
    cr_assert_not_null(after->cls.flow.inverse, "the built-in affine-coupling was replaced");
    cr_assert_str_eq(r->plugins[after->plugin].name, "flows-coupling");
    fl_registry_free(r);
}

Test(refused, same_name_twice_in_one_plugin)
{
    fl_registry *r = fl_registry_new();
    expect_refused(r, "dup_twice", "flow 'dup-twice' is registered twice");
    cr_assert_null(fl_registry_find(r, FL_KIND_FLOW, "dup-twice"));
    fl_registry_free(r);
}

Test(refused, default_out_of_range)
{
    fl_registry *r = fl_registry_new();
    expect_refused(r, "bad_schema", "default '500'");
    assert_contains(fl_err_msg(), "flow 'bad-schema'");
    assert_contains(fl_err_msg(), "'n'");
    assert_contains(fl_err_msg(), "[0, 10]");
    cr_assert_null(fl_registry_find(r, FL_KIND_FLOW, "bad-schema-fine"));
    fl_registry_free(r);
}

Test(refused, missing_file_and_non_elf_file)
{
    fl_registry *r = fl_registry_new();
    fl_status st = fl_registry_load(r, "/nonexistent/flowlab/nothing.so");
    cr_assert_neq(st, FL_OK);
    assert_contains(fl_err_msg(), "/nonexistent/flowlab/nothing.so");
    assert_contains(fl_err_msg(), "no such file");

    /* This very source file is not a shared object. */
    char *src = fl_strfmt("%s/tests/test_registry.c", test_env("FLOWLAB_SOURCE_ROOT"));
    st = fl_registry_load(r, src);
    cr_assert_neq(st, FL_OK);
    assert_contains(fl_err_msg(), "test_registry.c");
    assert_contains(fl_err_msg(), "cannot load");
    cr_assert_eq(r->n_refused, 2);
    cr_assert_eq(r->n_plugins, 0);
    free(src);
    fl_registry_free(r);
}

Test(refused, registry_stays_usable)
{
    fl_registry *r = fl_registry_new();
    static const char *const bad[] = { "bad_noentry", "bad_major", "bad_realsize",
                                       "bad_schema", "dup_twice" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *p = test_plugin(bad[i]);
        cr_assert_neq(fl_registry_load(r, p), FL_OK, "%s accepted", bad[i]);
        free(p);
    }
    cr_assert_eq(r->n_refused, 5);
    cr_assert_eq(r->n_plugins, 0);
    cr_assert_eq(r->n_comps, 0);

    /* The same registry still loads good plugins. */
    cr_assert_eq(fl_registry_load_dir(r, test_env("FLOWLAB_TEST_PLUGIN_DIR")), 0);
    char *good = test_plugin("good_flow");
    cr_assert_eq(fl_registry_load(r, good), FL_OK, "%s", fl_err_msg());
    cr_assert_not_null(fl_registry_find(r, FL_KIND_FLOW, "affine-coupling"));
    cr_assert_not_null(fl_registry_find(r, FL_KIND_FLOW, "shift"));
    cr_assert_not_null(fl_registry_find(r, FL_KIND_DATASET, "moons"));
    cr_assert_eq(r->n_refused, 5);

    /* And the refused dup plugin is refused again, for the same reason. */
    char *dup = test_plugin("dup_name");
    cr_assert_neq(fl_registry_load(r, dup), FL_OK);
    assert_contains(fl_err_msg(), "already registered");
    free(dup);
    free(good);
    fl_registry_free(r);
}

Test(good, out_of_tree_flow_loads)
{
    fl_registry *r = fl_registry_new();
    char *path = test_plugin("good_flow");
    cr_assert_eq(fl_registry_load(r, path), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(r->n_plugins, 1);
    cr_assert_str_eq(r->plugins[0].name, "test-shift");
    cr_assert_str_eq(r->plugins[0].version, "1.0.0");
    cr_assert_eq(r->n_refused, 0);

    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, "shift");
    cr_assert_not_null(c);
    cr_assert_eq(c->kind, FL_KIND_FLOW);
    cr_assert_eq(c->plugin, 0);
    cr_assert_eq(c->cls.base.n_keys, 1);
    cr_assert_str_eq(c->cls.base.keys[0].name, "init");
    cr_assert(c->cls.flow.flags & FL_FLOW_HAS_INVERSE);
    cr_assert_null(fl_registry_find(r, FL_KIND_DATASET, "shift"), "kinds are separate");
    cr_assert_str_eq(fl_registry_suggest(r, FL_KIND_FLOW, "shfit"), "shift");

    /* Loading the same file again is a no-op, not a name clash. */
    cr_assert_eq(fl_registry_load(r, path), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(r->n_plugins, 1);
    cr_assert_eq(r->n_comps, 1);
    free(path);
    fl_registry_free(r);
}

/* A plugin built for ABI 1.2 (no conv service in its fl_host) loads on
 * this 1.4 host, registers, and passes the kit: a minor step keeps old
 * plugins working. */
Test(good, a_plugin_of_the_previous_minor_loads_and_runs)
{
    fl_runtime_init();
    cr_assert_eq(FL_ABI_MINOR, 4, "update this test's plugin (tests/plugins/good_flow.c)");
    fl_registry *r = fl_registry_new();
    char *path = test_plugin("old_minor");
    cr_assert_eq(fl_registry_load(r, path), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(r->n_refused, 0);
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, "shift");
    cr_assert_not_null(c);
    fl_kit_opts o = { 3, 0, 8, 17, 0.3, NULL, 0, 0, 0 };
    fl_kit_report rep;
    cr_assert_eq(fl_kit_flow(&c->cls.flow, NULL, &o, &rep), FL_OK, "%s", fl_err_msg());
    cr_assert_gt(rep.checks, 0);
    free(path);
    fl_registry_free(r);
}

Test(good, out_of_tree_flow_passes_the_kit)
{
    fl_runtime_init();
    fl_registry *r = fl_registry_new();
    char *path = test_plugin("good_flow");
    cr_assert_eq(fl_registry_load(r, path), FL_OK, "%s", fl_err_msg());
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, "shift");
    cr_assert_not_null(c);
    for (uint32_t dim = 1; dim <= 5; dim += 2) {
        fl_kit_opts o = { dim, 0, 8, 11 + dim, 0.3, NULL, 0, 0, 0 };
        fl_kit_report rep;
        cr_assert_eq(fl_kit_flow(&c->cls.flow, NULL, &o, &rep), FL_OK, "%s", fl_err_msg());
        cr_assert_gt(rep.checks, 0);
        cr_assert_eq(rep.failed, 0, "dim %u: %s", dim, rep.first_failure);
    }
    free(path);
    fl_registry_free(r);
}

/* Issue 13: a plugin whose entry point crashes, calls exit() or aborts is
 * probed in a child process, refused with the reason, and the registry
 * (and this process) carries on. */
Test(refused, entry_point_segfaults)
{
    fl_registry *r = fl_registry_new();
    expect_refused(r, "crash_init", "crashed in its entry point or while loading (signal 11");
    fl_registry_free(r);
}

Test(refused, entry_point_calls_exit)
{
    fl_registry *r = fl_registry_new();
    expect_refused(r, "crash_exit", "ended the process in its entry point or while loading "
                                    "(exit status 3)");
    fl_registry_free(r);
}

Test(refused, entry_point_aborts)
{
    fl_registry *r = fl_registry_new();
    char want[64];
    snprintf(want, sizeof want, "(signal %d", SIGABRT);
    expect_refused(r, "crash_abort", want);
    fl_registry_free(r);
}

/* A folder holding the three crashing plugins beside a good one: the scan
 * refuses the three, keeps the good one and the built-in components. */
Test(refused, folder_scan_survives_crashing_plugins)
{
    char *dir = fl_strfmt("%s/crashdir.%d", test_env("FLOWLAB_TEST_DIR"), (int)getpid());
    cr_assert_not_null(dir);
    cr_assert_eq(mkdir(dir, 0755), 0, "%s", dir);
    static const char *const names[] = { "crash_abort", "crash_exit", "crash_init", "good_flow" };
    char *links[4];
    for (size_t i = 0; i < 4; i++) {
        char *src = test_plugin(names[i]);
        links[i] = fl_strfmt("%s/%s.so", dir, names[i]);
        cr_assert_eq(symlink(src, links[i]), 0);
        free(src);
    }
    fl_registry *r = fl_registry_new();
    cr_assert_eq(fl_registry_load_dir(r, test_env("FLOWLAB_TEST_PLUGIN_DIR")), 0);
    size_t builtin = r->n_comps;
    cr_assert_eq(fl_registry_load_dir(r, dir), 3);
    cr_assert_eq(r->n_refused, 3);
    assert_contains(r->refused[0], "crash_abort.so");
    assert_contains(r->refused[1], "crash_exit.so");
    assert_contains(r->refused[2], "crash_init.so");
    cr_assert_not_null(fl_registry_find(r, FL_KIND_FLOW, "shift"));
    cr_assert_null(fl_registry_find(r, FL_KIND_FLOW, "crash-flow"));
    cr_assert_gt(r->n_comps, builtin);
    fl_registry_free(r);
    for (size_t i = 0; i < 4; i++) {
        unlink(links[i]);
        free(links[i]);
    }
    rmdir(dir);
    free(dir);
}
