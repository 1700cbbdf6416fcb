/* cmd_check.c - `flowlab check`: the conformance kit from the command line. */
#define _DEFAULT_SOURCE
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "kit/kit.h"
#include "core/util.h"

static const char usage[] =
    "usage: flowlab check [--plugin PATH]... [--flow NAME] [--dim D] [--shape CxHxW]\n"
    "                     [--rows N] [--seed S] [--set KEY=VALUE]... [--dump FILE]\n"
    "                     [--verbose]\n"
    "       flowlab check [--plugin PATH]... --replay FILE\n"
    "\n"
    "The conformance kit. For every registered flow (or only NAME, or only the\n"
    "flows of the --plugin files given) and for several configurations (the\n"
    "defaults, each boolean key flipped, each other choice of each enum key),\n"
    "dimensions (D, or 2, 5 and 8) and context sizes (0 and 3 when the layer\n"
    "takes context), on N rows (default 8), it checks: same seed, same numbers;\n"
    "the inverse round trip; the log-determinant against log|det J| with J by\n"
    "finite differences in double; triangularity of J in the declared order for\n"
    "autoregressive layers; backward against finite differences for inputs,\n"
    "parameters and context; that some configuration's output depends on the\n"
    "context; finite outputs at inputs of +-10 and with large parameters; that\n"
    "rows are independent in evaluation mode; that batch-coupled layers\n"
    "agree in train and eval mode once running statistics match the batch.\n"
    "Shaped layers (images: squeeze, split, ...) are also checked on images of\n"
    "1x4x4, 2x4x4, 3x2x2, 4x2x2 and 12x2x2 (channels x height x width), or\n"
    "only on --shape CxHxW (and then on --dim D only when given too); a\n"
    "layer that factors out part of its input is checked on the row [z | y],\n"
    "as the stack runs it, and a shape it refuses is \"not applicable\".\n"
    "Prints, per layer, the worst measured error of each check beside its\n"
    "tolerance (--verbose: every run); exits 1 if any check fails.\n"
    "\n"
    "--set KEY=VALUE   checks the layer with this value of one of its keys\n"
    "                  instead of the default (repeatable; that key is then not\n"
    "                  varied); every layer checked must have the key.\n"
    "A failed check prints what it compared: the two numbers, the tolerance,\n"
    "the offending input row (and context) and the parameter values.\n"
    "--dump FILE       also writes the first failure with all its inputs to FILE\n"
    "                  (text; docs/writing-a-layer.md has the format).\n"
    "--replay FILE     re-runs exactly that check on exactly those inputs (the\n"
    "                  dump names the plugin; --plugin PATH loads another build\n"
    "                  of it); exits 1 while it still fails, 0 once it passes.\n";

/* `check --replay FILE`: the dump's flow, from the registry or its plugin. */
static int replay(fl_cli *cli, const char *path)
{
    fl_kit_failure d, again;
    fl_kit_failure_init(&d);
    fl_kit_failure_init(&again);
    fl_registry *r = NULL;
    fl_status st = fl_kit_dump_read(path, &d);
    if (st == FL_OK) st = fl_cli_registry(cli, &r);
    const fl_comp_rec *c = st == FL_OK ? fl_registry_find(r, FL_KIND_FLOW, d.flow) : NULL;
    if (st == FL_OK && !c && d.plugin) {
        st = fl_registry_load(r, d.plugin);
        if (st == FL_OK) c = fl_registry_find(r, FL_KIND_FLOW, d.flow);
    }
    if (st == FL_OK && !c) {
        fl_err("%s: no flow '%s' is registered (load its plugin with --plugin PATH)", path,
               d.flow);
        st = FL_ERR_NOT_FOUND;
    }
    fl_kit_report rep;
    if (st == FL_OK) st = fl_kit_replay(&c->cls.flow, &d, &again, &rep);
    int rc = FL_EXIT_OK;
    if (st != FL_OK) {
        rc = fl_cli_fail(st);
    } else {
        const fl_kit_stat *s = &rep.stat[d.check];
        printf("replay of %s: %s of %s (%s)\n", path, fl_kit_check_name(d.check), d.flow,
               d.label[0] ? d.label : "defaults");
        printf("  dumped: error %.6g, tolerance %.1g\n", d.err, d.tol);
        printf("  now:    error %.6g, tolerance %.1g: %s\n", s->worst_err, s->tol,
               s->fails ? "FAIL" : "ok");
        if (again.check >= 0) {
            fl_kit_failure_print(&again, stdout);
            rc = FL_EXIT_FAILURE;
        }
    }
    fl_kit_failure_free(&d);
    fl_kit_failure_free(&again);
    fl_registry_free(r);
    return rc;
}

/* fl_cmd_check with `set`, room for argc KEY=VALUE pointers, owned by the
 * caller (so that every return below leaves nothing allocated). */
