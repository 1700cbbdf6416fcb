/* cmd_plot.c - `flowlab plot`: pictures of a trained density or vi run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/log.h"
#include "model/experiment.h"
#include "tasks/task.h"
#include "core/util.h"

static const char usage[] =
    "usage: flowlab plot RUN_DIR [--plugin PATH]...\n"
    "\n"
    "Rebuilds the model from RUN_DIR/config.ini, loads RUN_DIR/checkpoint.flc and\n"
    "writes into RUN_DIR (atomically), each picture with axes, tick labels, axis\n"
    "labels, a title and a legend or colour bar:\n"
    "  curves.png    train (blue) and test (orange) NLL against step, from\n"
    "  curves.svg    metrics.csv (the same chart as a vector file);\n"
    "                curves_axes.csv holds the axis ranges\n"
    "and for 2-dimensional data, all on the same axes over the test split's\n"
    "bounding box padded by 10%, evaluated on a 200x200 grid (plot_grid.csv\n"
    "holds the ranges):\n"
    "  density.png   the learned density exp(log p(x)) (viridis, linear, colour bar)\n"
    "  data.png      the test split's smoothed histogram\n"
    "  samples.png   5000 samples from the model\n"
    "For image data, samples.png is a grid of samples at temperatures 0.5, 0.7\n"
    "and 1.0, one labelled block each (samples_grid.csv: where each block is).\n"
    "\n"
    "For a vi run (task = vi), curves.png shows the training bound (blue), the\n"
    "evaluation ELBO (orange) and the reference log Z (grey), and for a 2D target,\n"
    "on the target's box:\n"
    "  target.png    the target density, normalised on the grid\n"
    "  density.png   the fitted q(z), same colour scale (through the inverses, or\n"
    "                a histogram of samples when a layer has none)\n"
    "  samples.png   5000 samples of q\n";

int fl_cmd_plot(fl_cli *cli, int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "flowlab plot: error: unexpected argument '%s'\n%s", argv[i], usage);
            return FL_EXIT_USAGE;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        fprintf(stderr, "flowlab plot: error: need RUN_DIR\n%s", usage);
        return FL_EXIT_USAGE;
    }
    fl_registry *reg;
    fl_experiment *e;
    fl_status st = fl_cli_load_run(cli, dir, &reg, &e);
    const fl_task *t = st == FL_OK ? fl_task_of(e) : NULL;
    if (t && !t->plot) {
        fl_err("%s: the %s task has no pictures", dir, t->model.name);
        st = FL_ERR_UNSUPPORTED;
    }
    const char *files = "";
    if (st == FL_OK) st = t->plot(e, dir, &files);
    if (st == FL_OK) fl_log(FL_LOG_INFO, "wrote %s/%s", dir, files);
    int rc = st == FL_OK ? FL_EXIT_OK : fl_cli_fail(st);
    fl_experiment_free(e);
    fl_registry_free(reg);
    return rc;
}
