/* common.h - helpers shared by the Criterion suites.
 *
 * Paths come from the environment meson test sets (tests/meson.build):
 *   FLOWLAB_TEST_PLUGIN_DIR  build/plugins (the built-in plugins)
 *   FLOWLAB_TEST_DIR         build/tests (the test plugins)
 *   FLOWLAB_SOURCE_ROOT      the source tree (experiments/quickstart.ini) */
#ifndef TEST_COMMON_H
#define TEST_COMMON_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "model/experiment.h"
#include "compute/blas.h"
#include "core/hostimpl.h"
#include "core/registry.h"
#include "core/util.h"

/* cr_assert that `hay` contains `needle`, showing both on failure. */
#define assert_contains(hay, needle)                                                       \
    do {                                                                                   \
        const char *h_ = (hay), *n_ = (needle);                                            \
        cr_assert(h_ && strstr(h_, n_), "expected \"%s\" in: \"%s\"", n_, h_ ? h_ : "(null)"); \
    } while (0)

#define assert_not_contains(hay, needle)                                                   \
    do {                                                                                   \
        const char *h_ = (hay), *n_ = (needle);                                            \
        cr_assert(h_ && !strstr(h_, n_), "did not expect \"%s\" in: \"%s\"", n_,            \
                  h_ ? h_ : "(null)");                                                     \
    } while (0)

/* Declares suite `name`. Under AddressSanitizer each test of the suite
 * ends with a leak check: Criterion's workers exit without running
 * LeakSanitizer's exit-time check, so a leak would otherwise go unseen.
 * abort() in a teardown makes Criterion report the test as crashed. */
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
static inline void leak_check(void)
{
    if (__lsan_do_recoverable_leak_check()) abort();
}
#define SUITE(name) TestSuite(name, .fini = leak_check)
#else
#define SUITE(name) TestSuite(name)
#endif

static inline const char *test_env(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set: run the suites through `meson test`", name);
    return v;
}

/* A registry holding the built-in plugins, all accepted. */
static inline fl_registry *load_builtin_plugins(void)
{
    fl_registry *r = fl_registry_new();
    cr_assert_not_null(r);
    size_t refused = fl_registry_load_dir(r, test_env("FLOWLAB_TEST_PLUGIN_DIR"));
    cr_assert_eq(refused, 0, "built-in plugins refused: %s",
                 r->n_refused ? r->refused[0] : "?");
    cr_assert_not_null(fl_registry_find(r, FL_KIND_FLOW, "affine-coupling"));
    cr_assert_not_null(fl_registry_find(r, FL_KIND_DATASET, "moons"));
    return r;
}

/* Parses `text` (named `name` in messages), applies the --set style
 * `sets` (NULL-terminated, may be NULL) and builds the experiment. Returns
 * the first failing status; fl_err_msg() then says why. */
static inline fl_status experiment_from_text(const fl_registry *r, const char *name,
                                             const char *text, const char *const *sets,
                                             fl_experiment **e)
{
    fl_config *c = NULL;
    fl_status st = fl_config_parse(name, text, &c);
    for (size_t i = 0; st == FL_OK && sets && sets[i]; i++) st = fl_config_set(c, sets[i]);
    if (st != FL_OK) {
        fl_config_free(c);
        return st;
    }
    *e = NULL;
    return fl_experiment_new(r, c, e); /* takes c, also on failure */
}

/* A fresh private directory; the caller removes it with remove_tree. */
static inline char *make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *tmpl = fl_strfmt("%s/flowlab-test-XXXXXX", base && *base ? base : "/tmp");
    cr_assert_not_null(tmpl);
    cr_assert_not_null(mkdtemp(tmpl), "mkdtemp %s failed", tmpl);
    return tmpl;
}

/* Removes a directory of plain files (what the tests create). */
static inline void remove_tree(char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char *p = fl_strfmt("%s/%s", dir, de->d_name);
            if (p) unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

/* A small density experiment (two affine couplings on moons) that builds in
 * milliseconds; the comments number its lines, which messages name. */
static const char *const coupling_moons_ini = "[experiment]\n"          /* 1 */
                                    "seed = 3\n"              /* 2 */
                                    "\n"                      /* 3 */
                                    "[data]\n"                /* 4 */
                                    "type = moons\n"          /* 5 */
                                    "test_size = 200\n"       /* 6 */
                                    "\n"                      /* 7 */
                                    "[flow.1]\n"              /* 8 */
                                    "type = affine-coupling\n" /* 9 */
                                    "repeat = 2\n"            /* 10 */
                                    "hidden = 16,16\n"        /* 11 */
                                    "\n"                      /* 12 */
                                    "[train]\n"               /* 13 */
                                    "steps = 10\n"            /* 14 */
                                    "batch = 64\n";           /* 15 */

#endif