static int check_with(fl_cli *cli, int argc, char **argv, const char **set)
{
    const char *only = NULL;
    long dim = 0, rows = 8;
    int verbose = 0;
    uint32_t img[3] = { 0, 0, 0 }; /* --shape: c, h, w */
    unsigned long long seed = 1;
    const char *dump = NULL, *replay_path = NULL;
    size_t n_set = 0;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
            verbose = 1;
        } else if (strcmp(argv[i], "--flow") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--dim") == 0 && i + 1 < argc) {
            dim = strtol(argv[++i], &end, 10);
            if (*end || dim < 1 || dim > 256) {
                fprintf(stderr, "flowlab check: error: --dim expects an integer in [1, 256]\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc) {
            const char *a = argv[++i];
            unsigned long v[3];
            int ok = 1;
            for (int k = 0; k < 3 && ok; k++) {
                v[k] = strtoul(a, &end, 10);
                ok = end != a && v[k] >= 1 && v[k] <= 256 && *end == (k < 2 ? 'x' : 0);
                a = end + 1;
            }
            if (!ok || v[0] * v[1] * v[2] > 256) {
                fprintf(stderr, "flowlab check: error: --shape expects CxHxW (channels x height "
                                "x width, e.g. 2x4x4) with at most 256 numbers, not '%s'\n",
                        argv[i]);
                return FL_EXIT_USAGE;
            }
            for (int k = 0; k < 3; k++) img[k] = (uint32_t)v[k];
        } else if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc) {
            rows = strtol(argv[++i], &end, 10);
            if (*end || rows < 1 || rows > 100000) {
                fprintf(stderr, "flowlab check: error: --rows expects an integer in [1, 1e5]\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            if (!fl_cli_option_u64("check", "--seed", argv[++i], 0, ULLONG_MAX, &seed))
                return FL_EXIT_USAGE;
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            set[n_set++] = argv[++i];
        } else if (strcmp(argv[i], "--dump") == 0 && i + 1 < argc) {
            dump = argv[++i];
        } else if (strcmp(argv[i], "--replay") == 0 && i + 1 < argc) {
            replay_path = argv[++i];
        } else {
            fprintf(stderr, "flowlab check: error: unexpected argument '%s'\n%s", argv[i], usage);
            return FL_EXIT_USAGE;
        }
    }
    if (replay_path) {
        if (dump || n_set || only || dim || img[0] || rows != 8 || seed != 1) {
            fprintf(stderr, "flowlab check: error: --replay FILE takes only --plugin: the dump "
                            "fixes the flow, keys, shape, rows and seed\n");
            return FL_EXIT_USAGE;
        }
        return replay(cli, replay_path);
    }
    fl_registry *r;
    fl_status st = fl_cli_registry(cli, &r);
    if (st != FL_OK) return fl_cli_fail(st);
    /* With --plugin, only the flows of the plugins named are checked. */
    char *chosen = calloc(r->n_plugins + 1, 1);
    int restrict_to = cli->n_plugins > 0;
    for (size_t k = 0; chosen && k < cli->n_plugins; k++) {
        char real[4096];
        if (realpath(cli->plugins[k], real))
            for (size_t i = 0; i < r->n_plugins; i++)
                if (strcmp(r->plugins[i].path, real) == 0) chosen[i] = 1;
    }
    int layers = 0, checks = 0, failed = 0, failed_layers = 0, dumped = 0;
    /* A bad --set is refused before any layer runs, naming the key. */
    for (size_t i = 0; i < r->n_comps && st == FL_OK && n_set; i++) {
        const fl_comp_rec *c = &r->comps[i];
        if (c->kind != FL_KIND_FLOW || (only && strcmp(c->cls.base.name, only) != 0) ||
            (restrict_to && chosen && !chosen[c->plugin]))
            continue;
        st = fl_kit_check_set(&c->cls.flow, set, n_set);
    }
    if (st != FL_OK) {
        fprintf(stderr, "flowlab check: error: %s\n", fl_err_msg());
        free(chosen);
        fl_registry_free(r);
        return FL_EXIT_CONFIG;
    }
    for (size_t i = 0; i < r->n_comps && st == FL_OK; i++) {
        const fl_comp_rec *c = &r->comps[i];
        if (c->kind != FL_KIND_FLOW) continue;
        if (only && strcmp(c->cls.base.name, only) != 0) continue;
        if (restrict_to && chosen && !chosen[c->plugin]) continue;
        layers++;
        fl_kit_opts o = { (uint32_t)dim, 0, (uint32_t)rows, seed, 0.3, verbose ? stdout : NULL,
                          img[0], img[1], img[2] };
        fl_kit_report rep;
        fl_kit_failure fail;
        fl_kit_failure_init(&fail);
        fl_kit_debug dbg = { set, n_set, &fail };
        st = fl_kit_class_debug(&c->cls.flow, &o, &dbg, stdout, &rep);
        checks += rep.checks;
        failed += rep.failed;
        failed_layers += rep.failed > 0;
        if (st == FL_OK && dump && !dumped && fail.check >= 0) {
            fail.plugin = fl_strdup(r->plugins[c->plugin].path);
            st = fl_kit_dump_write(&fail, dump);
            if (st == FL_OK)
                printf("  -> wrote it to %s; re-run it: flowlab check --replay %s\n", dump, dump);
            dumped = 1;
        }
        fl_kit_failure_free(&fail);
        printf("\n");
        fflush(stdout);
    }
    if (st == FL_OK && dump && !dumped)
        printf("no check failed%s: %s not written\n", failed ? " on a single run" : "", dump);
    int rc = FL_EXIT_OK;
    if (st != FL_OK) rc = fl_cli_fail(st);
    else if (layers == 0) {
        fl_err("no flow matched%s%s", only ? " --flow " : "", only ? only : "");
        rc = fl_cli_fail(FL_ERR_NOT_FOUND);
    } else {
        printf("%d layers (%d failing), %d checks: %d passed, %d failed\n", layers, failed_layers,
               checks, checks - failed, failed);
        if (failed) rc = FL_EXIT_FAILURE;
    }
    free(chosen);
    fl_registry_free(r);
    return rc;
}

int fl_cmd_check(fl_cli *cli, int argc, char **argv)
{
    const char **set = calloc((size_t)argc + 1, sizeof *set);
    if (!set) return fl_cli_fail(FL_ERR_NOMEM);
    int rc = check_with(cli, argc, argv, set);
    free(set);
    return rc;
}
