/* cmd_sweep.c - `flowlab sweep`: its options, the checks before any cell
 * runs (the file, the swept values, the cores), the sweep directory, and
 * the report at the end. The cells run as child `flowlab run` processes
 * (sweep/runner.c), spread over MPI ranks when there are several
 * (sweep/mpi.c). */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "model/experiment.h"
#include "sweep/report.h"
#include "output/rundir.h"
#include "sweep/mpi.h"
#include "sweep/runner.h"
#include "sweep/sweep.h"
#include "train/resume.h"

static const char usage[] =
    "usage: flowlab sweep EXP.ini [--dry-run] [--out DIR] [--jobs J] [--threads T]\n"
    "                     [--oversubscribe] [--set SECTION.KEY=VALUE]...\n"
    "                     [--unset SECTION[.KEY]]... [--plugin PATH]...\n"
    "\n"
    "Runs every cell of EXP.ini's [sweep] section (the cartesian product of the\n"
    "listed values, with zip groups and exclude rules; see docs/sweeps.md) as a\n"
    "child `flowlab run` into DIR/CELL, where CELL names the cell's settings,\n"
    "e.g. flow.1.repeat=4,experiment.seed=2. Each cell's output goes to\n"
    "DIR/CELL/log.txt. A failing cell is recorded in DIR/CELL/failed.txt and the\n"
    "sweep goes on. Running the same command again skips finished cells (same\n"
    "resolved config) and reruns unfinished ones. At the end DIR gets cells.csv\n"
    "(one line per cell) and the report (see flowlab report --help).\n"
    "\n"
    "  --dry-run        list the cells and exit\n"
    "  --out DIR        sweep directory (default sweeps/NAME, NAME from [experiment])\n"
    "  --jobs J         cells run at once (default 1)\n"
    "  --threads T      threads per cell, passed as experiment.threads\n"
    "                   (default: the cores available divided by J)\n"
    "  --oversubscribe  allow J x T above the number of cores\n"
    "  --set S.K=V      override a key of every cell (not a swept key); repeatable\n"
    "  --unset S.K      remove key K of section S (or with --unset S the whole\n"
    "                   section) from every cell, before the --set options: its\n"
    "                   line is commented out in DIR/base.ini; repeatable\n"
    "\n"
    "Under `mpirun -n N flowlab sweep ...` (a build with MPI) the cells are spread\n"
    "over the N ranks: rank 0 hands out cells one at a time and runs its share\n"
    "too; rank 0 writes cells.csv and the report. --jobs and --threads apply per\n"
    "rank. Exit status 1 when any cell failed.\n";

/* The command's state: the run the runner and the ranks share, and what
 * only the CLI's checks need. */
typedef struct sweep_cmd {
    fl_sweep_run run;
    fl_cli *cli;
    fl_registry *reg;      /* for the finished-cell check, loaded on first use */
    const char **unsets;   /* --unset NAME, applied to the base text by prepare */
    size_t n_unsets;
} sweep_cmd;

/* --unset NAME on the sweep's base text: the key's line, or a section's
 * header and key lines, commented out (line numbers kept), so that the
 * checks here and every cell (DIR/base.ini) read the same file. A swept
 * key, or a name that matches nothing, is refused. */
