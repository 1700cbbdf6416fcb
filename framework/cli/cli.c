/* cli.c - helpers shared by the subcommands: the plugin registry of a
 * command line, reloading a finished run, option parsing and the error
 * exit. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/log.h"
#include "core/util.h"
#include "model/experiment.h"
#include "output/provenance.h"
#include "train/checkpoint.h"

fl_status fl_cli_registry(const fl_cli *cli, fl_registry **out)
{
    fl_registry *r = fl_registry_new();
    if (!r) return FL_ERR_NOMEM;
    fl_registry_load_defaults(r);
    for (size_t i = 0; i < cli->n_plugins; i++) {
        fl_status st = fl_registry_load(r, cli->plugins[i]);
        if (st != FL_OK) {
            fl_registry_free(r);
            return st;
        }
    }
    *out = r;
    return FL_OK;
}

fl_status fl_cli_load_run(const fl_cli *cli, const char *dir, fl_registry **reg,
                          fl_experiment **e)
{
    return fl_cli_load_run_with(cli, dir, NULL, 0, reg, e);
}

fl_status fl_cli_load_run_with(const fl_cli *cli, const char *dir, const char *const *sets,
                               size_t n_sets, fl_registry **reg, fl_experiment **e)
{
    *reg = NULL;
    *e = NULL;
    char *cpath = fl_strfmt("%s/config.ini", dir);
    char *kpath = fl_strfmt("%s/%s", dir, cli->best ? "best.flc" : "checkpoint.flc");
    fl_config *cfg = NULL;
    fl_status st = cpath && kpath ? FL_OK : FL_ERR_NOMEM;
    struct stat sb;
    if (st == FL_OK && stat(dir, &sb) != 0) {
        fl_err("%s: %s", dir, strerror(errno));
        st = FL_ERR_IO;
    } else if (st == FL_OK && access(cpath, R_OK) != 0) {
        fl_err("%s: not a run directory (no readable config.ini; `flowlab run` makes one)", dir);
        st = FL_ERR_IO;
    } else if (st == FL_OK && cli->best && access(kpath, R_OK) != 0) {
        fl_err("%s: --best: the run has no best.flc (the best-on-validation model is kept when "
               "the data set has a validation split and [train] keep_best = true)", dir);
        st = FL_ERR_IO;
    }
    if (st == FL_OK) st = fl_config_load(cpath, &cfg);
    for (size_t i = 0; st == FL_OK && i < n_sets; i++) st = fl_config_set(cfg, sets[i]);
    if (st == FL_OK) st = fl_cli_registry(cli, reg);
    char missing[1024] = ""; /* the run's plugins that are gone */
    if (st == FL_OK) st = fl_provenance_reload(dir, *reg, missing, sizeof missing);
    if (st == FL_OK) {
        st = fl_experiment_new(*reg, cfg, e);
        cfg = NULL;
        fl_cli_missing_plugins(&st, missing);
    }
    if (st == FL_OK) st = fl_checkpoint_load(kpath, &(*e)->arena, NULL, NULL, 1, NULL);
    if (st != FL_OK) {
        fl_experiment_free(*e);
        fl_registry_free(*reg);
        *e = NULL;
        *reg = NULL;
    }
    fl_config_free(cfg);
    free(cpath);
    free(kpath);
    return st;
}

void fl_cli_missing_plugins(fl_status *st, const char *missing)
{
    if (*st == FL_OK || !missing[0] || !strstr(fl_err_msg(), "no such")) return;
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", fl_err_msg());
    fl_err("%s (the run used plugin %s, which is gone: rebuild it there or give --plugin PATH)",
           msg, missing);
    *st = FL_ERR_NOT_FOUND;
}

int fl_cli_fail(fl_status st)
{
    fl_log(FL_LOG_ERROR, "%s", fl_err_msg());
    return fl_exit_code(st);
}

int fl_cli_parse_u64(const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out)
{
    /* Digits only: strtoull would skip blanks, take a sign and negate
     * "-1" to 2^64 - 1, and saturate past 2^64 (ERANGE, checked). */
    if (!*s || strspn(s, "0123456789") != strlen(s)) return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int fl_cli_option_u64(const char *cmd, const char *opt, const char *s, unsigned long long lo,
                      unsigned long long hi, unsigned long long *out)
{
    if (fl_cli_parse_u64(s, lo, hi, out)) return 1;
    fprintf(stderr, "flowlab %s: error: %s '%s': expected a whole number from %llu to %llu\n", cmd,
            opt, s, lo, hi);
    return 0;
}

unsigned long long fl_cli_strtoull(const char *s, char **end)
{
    unsigned long long v;
    if (fl_cli_parse_u64(s, 0, ULLONG_MAX, &v)) {
        *end = (char *)s + strlen(s);
        return v;
    }
    /* Anything a caller testing *end refuses: never the empty string. */
    static char bad[] = "?";
    *end = *s ? (char *)s : bad;
    return 0;
}
