/* cli.h - the flowlab command's subcommands. */
#ifndef FL_CLI_H
#define FL_CLI_H

#include "registry.h"

/* Options every subcommand accepts. */
typedef struct fl_cli {
    const char **plugins;   /* --plugin PATH, in order */
    size_t n_plugins;
} fl_cli;

/* Loads the default plugin folders, then every --plugin (a refused explicit
 * plugin is an error). */
fl_status fl_cli_registry(const fl_cli *cli, fl_registry **out);
/* Prints "flowlab: error: <fl_err_msg>" and returns the exit code. */
int fl_cli_fail(fl_status st);

int fl_cmd_run(fl_cli *cli, int argc, char **argv);
int fl_cmd_plugins(fl_cli *cli, int argc, char **argv);
int fl_cmd_sample(fl_cli *cli, int argc, char **argv);
int fl_cmd_check(fl_cli *cli, int argc, char **argv);
int fl_cmd_plot(fl_cli *cli, int argc, char **argv);

#endif