static fl_status unset_base(fl_sweep *sw, const char *path, const char *name)
{
    for (size_t a = 0; a < sw->n_axes; a++)
        if (!strcmp(name, sw->axes[a].key)) {
            fl_err("--unset %s: %s is swept (%s:%d); change it there", name, name, path,
                   sw->axes[a].line);
            return FL_ERR_INVALID;
        }
    fl_config *cfg = NULL;
    fl_status st = fl_config_parse(path, sw->base, &cfg);
    int lines[512];
    size_t n = 0;
    const fl_cfg_section *sec = st == FL_OK ? fl_config_section(cfg, name) : NULL;
    if (sec) {
        lines[n++] = sec->line;
        for (size_t j = 0; j < sec->n && n < 512; j++) lines[n++] = sec->e[j].line;
    } else if (st == FL_OK && strrchr(name, '.')) {
        char *sn = fl_strndup(name, (size_t)(strrchr(name, '.') - name));
        const fl_cfg_section *s2 = sn ? fl_config_section(cfg, sn) : NULL;
        const fl_cfg_entry *e = s2 ? fl_config_entry(s2, strrchr(name, '.') + 1) : NULL;
        if (e) lines[n++] = e->line;
        free(sn);
    }
    if (st == FL_OK) st = fl_config_unset(cfg, name); /* its message when nothing matches */
    fl_config_free(cfg);
    if (st != FL_OK) return st;
    fl_buf b = { 0 };
    int line = 1;
    for (const char *p = sw->base; *p;) {
        const char *nl = strchr(p, '\n');
        const size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
        for (size_t i = 0; i < n; i++)
            if (lines[i] == line) {
                fl_buf_write(&b, "; ", 2);
                break;
            }
        fl_buf_write(&b, p, len);
        p += len;
        line++;
    }
    fl_buf_write(&b, "", 1);
    if (b.failed) {
        fl_buf_free(&b);
        return FL_ERR_NOMEM;
    }
    free(sw->base);
    sw->base = b.data;
    return FL_OK;
}

/* ---- the finished-cell check ------------------------------------------- */

/* Resolved config text without comments, blank lines and [experiment]
 * threads (which never changes results). */
static void normalise(const char *text, fl_buf *out)
{
    int in_exp = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        const char *q = p;
        while (n && (*q == ' ' || *q == '\t')) q++, n--;
        if (n && *q == '[') in_exp = n >= 12 && strncmp(q, "[experiment]", 12) == 0;
        int skip = !n || *q == ';' || *q == '#' || (in_exp && n > 7 && !strncmp(q, "threads", 7) &&
                                                   (q[7] == ' ' || q[7] == '='));
        if (!skip) {
            fl_buf_write(out, q, n);
            fl_buf_write(out, "\n", 1);
        }
        p = nl ? nl + 1 : p + n;
    }
}

/* The config a cell runs: the base text, every --set, the cell's values.
 * It is parsed under the sweep file's own name (the base text keeps its line
 * numbers) and each swept value carries the line of its [sweep] entry, so
 * errors read "EXP.ini:LINE: ...". */
static fl_status cell_config(const fl_sweep_run *x, size_t cell, fl_config **out)
{
    fl_config *cfg = NULL;
    fl_status st = fl_config_parse(x->exp_path, x->s->base, &cfg);
    for (size_t i = 0; st == FL_OK && i < x->n_sets; i++) st = fl_config_set(cfg, x->sets[i]);
    for (size_t a = 0; st == FL_OK && a < x->s->n_axes; a++) {
        const fl_sweep_axis *ax = &x->s->axes[a];
        const char *dot = strrchr(ax->key, '.'); /* fl_sweep_parse checked SECTION.KEY */
        char *section = dot ? fl_strndup(ax->key, (size_t)(dot - ax->key)) : NULL;
        st = section ? fl_config_put(cfg, section, dot + 1, fl_sweep_value(x->s, cell, a), ax->line)
                     : FL_ERR_NOMEM;
        free(section);
    }
    if (st != FL_OK) {
        fl_config_free(cfg);
        return st;
    }
    *out = cfg;
    return FL_OK;
}

/* The experiment cell `cell` would run now (its config with the sweep's
 * values), in *e (free with fl_experiment_free; NULL on error, fl_err set):
 * what same_config and resumable compare with the cell's directory. */
static fl_status cell_experiment(sweep_cmd *cmd, const fl_sweep_run *x, size_t cell,
                                 fl_experiment **e)
{
    *e = NULL;
    fl_status st = cmd->reg ? FL_OK : fl_cli_registry(cmd->cli, &cmd->reg);
    fl_config *cfg = NULL;
    if (st == FL_OK) st = cell_config(x, cell, &cfg);
    if (st == FL_OK) st = fl_experiment_new(cmd->reg, cfg, e); /* takes cfg */
    return st;
}

