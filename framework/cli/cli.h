/* cli.h - the flowlab command's subcommands (cmd_*.c) and the helpers they
 * share (cli.c). */
#ifndef FL_CLI_H
#define FL_CLI_H

#include "model/experiment.h"
#include "core/registry.h"

/* Options every subcommand accepts. */
typedef struct fl_cli {
    const char **plugins;   /* --plugin PATH, in order */
    size_t n_plugins;
    int best;               /* --best (eval, sample): reload a run from best.flc, the
                               best-on-validation model, not checkpoint.flc */
} fl_cli;

/* Loads the default plugin folders, then every --plugin (a refused explicit
 * plugin is an error: its status, fl_err set, nothing to free). On success
 * the caller owns *out (fl_registry_free). */
fl_status fl_cli_registry(const fl_cli *cli, fl_registry **out);
/* Rebuilds a trained model from run directory `dir`: its config.ini, the
 * plugins (as fl_cli_registry), and checkpoint.flc with the averaged
 * parameters when the run kept an average (best.flc with cli->best; a run
 * without one is an error saying why). On success the caller owns
 * *reg and *e (free e first); on failure nothing is left to free and
 * fl_err says what is missing. */
fl_status fl_cli_load_run(const fl_cli *cli, const char *dir, fl_registry **reg,
                          fl_experiment **e);
/* As fl_cli_load_run, applying `sets` ("section.key=value") to the run's
 * config first (e.g. a different evaluation batch). */
fl_status fl_cli_load_run_with(const fl_cli *cli, const char *dir, const char *const *sets,
                               size_t n_sets, fl_registry **reg, fl_experiment **e);
/* After a failed fl_experiment_new on a run whose plugins `missing` (from
 * fl_provenance_reload) are gone: when the error is a component nobody
 * provides, adds which plugin is gone to fl_err and makes *st
 * FL_ERR_NOT_FOUND (exit 4). Otherwise leaves both alone. */
void fl_cli_missing_plugins(fl_status *st, const char *missing);
/* Logs fl_err_msg() as an error ("flowlab: error: ...") and returns the
 * exit code for `st` (fl_exit_code). After any failed call that set fl_err. */
int fl_cli_fail(fl_status st);

/* A decimal option value in [lo, hi] into *out: 1, or 0 (and *out unset)
 * when `s` is empty, holds anything but the digits 0-9 (a sign, a blank),
 * or is out of range (past 2^64 - 1 included). The caller prints the usage
 * error. Any time; no allocation. */
int fl_cli_parse_u64(const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out);
/* As fl_cli_parse_u64, printing on failure the one usage line "flowlab CMD:
 * error: OPT 'S': expected a whole number from LO to HI"; the caller then
 * exits with FL_EXIT_USAGE. */
int fl_cli_option_u64(const char *cmd, const char *opt, const char *s, unsigned long long lo,
                      unsigned long long hi, unsigned long long *out);
/* strtoull(s, end, 10) for a --seed-like option, without its surprises:
 * when `s` is not plain digits within 2^64 - 1 ("-1", " 5", "+5", "",
 * "18446744073709551616") it returns 0 and points *end at a non-empty
 * string, so a caller that refuses a non-empty *end refuses it, where
 * strtoull would have wrapped or saturated. *end points into `s` or at a
 * static string: read it, never write it. */
unsigned long long fl_cli_strtoull(const char *s, char **end);

/* The subcommands: argv[0] is the subcommand's name; each returns the
 * process's exit code (FL_EXIT_*), having printed its errors. */

/* `flowlab run`. With --resume it continues the run in --out DIR from its
 * checkpoint.flc, in any task (train/resume.c restores parameters, Adam's
 * state, the parameter average and the step; metrics.csv keeps its rows up
 * to that step); the experiment is built from EXP.ini and --set as given.
 * A DIR without a checkpoint starts afresh in place when it holds no
 * result.json and only files flowlab writes. `flowlab sweep` resumes an
 * unfinished cell (checkpoint.flc, no result.json) this way. */
int fl_cmd_run(fl_cli *cli, int argc, char **argv);
int fl_cmd_plugins(fl_cli *cli, int argc, char **argv);
int fl_cmd_sample(fl_cli *cli, int argc, char **argv);
int fl_cmd_check(fl_cli *cli, int argc, char **argv);
int fl_cmd_plot(fl_cli *cli, int argc, char **argv);
int fl_cmd_eval(fl_cli *cli, int argc, char **argv);
int fl_cmd_gradvar(fl_cli *cli, int argc, char **argv);
/* `flowlab logprob`: log p(x) of a file's rows (tasks/logprob.h). */
int fl_cmd_logprob(fl_cli *cli, int argc, char **argv);
int fl_cmd_sweep(fl_cli *cli, int argc, char **argv);
int fl_cmd_report(fl_cli *cli, int argc, char **argv);
int fl_cmd_data(fl_cli *cli, int argc, char **argv);
int fl_cmd_new_layer(fl_cli *cli, int argc, char **argv);

#endif
