/* main.c - the flowlab command: dispatch to subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "compute/blas.h"
#include "core/crash.h"
#include "core/log.h"
#include "core/util.h"

#ifndef FL_VERSION
#define FL_VERSION "0.1.0"
#endif

static const char usage[] =
    "usage: flowlab [--plugin PATH]... [--quiet] COMMAND [ARGS]\n"
    "\n"
    "Normalizing flows and variational inference, with every layer a plugin.\n"
    "\n"
    "commands:\n"
    "  run EXP.ini [--set SECTION.KEY=VALUE]... [--out DIR] [--resume]\n"
    "                      train and evaluate the experiment; writes a run directory\n"
    "  sweep EXP.ini [--dry-run] [--out DIR] [--jobs J] [--threads T]\n"
    "                      run every cell of the file's [sweep] section, then report\n"
    "  report SWEEP_DIR [--metric NAME] [--direction min|max] [--group-by KEYS]\n"
    "                      aggregate a sweep over seeds: report.md, .csv, .html\n"
    "  plugins [NAME]      list components, or document one component's keys\n"
    "  sample RUN_DIR -n N [-o FILE] [--seed S]\n"
    "                      draw N samples from a trained model as CSV\n"
    "  plot RUN_DIR        draw density, data, samples and NLL curves as PNGs\n"
    "  eval RUN_DIR [--k K] [--split test|valid]\n"
    "                      a VAE's test log-likelihood (IWAE-K, K = 5000), ELBO,\n"
    "                      KL, ESS and active units\n"
    "  logprob RUN_DIR --in FILE.csv|FILE.npy [--out FILE] [--k K]\n"
    "                      log p(x) of each row of FILE (density: exact; vae: IWAE-K)\n"
    "  gradvar RUN_DIR [--estimators elbo,iwae,stl,dreg] [--k 1,8,64] [--draws D]\n"
    "                      a VAE's gradient signal-to-noise ratio per estimator and k\n"
    "  check [--flow NAME] [--dim D] [--rows N] [--seed S] [--verbose]\n"
    "        [--set KEY=VALUE]... [--dump FILE] | --replay FILE\n"
    "                      run the conformance checks on flow layers\n"
    "  data [NAME] | data get NAME [--to DIR]\n"
    "                      where each data set's files are; download a missing one\n"
    "  new-layer NAME [--dir D] [--kind graph|hand]\n"
    "                      write a working flow layer plugin to start from\n"
    "\n"
    "options:\n"
    "  --plugin PATH       also load this plugin (repeatable); FLOWLAB_PLUGIN_PATH\n"
    "                      (colon-separated files or folders) is searched too\n"
    "  --quiet             only warnings and errors on stderr\n"
    "  --help, -h          this text (COMMAND --help: the command's)\n"
    "  --version           print the version\n"
    "\n"
    "exit codes: 0 ok, 1 run failed (e.g. non-finite loss), 2 bad command line,\n"
    "  3 bad experiment file or --set, 4 missing or refused plugin,\n"
    "  5 missing input or unwritable output\n"
    "\n"
    "environment:\n"
    "  FLOWLAB_PLUGIN_PATH  more plugin files or folders (colon-separated)\n"
    "  FLOWLAB_DATA         folders searched first for data sets (colon-separated)\n"
    "  XDG_DATA_HOME        the user's data folder: data sets in $XDG_DATA_HOME/flowlab\n"
    "                       (default ~/.local/share/flowlab)\n";

/* Commands that run no parallel work: no wait policy to choose (which
 * samples the CPUs for 100 ms and restarts the program). */
static int light_command(int argc, char **argv)
{
    static const char *const light[] = { "--help", "-h", "--version", "plugins", "report",
                                         "help", "data", "new-layer" };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--plugin") == 0) {
            i++;
            continue;
        }
        if (strcmp(argv[i], "--quiet") == 0) continue;
        for (size_t k = 0; k < sizeof light / sizeof *light; k++)
            if (strcmp(argv[i], light[k]) == 0) return 1;
        return 0;
    }
    return 1; /* no command: the usage text */
}

int main(int argc, char **argv)
{
    if (!light_command(argc, argv)) fl_choose_wait_policy(argv);
    fl_runtime_init();
    fl_crash_install();
    fl_cli cli = { 0 };
    cli.plugins = calloc((size_t)argc + 1, sizeof *cli.plugins);
    if (!cli.plugins) return FL_EXIT_FAILURE;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            free(cli.plugins);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("flowlab %s (ABI %d.%d, fl_real = %s)\n", FL_VERSION, FL_ABI_MAJOR,
                   FL_ABI_MINOR, FL_REAL_NAME);
            free(cli.plugins);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            fl_log_set_level(FL_LOG_WARN);
        } else if (strcmp(argv[i], "--plugin") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "flowlab: error: --plugin needs a PATH\n");
                free(cli.plugins);
                return FL_EXIT_USAGE;
            }
            cli.plugins[cli.n_plugins++] = argv[++i];
        } else {
            fprintf(stderr, "flowlab: error: unknown option '%s' (see flowlab --help)\n", argv[i]);
            free(cli.plugins);
            return FL_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fputs(usage, stderr);
        free(cli.plugins);
        return FL_EXIT_USAGE;
    }
    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    int rc;
    if (strcmp(cmd, "run") == 0) rc = fl_cmd_run(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "plugins") == 0) rc = fl_cmd_plugins(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "sample") == 0) rc = fl_cmd_sample(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "check") == 0) rc = fl_cmd_check(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "plot") == 0) rc = fl_cmd_plot(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "eval") == 0) rc = fl_cmd_eval(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "gradvar") == 0) rc = fl_cmd_gradvar(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "logprob") == 0) rc = fl_cmd_logprob(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "sweep") == 0) rc = fl_cmd_sweep(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "report") == 0) rc = fl_cmd_report(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "data") == 0) rc = fl_cmd_data(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "new-layer") == 0) rc = fl_cmd_new_layer(&cli, sub_argc, sub_argv);
    else if (strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        rc = FL_EXIT_OK;
    } else {
        fprintf(stderr, "flowlab: error: unknown command '%s' (see flowlab --help)\n", cmd);
        rc = FL_EXIT_USAGE;
    }
    free(cli.plugins);
    return rc;
}