/* 1 when DIR/CELL/config.ini is what the cell would resolve to now, 0 when
 * it differs, -1 on error (fl_err set): the runner's same_config, with the
 * sweep_cmd as ctx. */
static int same_config(const fl_sweep_run *x, size_t cell, void *ctx)
{
    fl_experiment *e = NULL;
    fl_status st = cell_experiment(ctx, x, cell, &e);
    fl_buf now = { 0 }, a = { 0 }, b = { 0 };
    if (st == FL_OK) st = fl_experiment_resolved(e, &now);
    char *path = fl_strfmt("%s/%s/config.ini", x->dir, x->s->cells[cell].name), *old = NULL;
    if (st == FL_OK) st = path ? fl_read_file(path, &old, NULL) : FL_ERR_NOMEM;
    int same = -1;
    if (st == FL_OK) {
        normalise(now.data, &a);
        normalise(old, &b);
        same = !a.failed && !b.failed && a.len == b.len && memcmp(a.data, b.data, a.len) == 0;
    }
    fl_buf_free(&now);
    fl_buf_free(&a);
    fl_buf_free(&b);
    free(old);
    free(path);
    fl_experiment_free(e);
    return same;
}

/* A sweep continues in its own directory (sweep.ini marks one) or starts in
 * a new or empty one; any other directory is refused before anything is
 * written (issue 13: a sweep once wrote its cells, report.csv and cells.csv
 * into a run directory or a folder of the user's own files). */
