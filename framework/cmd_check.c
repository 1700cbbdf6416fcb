/* cmd_check.c - `flowlab check`: the conformance kit from the command line. */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kit.h"
#include "util.h"

static const char usage[] =
    "usage: flowlab check [--plugin PATH]... [--flow NAME] [--dim D] [--rows N] [--seed S]\n"
    "\n"
    "Runs the conformance kit on every registered flow (or only NAME, or only the\n"
    "flows of the --plugin files given): inverse round trip, log-determinant\n"
    "against finite differences of the Jacobian, and backward against finite\n"
    "differences for inputs, parameters and context. Each layer is checked with\n"
    "its default keys in several shapes (dim D, or 2, 5 and 8; with and without\n"
    "context) on N rows (default 8). Prints every measured error beside its tolerance; exits 1 if any\n"
    "check fails.\n";

int fl_cmd_check(fl_cli *cli, int argc, char **argv)
{
    const char *only = NULL;
    long dim = 0, rows = 8;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--flow") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--dim") == 0 && i + 1 < argc) {
            dim = strtol(argv[++i], &end, 10);
            if (*end || dim < 1 || dim > 256) {
                fprintf(stderr, "flowlab check: error: --dim expects an integer in [1, 256]\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc) {
            rows = strtol(argv[++i], &end, 10);
            if (*end || rows < 1 || rows > 100000) {
                fprintf(stderr, "flowlab check: error: --rows expects an integer in [1, 1e5]\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], &end, 10);
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else {
            fprintf(stderr, "flowlab check: error: unexpected argument '%s'\n%s", argv[i], usage);
            return FL_EXIT_USAGE;
        }
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
    int layers = 0, failed_layers = 0, checks = 0, failed = 0;
    uint32_t dims[3] = { 2, 5, 8 };
    size_t ndims = dim ? 1 : 3;
    if (dim) dims[0] = (uint32_t)dim;
    for (size_t i = 0; i < r->n_comps && st == FL_OK; i++) {
        const fl_comp_rec *c = &r->comps[i];
        if (c->kind != FL_KIND_FLOW) continue;
        if (only && strcmp(c->cls.base.name, only) != 0) continue;
        if (restrict_to && chosen && !chosen[c->plugin]) continue;
        layers++;
        int bad = 0;
        for (size_t di = 0; di < ndims && st == FL_OK; di++) {
            uint32_t ctxs[2] = { 0, 3 };
            int nctx = (c->cls.flow.flags & FL_FLOW_ACCEPTS_CONTEXT) ? 2 : 1;
            for (int ci = 0; ci < nctx && st == FL_OK; ci++) {
                fl_kit_opts o = { dims[di], ctxs[ci], (uint32_t)rows, seed + di * 7 + (uint64_t)ci, 0.3, stdout };
                fl_kit_report rep;
                st = fl_kit_flow(&c->cls.flow, NULL, &o, &rep);
                checks += rep.checks;
                failed += rep.failed;
                bad |= rep.failed > 0;
                if (rep.failed) printf("  -> FAILED: %s\n", rep.first_failure);
            }
        }
        failed_layers += bad;
        printf("\n");
    }
    int rc = FL_EXIT_OK;
    if (st != FL_OK) rc = fl_cli_fail(st);
    else if (layers == 0) {
        fl_err("no flow matched%s%s", only ? " --flow " : "", only ? only : "");
        rc = fl_cli_fail(FL_ERR_NOT_FOUND);
    } else {
        printf("%d layers, %d checks: %d passed, %d failed\n", layers, checks, checks - failed,
               failed);
        if (failed) rc = FL_EXIT_FAILURE;
    }
    (void)failed_layers;
    free(chosen);
    fl_registry_free(r);
    return rc;
}
