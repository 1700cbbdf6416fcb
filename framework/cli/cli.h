/* cli.h - the flowlab command's subcommands. */
#ifndef FL_CLI_H
#define FL_CLI_H

#include <errno.h>
#include <stdlib.h>

#include "model/experiment.h"
#include "core/registry.h"

/* Options every subcommand accepts. */
typedef struct fl_cli {
    const char **plugins;   /* --plugin PATH, in order */
    size_t n_plugins;
} fl_cli;

/* 1 once `flowlab run --resume` really continues training; until then run
 * refuses --resume, and `flowlab sweep` reruns an interrupted cell from
 * scratch instead of passing it. */
#define FL_RUN_CAN_RESUME 1

/* Loads the default plugin folders, then every --plugin (a refused explicit
 * plugin is an error). */
fl_status fl_cli_registry(const fl_cli *cli, fl_registry **out);
/* Rebuilds a trained model from run directory `dir`: its config.ini, the
 * plugins (as fl_cli_registry), and checkpoint.flc with the averaged
 * parameters when the run kept an average. On success the caller owns
 * *reg and *e (free e first); on failure nothing is left to free and
 * fl_err says what is missing. */
fl_status fl_cli_load_run(const fl_cli *cli, const char *dir, fl_registry **reg,
                          fl_experiment **e);
/* As fl_cli_load_run, applying `sets` ("section.key=value") to the run's
 * config first (e.g. a different evaluation batch). */
fl_status fl_cli_load_run_with(const fl_cli *cli, const char *dir, const char *const *sets,
                               size_t n_sets, fl_registry **reg, fl_experiment **e);
/* Prints "flowlab: error: <fl_err_msg>" and returns the exit code. */
int fl_cli_fail(fl_status st);

/* A decimal option value in [lo, hi] into *out: 1, or 0 (and *out unset)
 * when `s` is empty, has anything after the digits, starts with '-' or is
 * out of range. */
static inline int fl_cli_parse_u64(const char *s, unsigned long long lo, unsigned long long hi,
                                   unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi || s[0] == '-') return 0;
    *out = v;
    return 1;
}

int fl_cmd_run(fl_cli *cli, int argc, char **argv);
int fl_cmd_plugins(fl_cli *cli, int argc, char **argv);
int fl_cmd_sample(fl_cli *cli, int argc, char **argv);
int fl_cmd_check(fl_cli *cli, int argc, char **argv);
int fl_cmd_plot(fl_cli *cli, int argc, char **argv);
int fl_cmd_eval(fl_cli *cli, int argc, char **argv);
int fl_cmd_gradvar(fl_cli *cli, int argc, char **argv);
int fl_cmd_sweep(fl_cli *cli, int argc, char **argv);
int fl_cmd_report(fl_cli *cli, int argc, char **argv);

#endif