static fl_status check_dir(const char *dir)
{
    struct stat sb;
    if (stat(dir, &sb) != 0) return FL_OK;
    if (!S_ISDIR(sb.st_mode)) {
        fl_err("%s: exists and is not a directory; choose another --out", dir);
        return FL_ERR_EXISTS;
    }
    if (fl_sweep_exists(dir, "sweep.ini", NULL)) return FL_OK;
    DIR *d = opendir(dir);
    if (!d) {
        fl_err("cannot read directory %s: %s", dir, strerror(errno));
        return FL_ERR_IO;
    }
    struct dirent *de;
    int empty = 1;
    while (empty && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
    closedir(d);
    if (empty) return FL_OK;
    fl_err("%s: exists, is not empty and is not a sweep directory (no sweep.ini); choose "
           "another --out or remove it (runs are never overwritten)",
           dir);
    return FL_ERR_EXISTS;
}

/* The runner's resumable: what `run --resume` of the cell would check
 * (fl_resume_check), without starting it. 1 resumable, 0 another
 * experiment or too few steps (fl_err says which), -1 on another error. */
static int resumable(const fl_sweep_run *x, size_t cell, void *ctx)
{
    fl_experiment *e = NULL;
    fl_status st = cell_experiment(ctx, x, cell, &e);
    int ok = -1; /* a cell whose experiment cannot be built fails with that error */
    char *dir = st == FL_OK ? fl_strfmt("%s/%s", x->dir, x->s->cells[cell].name) : NULL;
    if (st == FL_OK) {
        st = dir ? fl_resume_check(e, dir) : FL_ERR_NOMEM;
        ok = st == FL_OK ? 1 : st == FL_ERR_INVALID ? 0 : -1;
    }
    free(dir);
    fl_experiment_free(e);
    return ok;
}

/* Builds the experiment of a few cells that together take every value of
 * every axis (greedily, the cell covering the most unchecked values first),
 * so a misspelled swept key or a bad swept value stops the sweep before any
 * cell runs, with the message naming the sweep file's line. Sets fl_err. */
static fl_status check_values(sweep_cmd *cmd)
{
    const fl_sweep_run *x = &cmd->run;
    const fl_sweep *s = x->s;
    size_t off = 0, *first = calloc(s->n_axes + 1, sizeof *first);
    if (!first) return FL_ERR_NOMEM;
    for (size_t a = 0; a < s->n_axes; a++) first[a] = off, off += s->axes[a].n;
    /* need[first[a] + v]: value v of axis a is in some cell, unchecked */
    unsigned char *need = calloc(off + 1, 1);
    size_t left = 0;
    fl_status st = need ? FL_OK : FL_ERR_NOMEM;
    for (size_t c = 0; st == FL_OK && c < s->n_cells; c++)
        for (size_t a = 0; a < s->n_axes; a++) {
            unsigned char *n = &need[first[a] + s->cells[c].choice[a]];
            left += !*n;
            *n = 1;
        }
    if (st == FL_OK && !cmd->reg) st = fl_cli_registry(cmd->cli, &cmd->reg);
    while (st == FL_OK && left) {
        size_t best = 0, best_n = 0;
        for (size_t c = 0; c < s->n_cells && best_n < s->n_axes; c++) {
            size_t n = 0;
            for (size_t a = 0; a < s->n_axes; a++) n += need[first[a] + s->cells[c].choice[a]];
            if (n > best_n) best = c, best_n = n;
        }
        for (size_t a = 0; a < s->n_axes; a++) need[first[a] + s->cells[best].choice[a]] = 0;
        left -= best_n;
        fl_config *cfg = NULL;
        fl_experiment *e = NULL;
        st = cell_config(x, best, &cfg);
        if (st == FL_OK) st = fl_experiment_new(cmd->reg, cfg, &e);
        fl_experiment_free(e);
        if (st != FL_OK && st != FL_ERR_NOMEM) {
            char *msg = fl_strdup(fl_err_msg());
            if (msg) fl_err("%s (in cell %zu, %s)", msg, best + 1, s->cells[best].name);
            free(msg);
        }
    }
    free(need);
    free(first);
    return st;
}

/* Moves a finished cell whose config changed to DIR/superseded/CELL[.k]. */

/* ---- the table of cells (rank 0) ---------------------------------------- */

static const char *cell_state(const fl_sweep_run *x, size_t c)
{
    const char *name = x->s->cells[c].name;
    if (fl_sweep_exists(x->dir, name, "result.json")) return "finished";
    if (fl_sweep_exists(x->dir, name, "failed.txt")) return "failed";
    if (fl_sweep_exists(x->dir, name, "checkpoint.flc")) return "partial";
    return "new";
}

static void print_cells(const fl_sweep_run *x, size_t n_excl)
{
    const fl_sweep *s = x->s;
    printf("sweep %s: %zu cells", x->exp_path, s->n_cells);
    if (n_excl) printf(" (%zu excluded)", n_excl);
    printf(" in %s; %d rank%s x %d job%s x %d thread%s\n", x->dir, x->size, x->size > 1 ? "s" : "",
           x->jobs, x->jobs > 1 ? "s" : "", x->threads, x->threads > 1 ? "s" : "");
    int *w = calloc(s->n_axes + 1, sizeof *w);
    if (!w) return;
    for (size_t a = 0; a < s->n_axes; a++) {
        w[a] = (int)strlen(s->axes[a].key);
        for (size_t v = 0; v < s->axes[a].n; v++)
            if ((int)strlen(s->axes[a].values[v]) > w[a]) w[a] = (int)strlen(s->axes[a].values[v]);
    }
    printf("%5s", "cell");
    for (size_t a = 0; a < s->n_axes; a++) printf("  %-*s", w[a], s->axes[a].key);
    printf("  %-8s  %s\n", "state", "run directory");
    for (size_t c = 0; c < s->n_cells; c++) {
        printf("%5zu", c + 1);
        for (size_t a = 0; a < s->n_axes; a++) printf("  %-*s", w[a], fl_sweep_value(s, c, a));
        printf("  %-8s  %s\n", cell_state(x, c), s->cells[c].name);
    }
    fflush(stdout);
    free(w);
}


/* ---- the command ------------------------------------------------------ */

static int parse_count(const char *opt, const char *v, int *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < 1 || n > 4096) {
        fprintf(stderr, "flowlab sweep: error: %s '%s': expected a whole number from 1 to 4096\n",
                opt, v);
        return 0;
    }
    *out = (int)n;
    return 1;
}

static char *default_dir(const char *exp_path, const fl_config *cfg)
{
    const fl_cfg_entry *e = fl_config_entry(fl_config_section(cfg, "experiment"), "name");
    if (e && e->value[0] && !strchr(e->value, '/') && strcmp(e->value, ".") && strcmp(e->value, ".."))
        return fl_strfmt("sweeps/%s", e->value);
    const char *b = strrchr(exp_path, '/');
    b = b ? b + 1 : exp_path;
    size_t n = strlen(b);
    if (n > 4 && !strcmp(b + n - 4, ".ini")) n -= 4;
    return fl_strfmt("sweeps/%.*s", (int)n, b);
}

/* Everything before the cells run: the file, the options, the directory.
 * Returns an exit code, FL_EXIT_OK to go on. */
static int prepare(sweep_cmd *cmd, const char *out, int dry_run, int oversubscribe, int jobs_set,
                   int threads_set, char **text)
{
    fl_sweep_run *x = &cmd->run;
    fl_status st = fl_sweep_read(x->exp_path, text);
    if (st == FL_OK) st = fl_sweep_parse(x->exp_path, *text, &x->s);
    for (size_t i = 0; st == FL_OK && i < cmd->n_unsets; i++)
        st = unset_base(x->s, x->exp_path, cmd->unsets[i]);
    /* The base must parse as an experiment on its own (same line numbers). */
    fl_config *cfg = NULL;
    if (st == FL_OK) st = fl_config_parse(x->exp_path, x->s->base, &cfg);
    for (size_t i = 0; st == FL_OK && i < x->n_sets; i++) {
        st = fl_config_set(cfg, x->sets[i]);
        const char *eq = strchr(x->sets[i], '=');
        for (size_t a = 0; st == FL_OK && eq && a < x->s->n_axes; a++) {
            char *lhs = fl_strndup(x->sets[i], (size_t)(eq - x->sets[i]));
            char *k = lhs ? fl_strtrim(lhs) : NULL;
            free(lhs);
            if (k && !strcmp(k, x->s->axes[a].key)) {
                fl_err("--set %s: %s is swept (%s:%d); change it there", x->sets[i], k,
                       x->exp_path, x->s->axes[a].line);
                st = FL_ERR_INVALID;
            }
            free(k);
        }
    }
    if (st == FL_OK) {
        x->dir = out ? fl_strdup(out) : default_dir(x->exp_path, cfg);
        if (!x->dir) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) st = check_dir(x->dir);
    fl_config_free(cfg);
    if (st != FL_OK) return x->rank == 0 ? fl_cli_fail(st) : fl_exit_code(st);
    x->base_path = fl_strfmt("%s/base.ini", x->dir);
    if (!x->base_path) return FL_EXIT_FAILURE;
    /* The cells run DIR/base.ini: their relative data paths still mean the
     * sweep file's folder (model/datapath.h) */
    const char *slash = strrchr(x->exp_path, '/');
    char cwd[4096];
    char *folder = x->exp_path[0] == '/' ? fl_strndup(x->exp_path, (size_t)(slash - x->exp_path))
                   : !getcwd(cwd, sizeof cwd) ? NULL
                   : slash ? fl_strfmt("%s/%.*s", cwd, (int)(slash - x->exp_path), x->exp_path)
                           : fl_strdup(cwd);
    if (folder && !getenv("FLOWLAB_EXPERIMENT_DIR"))
        setenv("FLOWLAB_EXPERIMENT_DIR", folder[0] ? folder : "/", 1);
    free(folder);
    x->threads_swept = fl_sweep_axis_find(x->s, "experiment.threads") >= 0;

    int shared = 1, cores = fl_sweep_core_budget(&shared);
    int budget = cores / shared;
    if (!jobs_set) x->jobs = 1;
    if (!threads_set) x->threads = budget / x->jobs > 0 ? budget / x->jobs : 1;
    if ((long)x->jobs * x->threads > budget && !oversubscribe) {
        if (x->rank == 0) {
            if (shared > 1)
                fprintf(stderr,
                        "flowlab: error: --jobs %d x --threads %d on each of %d ranks needs %ld "
                        "cores, this node has %d; lower them or pass --oversubscribe\n",
                        x->jobs, x->threads, shared, (long)x->jobs * x->threads * shared, cores);
            else
                fprintf(stderr,
                        "flowlab: error: --jobs %d x --threads %d needs %ld cores, %d are "
                        "available; lower them or pass --oversubscribe\n",
                        x->jobs, x->threads, (long)x->jobs * x->threads, cores);
        }
        return FL_EXIT_USAGE;
    }
    if ((long)x->jobs * x->threads > budget) x->envp = fl_sweep_passive_env(); /* --oversubscribe */
    if (x->rank == 0) {
        st = check_values(cmd);
        if (st != FL_OK) return fl_cli_fail(st);
        print_cells(x, x->s->n_product - x->s->n_cells);
    }
    if (dry_run) return -1;

    /* rank 0 lays out the directory */
    if (x->rank == 0) {
        /* sweep.ini first: it marks the directory as this sweep's (check_dir) */
        char *logs = fl_strfmt("%s/logs", x->dir);
        st = logs ? fl_mkdirs(x->dir) : FL_ERR_NOMEM;
        if (st == FL_OK) st = fl_rundir_write(x->dir, "sweep.ini", *text, strlen(*text));
        if (st == FL_OK) st = fl_rundir_write(x->dir, "base.ini", x->s->base, strlen(x->s->base));
        /* the --set options of the whole sweep, one a line, for the report */
        fl_buf sets = { 0 };
        for (size_t i = 0; i < x->n_sets; i++) fl_buf_printf(&sets, "%s\n", x->sets[i]);
        if (st == FL_OK) st = sets.failed ? FL_ERR_NOMEM
                                          : fl_rundir_write(x->dir, "sets.txt", sets.data ? sets.data : "", sets.len);
        fl_buf_free(&sets);
        if (st == FL_OK) st = fl_mkdirs(logs);
        free(logs);
        if (st != FL_OK) return fl_cli_fail(st);
    }
    return FL_EXIT_OK;
}

int fl_cmd_sweep(fl_cli *cli, int argc, char **argv)
{
    sweep_cmd cmd = { .run = { .argv0 = "flowlab", .jobs = 1, .threads = 1, .size = 1 },
                      .cli = cli };
    fl_sweep_run *x = &cmd.run;
    x->same_config = same_config;
    x->resumable = resumable;
    x->same_config_ctx = &cmd;
    const char *out = NULL;
    int dry_run = 0, oversubscribe = 0, jobs_set = 0, threads_set = 0;
    x->sets = calloc((size_t)argc + 1, sizeof *x->sets);
    cmd.unsets = calloc((size_t)argc + 1, sizeof *cmd.unsets);
    if (!x->sets || !cmd.unsets) {
        free(x->sets);
        free(cmd.unsets);
        return FL_EXIT_FAILURE;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            free(x->sets);
            free(cmd.unsets);
            return FL_EXIT_OK;
        } else if (!strcmp(a, "--dry-run")) {
            dry_run = 1;
        } else if (!strcmp(a, "--oversubscribe")) {
            oversubscribe = 1;
        } else if (!strcmp(a, "--out") && more) {
            out = argv[++i];
        } else if (!strcmp(a, "--jobs") && more) {
            if (!parse_count(a, argv[++i], &x->jobs)) goto usage_error;
            jobs_set = 1;
        } else if (!strcmp(a, "--threads") && more) {
            if (!parse_count(a, argv[++i], &x->threads)) goto usage_error;
            threads_set = 1;
        } else if (!strcmp(a, "--set") && more) {
            x->sets[x->n_sets++] = argv[++i];
        } else if (!strncmp(a, "--set=", 6)) {
            x->sets[x->n_sets++] = a + 6;
        } else if (!strcmp(a, "--unset") && more) {
            cmd.unsets[cmd.n_unsets++] = argv[++i];
        } else if (!strncmp(a, "--unset=", 8)) {
            cmd.unsets[cmd.n_unsets++] = a + 8;
        } else if (!strcmp(a, "--plugin") && more) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (a[0] == '-' || x->exp_path) {
            fprintf(stderr, "flowlab sweep: error: unexpected argument '%s'\n%s", a, usage);
            goto usage_error;
        } else {
            x->exp_path = a;
        }
    }
    if (!x->exp_path) {
        fprintf(stderr, "flowlab sweep: error: no experiment file given\n%s", usage);
        goto usage_error;
    }
    x->plugins = cli->plugins; /* every cell loads the same plugins */
    x->n_plugins = cli->n_plugins;

    const int mpi = fl_sweep_mpi_start(&x->rank, &x->size);
    if (mpi < 0) goto usage_error;
    char *text = NULL;
    int rc = prepare(&cmd, out, dry_run, oversubscribe, jobs_set, threads_set, &text);
    if (mpi) { /* every rank goes on only if rank 0 laid out the directory */
        int rc0 = fl_sweep_mpi_bcast(rc);
        if (rc == FL_EXIT_OK && rc0 != FL_EXIT_OK) rc = rc0;
    }
    fl_sweep_slot *slots = calloc((size_t)x->jobs, sizeof *slots);
    if (rc == FL_EXIT_OK && !slots) rc = FL_EXIT_FAILURE;
    if (rc == FL_EXIT_OK && x->rank == 0) {
        x->res = calloc(x->s->n_cells, sizeof *x->res);
        if (!x->res) rc = FL_EXIT_FAILURE;
        else if (fl_sweep_write_cells_csv(x) != FL_OK) rc = fl_cli_fail(FL_ERR_IO);
    }
    if (rc == FL_EXIT_OK) {
        if (x->rank == 0) fl_sweep_dispatch(x, slots);
        else fl_sweep_work(x, slots);
    }
    if (rc == FL_EXIT_OK && x->rank == 0) {
        char *logs = fl_strfmt("%s/logs", x->dir);
        if (logs) rmdir(logs); /* empty once every cell has moved its log */
        free(logs);
        size_t n[4] = { 0 };
        for (size_t c = 0; c < x->s->n_cells; c++) n[x->res[c].status]++;
        fl_report_opts o = { 0 };
        printf("\n");
        fl_status st = fl_report_write(x->dir, x->s, &o, stdout);
        if (st != FL_OK) rc = fl_cli_fail(st);
        printf("\nsweep %s: %zu cells: %zu ran, %zu finished earlier, %zu failed; report in "
               "%s/report.{md,csv,html}\n",
               x->exp_path, x->s->n_cells, n[FL_CELL_DONE], n[FL_CELL_CACHED],
               n[FL_CELL_FAILED], x->dir);
        if (n[FL_CELL_FAILED] && rc == FL_EXIT_OK) rc = FL_EXIT_FAILURE;
    }
    if (rc == -1) rc = FL_EXIT_OK; /* dry run */
    if (mpi) {
        rc = fl_sweep_mpi_bcast(rc);
        fl_sweep_mpi_end();
    }
    free(slots);
    free(text);
    free(x->res);
    fl_registry_free(cmd.reg);
    fl_sweep_free(x->s);
    free(x->envp);
    free(x->dir);
    free(x->base_path);
    free(x->sets);
    free(cmd.unsets);
    return rc;

usage_error:
    free(x->sets);
    free(cmd.unsets);
    return FL_EXIT_USAGE;
}
