/* cmd_sweep.c - `flowlab sweep`: run the cells of a [sweep] as child
 * `flowlab run` processes, locally or spread over MPI ranks, then report. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef FL_HAVE_MPI
#include <mpi.h>
#endif

#include "cli/cli.h"
#include "core/config.h"
#include "model/experiment.h"
#include "core/log.h"
#include "output/report.h"
#include "output/rundir.h"
#include "sweep/sweep.h"
#include "core/util.h"

extern char **environ;

static const char usage[] =
    "usage: flowlab sweep EXP.ini [--dry-run] [--out DIR] [--jobs J] [--threads T]\n"
    "                     [--oversubscribe] [--set SECTION.KEY=VALUE]... [--plugin PATH]...\n"
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
    "\n"
    "Under `mpirun -n N flowlab sweep ...` (a build with MPI) the cells are spread\n"
    "over the N ranks: rank 0 hands out cells one at a time and runs its share\n"
    "too; rank 0 writes cells.csv and the report. --jobs and --threads apply per\n"
    "rank. Exit status 1 when any cell failed.\n";

enum { ST_PENDING, ST_DONE, ST_CACHED, ST_FAILED };
static const char *const st_name[] = { "pending", "done", "cached", "failed" };

typedef struct cell_result {
    int32_t status, code;  /* ST_*, the cell's exit status */
    double seconds;
    char err[480];         /* the cell's last error line, for failures */
} cell_result;

typedef struct slot {
    pid_t pid;             /* 0 = free */
    size_t cell;
    double t0;
    char *log;             /* DIR/logs/CELL.txt while it runs */
} slot;

typedef struct sweep_ctx {
    fl_cli *cli;
    const char *argv0, *exp_path;
    char *dir, *base_path;
    fl_sweep *s;
    const char **sets;
    size_t n_sets;
    int jobs, threads, threads_swept;
    char **envp;           /* the cells' environment (environ, or a passive copy) */
    fl_registry *reg;      /* for the finished-cell check, loaded on first use */
    int rank, size;
    cell_result *res;      /* rank 0: every cell's result */
    size_t n_recorded;
} sweep_ctx;

/* ---- files ------------------------------------------------------------- */

static int exists(const char *dir, const char *name, const char *file)
{
    char *p = file ? fl_strfmt("%s/%s/%s", dir, name, file) : fl_strfmt("%s/%s", dir, name);
    struct stat sb;
    int r = p && stat(p, &sb) == 0;
    free(p);
    return r;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* Removes a cell directory and everything in it (symbolic links are
 * removed, never followed). */
static fl_status rm_tree(const char *path)
{
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
        fl_err("%s: cannot remove the unfinished cell: %s", path, strerror(errno));
        return FL_ERR_IO;
    }
    return FL_OK;
}

/* The last line of `log` that reports an error, else its last non-empty
 * line. */
static void last_error(const char *log, char *out, size_t cap)
{
    char *text = NULL;
    out[0] = 0;
    if (fl_read_file(log, &text, NULL) != FL_OK) {
        fl_err_clear();
        return;
    }
    const char *best = NULL, *last = NULL;
    size_t best_n = 0, last_n = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        /* a progress line ends in '\r' redraws: keep what follows the last */
        const char *cr = memrchr(p, '\r', n);
        const char *q = cr ? cr + 1 : p;
        size_t m = n - (size_t)(q - p);
        if (m) {
            last = q, last_n = m;
            if (memmem(q, m, "error", 5)) best = q, best_n = m;
        }
        p = nl ? nl + 1 : p + n;
    }
    if (!best) best = last, best_n = last_n;
    static const char prefix[] = "flowlab: error: ";
    if (best && best_n > sizeof prefix - 1 && !memcmp(best, prefix, sizeof prefix - 1))
        best += sizeof prefix - 1, best_n -= sizeof prefix - 1;
    if (best) snprintf(out, cap, "%.*s", (int)best_n, best);
    free(text);
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
static fl_status cell_config(sweep_ctx *x, size_t cell, fl_config **out)
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

/* 1 when DIR/CELL/config.ini is what the cell would resolve to now, 0 when
 * it differs, -1 on error (fl_err set). */
static int same_config(sweep_ctx *x, size_t cell)
{
    fl_status st = x->reg ? FL_OK : fl_cli_registry(x->cli, &x->reg);
    fl_config *cfg = NULL;
    fl_experiment *e = NULL;
    if (st == FL_OK) st = cell_config(x, cell, &cfg);
    if (st == FL_OK) {
        st = fl_experiment_new(x->reg, cfg, &e);
        cfg = NULL;
    }
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
    fl_config_free(cfg);
    return same;
}

/* Builds the experiment of a few cells that together take every value of
 * every axis (greedily, the cell covering the most unchecked values first),
 * so a misspelled swept key or a bad swept value stops the sweep before any
 * cell runs, with the message naming the sweep file's line. Sets fl_err. */
static fl_status check_values(sweep_ctx *x)
{
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
    if (st == FL_OK && !x->reg) st = fl_cli_registry(x->cli, &x->reg);
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
        if (st == FL_OK) st = fl_experiment_new(x->reg, cfg, &e);
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
static fl_status supersede(sweep_ctx *x, const char *name)
{
    char *from = fl_strfmt("%s/%s", x->dir, name), *sup = fl_strfmt("%s/superseded", x->dir);
    char *to = NULL;
    fl_status st = from && sup ? fl_mkdirs(sup) : FL_ERR_NOMEM;
    for (int k = 1; st == FL_OK && k < 10000 && !to; k++) {
        to = k == 1 ? fl_strfmt("%s/%s", sup, name) : fl_strfmt("%s/%s.%d", sup, name, k);
        struct stat sb;
        if (!to) st = FL_ERR_NOMEM;
        else if (stat(to, &sb) == 0) {
            free(to);
            to = NULL;
        }
    }
    if (st == FL_OK && (!to || rename(from, to) != 0)) {
        fl_err("%s: cannot move the superseded cell aside: %s", from, strerror(errno));
        st = FL_ERR_IO;
    }
    if (st == FL_OK)
        fl_log(FL_LOG_WARN, "%s: finished with another config; rerunning it (old run kept in %s)",
               name, to);
    free(from);
    free(sup);
    free(to);
    return st;
}

/* ---- running one cell -------------------------------------------------- */

static void fail_result(cell_result *r, int code, const char *msg)
{
    r->status = ST_FAILED;
    r->code = code;
    snprintf(r->err, sizeof r->err, "%s", msg);
}

/* Prepares cell `c` and starts its `flowlab run`. Returns 1 with the child
 * in `sl`, or 0 with the outcome in `r` (finished earlier, or failed before
 * it could start). */
static int start_cell(sweep_ctx *x, size_t c, slot *sl, cell_result *r)
{
    const char *name = x->s->cells[c].name;
    memset(r, 0, sizeof *r);
    int resume = 0;
    fl_status st = FL_OK;
    if (exists(x->dir, name, "result.json")) {
        int same = same_config(x, c);
        if (same == 1) {
            r->status = ST_CACHED;
            return 0;
        }
        if (same < 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "cannot check the finished cell: %s", fl_err_msg());
            fail_result(r, FL_EXIT_FAILURE, msg);
            return 0;
        }
        st = supersede(x, name);
    } else if (FL_RUN_CAN_RESUME && exists(x->dir, name, "checkpoint.flc")) {
        resume = 1;
    } else if (exists(x->dir, name, NULL)) {
        char *p = fl_strfmt("%s/%s", x->dir, name);
        st = p ? rm_tree(p) : FL_ERR_NOMEM;
        free(p);
    }
    if (st != FL_OK) {
        fail_result(r, fl_exit_code(st), fl_err_msg());
        return 0;
    }

    /* flowlab [--plugin P]... run BASE --out CELLDIR [--set S.K=V]... [--resume] */
    size_t cap = 16 + 2 * (x->cli->n_plugins + x->n_sets + x->s->n_axes);
    char **av = calloc(cap, sizeof *av);
    char *celldir = fl_strfmt("%s/%s", x->dir, name);
    char *threads = fl_strfmt("experiment.threads=%d", x->threads);
    sl->log = fl_strfmt("%s/logs/%s.txt", x->dir, name);
    char **owned = calloc(x->s->n_axes + 1, sizeof *owned);
    size_t n = 0;
    if (!av || !celldir || !threads || !sl->log || !owned) st = FL_ERR_NOMEM;
    for (size_t a = 0; st == FL_OK && a < x->s->n_axes; a++) {
        owned[a] = fl_strfmt("%s=%s", x->s->axes[a].key, fl_sweep_value(x->s, c, a));
        if (!owned[a]) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) {
        av[n++] = (char *)x->argv0;
        for (size_t i = 0; i < x->cli->n_plugins; i++) {
            av[n++] = "--plugin";
            av[n++] = (char *)x->cli->plugins[i];
        }
        av[n++] = "run";
        av[n++] = x->base_path;
        av[n++] = "--out";
        av[n++] = celldir;
        for (size_t i = 0; i < x->n_sets; i++) {
            av[n++] = "--set";
            av[n++] = (char *)x->sets[i];
        }
        for (size_t a = 0; a < x->s->n_axes; a++) {
            av[n++] = "--set";
            av[n++] = owned[a];
        }
        if (!x->threads_swept) {
            av[n++] = "--set";
            av[n++] = threads;
        }
        if (resume) av[n++] = "--resume";
        av[n] = NULL;
    }
    posix_spawn_file_actions_t fa;
    int have_fa = 0, err = 0;
    if (st == FL_OK) {
        have_fa = posix_spawn_file_actions_init(&fa) == 0;
        err = !have_fa || posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) ||
              posix_spawn_file_actions_addopen(&fa, 1, sl->log, O_WRONLY | O_CREAT | O_TRUNC, 0644) ||
              posix_spawn_file_actions_adddup2(&fa, 1, 2);
        if (!err)
            err = posix_spawn(&sl->pid, "/proc/self/exe", &fa, NULL, av,
                              x->envp ? x->envp : environ);
        if (err) {
            fl_err("%s: cannot start `flowlab run`: %s", name, strerror(err));
            st = FL_ERR_IO;
        }
    }
    if (have_fa) posix_spawn_file_actions_destroy(&fa);
    for (size_t a = 0; owned && a < x->s->n_axes; a++) free(owned[a]);
    free(owned);
    free(av);
    free(celldir);
    free(threads);
    if (st != FL_OK) {
        fail_result(r, fl_exit_code(st), fl_err_msg());
        free(sl->log);
        sl->log = NULL;
        sl->pid = 0;
        return 0;
    }
    sl->cell = c;
    sl->t0 = fl_now();
    return 1;
}

/* The child of `sl` exited with wait status `ws`: moves its log into the
 * cell directory, records a failure in failed.txt, fills `r`. */
static void finish_cell(sweep_ctx *x, slot *sl, int ws, cell_result *r)
{
    const char *name = x->s->cells[sl->cell].name;
    memset(r, 0, sizeof *r);
    r->seconds = fl_now() - sl->t0;
    r->code = WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : 1;
    char *celldir = fl_strfmt("%s/%s", x->dir, name);
    char *log = fl_strfmt("%s/%s/log.txt", x->dir, name);
    if (celldir && log && fl_mkdirs(celldir) == FL_OK) {
        struct stat sb;
        if (stat(log, &sb) == 0) { /* a resumed cell: append to its log */
            char *text = NULL;
            size_t len = 0;
            FILE *f = fl_read_file(sl->log, &text, &len) == FL_OK ? fopen(log, "a") : NULL;
            if (f) {
                fwrite(text, 1, len, f);
                fclose(f);
                unlink(sl->log);
            }
            free(text);
        } else if (rename(sl->log, log) != 0) {
            fl_log(FL_LOG_WARN, "%s: cannot move the log into %s: %s", sl->log, celldir,
                   strerror(errno));
        }
    }
    fl_err_clear();
    if (r->code == 0 && exists(x->dir, name, "result.json")) {
        r->status = ST_DONE;
    } else {
        r->status = ST_FAILED;
        if (WIFSIGNALED(ws)) snprintf(r->err, sizeof r->err, "killed by signal %d", WTERMSIG(ws));
        else last_error(log ? log : "", r->err, sizeof r->err);
        if (r->code == 0) {
            r->code = FL_EXIT_FAILURE;
            snprintf(r->err, sizeof r->err, "exited without writing result.json");
        }
        char *text = fl_strfmt("exit status %d\n%s\n", r->code, r->err);
        if (!text || !celldir || fl_rundir_write(celldir, "failed.txt", text, strlen(text)) != FL_OK)
            fl_log(FL_LOG_WARN, "%s: cannot write failed.txt: %s", name, fl_err_msg());
        free(text);
    }
    free(celldir);
    free(log);
    free(sl->log);
    sl->log = NULL;
    sl->pid = 0;
}

/* ---- the table and cells.csv (rank 0) ----------------------------------- */

static const char *cell_state(const sweep_ctx *x, size_t c)
{
    const char *name = x->s->cells[c].name;
    if (exists(x->dir, name, "result.json")) return "finished";
    if (exists(x->dir, name, "failed.txt")) return "failed";
    if (exists(x->dir, name, "checkpoint.flc")) return "partial";
    return "new";
}

static void print_cells(const sweep_ctx *x, size_t n_excl)
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

static fl_status write_cells_csv(const sweep_ctx *x)
{
    const fl_sweep *s = x->s;
    fl_buf b = { 0 };
    fl_buf_printf(&b, "cell,name");
    for (size_t a = 0; a < s->n_axes; a++) {
        fl_buf_printf(&b, ",");
        fl_buf_csv(&b, s->axes[a].key);
    }
    fl_buf_printf(&b, ",status,exit_status,seconds,error\n");
    for (size_t c = 0; c < s->n_cells; c++) {
        const cell_result *r = &x->res[c];
        fl_buf_printf(&b, "%zu,", c + 1);
        fl_buf_csv(&b, s->cells[c].name);
        for (size_t a = 0; a < s->n_axes; a++) {
            fl_buf_printf(&b, ",");
            fl_buf_csv(&b, fl_sweep_value(s, c, a));
        }
        fl_buf_printf(&b, ",%s,", st_name[r->status]);
        if (r->status == ST_DONE || r->status == ST_FAILED) fl_buf_printf(&b, "%d", r->code);
        fl_buf_printf(&b, ",");
        if (r->status == ST_DONE || r->status == ST_FAILED) fl_buf_printf(&b, "%.2f", r->seconds);
        fl_buf_printf(&b, ",");
        fl_buf_csv(&b, r->err);
        fl_buf_printf(&b, "\n");
    }
    fl_status st = b.failed ? FL_ERR_NOMEM : fl_rundir_write(x->dir, "cells.csv", b.data, b.len);
    fl_buf_free(&b);
    return st;
}

static void record(sweep_ctx *x, size_t c, const cell_result *r)
{
    x->res[c] = *r;
    x->n_recorded++;
    const char *name = x->s->cells[c].name;
    if (r->status == ST_FAILED)
        fl_log(FL_LOG_WARN, "[%zu/%zu] cell %zu FAILED (exit %d): %s: %s", x->n_recorded,
               x->s->n_cells, c + 1, r->code, name, r->err);
    else if (r->status == ST_CACHED)
        fl_log(FL_LOG_INFO, "[%zu/%zu] cell %zu finished earlier: %s", x->n_recorded,
               x->s->n_cells, c + 1, name);
    else
        fl_log(FL_LOG_INFO, "[%zu/%zu] cell %zu done in %.1f s: %s", x->n_recorded,
               x->s->n_cells, c + 1, r->seconds, name);
    if (write_cells_csv(x) != FL_OK) fl_log(FL_LOG_WARN, "%s", fl_err_msg());
}

/* ---- scheduling: one loop for rank 0 (or the only process), one for the
 * other ranks ------------------------------------------------------------ */

#ifdef FL_HAVE_MPI
enum { TAG_UP = 7101, TAG_CELL = 7102 };
enum { MSG_REQUEST = 1, MSG_RESULT = 2 };
typedef struct wire {
    int32_t kind, cell;
    cell_result r;
} wire;
#endif

static void nap(void)
{
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    nanosleep(&ts, NULL);
}

/* Reaps finished children; calls `done` for each. Returns how many. */
static int reap(sweep_ctx *x, slot *slots, void (*done)(sweep_ctx *, size_t, const cell_result *))
{
    int got = 0;
    for (int j = 0; j < x->jobs; j++) {
        int ws;
        if (!slots[j].pid || waitpid(slots[j].pid, &ws, WNOHANG) != slots[j].pid) continue;
        size_t c = slots[j].cell;
        cell_result r;
        finish_cell(x, &slots[j], ws, &r);
        done(x, c, &r);
        got++;
    }
    return got;
}

static int busy(const sweep_ctx *x, const slot *slots)
{
    for (int j = 0; j < x->jobs; j++)
        if (slots[j].pid) return 1;
    return 0;
}

static slot *free_slot(const sweep_ctx *x, slot *slots)
{
    for (int j = 0; j < x->jobs; j++)
        if (!slots[j].pid) return &slots[j];
    return NULL;
}

static void coordinate(sweep_ctx *x, slot *slots)
{
    size_t next = 0;
#ifdef FL_HAVE_MPI
    int stops = 0;
    size_t remote = 0;
#endif
    for (;;) {
        int progress = 0;
#ifdef FL_HAVE_MPI
        for (int flag = 1; x->size > 1 && flag;) {
            MPI_Status ms;
            MPI_Iprobe(MPI_ANY_SOURCE, TAG_UP, MPI_COMM_WORLD, &flag, &ms);
            if (!flag) break;
            wire w;
            MPI_Recv(&w, (int)sizeof w, MPI_BYTE, ms.MPI_SOURCE, TAG_UP, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
            if (w.kind == MSG_REQUEST) {
                int32_t c = next < x->s->n_cells ? (int32_t)next++ : -1;
                MPI_Send(&c, 1, MPI_INT32_T, ms.MPI_SOURCE, TAG_CELL, MPI_COMM_WORLD);
                if (c < 0) stops++;
                else remote++;
            } else {
                record(x, (size_t)w.cell, &w.r);
                remote--;
            }
            progress = 1;
        }
#endif
        slot *sl;
        while (next < x->s->n_cells && (sl = free_slot(x, slots))) {
            cell_result r;
            size_t c = next++;
            if (!start_cell(x, c, sl, &r)) record(x, c, &r);
            progress = 1;
        }
        progress += reap(x, slots, record);
        int finished = next >= x->s->n_cells && !busy(x, slots);
#ifdef FL_HAVE_MPI
        finished = finished && stops == x->size - 1 && remote == 0;
#endif
        if (finished) break;
        if (!progress) nap();
    }
}

#ifdef FL_HAVE_MPI
static void send_result(sweep_ctx *x, size_t c, const cell_result *r)
{
    (void)x;
    wire w = { .kind = MSG_RESULT, .cell = (int32_t)c, .r = *r };
    MPI_Send(&w, (int)sizeof w, MPI_BYTE, 0, TAG_UP, MPI_COMM_WORLD);
}

static void work(sweep_ctx *x, slot *slots)
{
    int stopped = 0;
    for (;;) {
        int progress = 0;
        slot *sl;
        while (!stopped && (sl = free_slot(x, slots))) {
            wire w = { .kind = MSG_REQUEST, .cell = -1 };
            int32_t c;
            MPI_Send(&w, (int)sizeof w, MPI_BYTE, 0, TAG_UP, MPI_COMM_WORLD);
            MPI_Recv(&c, 1, MPI_INT32_T, 0, TAG_CELL, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            if (c < 0) {
                stopped = 1;
                break;
            }
            cell_result r;
            if (!start_cell(x, (size_t)c, sl, &r)) send_result(x, (size_t)c, &r);
            progress = 1;
        }
        progress += reap(x, slots, send_result);
        if (stopped && !busy(x, slots)) break;
        if (!progress) nap();
    }
}
#endif

/* ---- threads ---------------------------------------------------------- */

/* Cores this process may use, and the ranks sharing them. */
static int core_budget(int *shared_by)
{
    cpu_set_t set;
    int cores = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) cores = CPU_COUNT(&set);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores <= 0) cores = online > 0 ? (int)online : 1;
    *shared_by = 1;
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    /* Ranks bound to their own cores see only those; unbound ranks on one
     * node all see every core and share them. */
    if (local && atoi(local) > 1 && cores == online) *shared_by = atoi(local);
    return cores;
}

/* environ with OMP_WAIT_POLICY=passive instead of any wait policy: for
 * cells that together have more threads than cores, where a thread that
 * spins at a barrier takes a core from another cell's working thread (the
 * sweep process chose a policy for itself, and cells would inherit it).
 * The strings are environ's; NULL when out of memory (then environ). */
static char **passive_env(void)
{
    size_t n = 0;
    while (environ[n]) n++;
    char **env = calloc(n + 2, sizeof *env);
    if (!env) return NULL;
    size_t m = 0;
    env[m++] = "OMP_WAIT_POLICY=passive";
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "OMP_WAIT_POLICY=", 16) && strncmp(environ[i], "GOMP_SPINCOUNT=", 15))
            env[m++] = environ[i];
    env[m] = NULL;
    return env;
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
static int prepare(sweep_ctx *x, const char *out, int dry_run, int oversubscribe, int jobs_set,
                   int threads_set, char **text)
{
    fl_status st = fl_read_file(x->exp_path, text, NULL);
    if (st == FL_OK) st = fl_sweep_parse(x->exp_path, *text, &x->s);
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
    fl_config_free(cfg);
    if (st != FL_OK) return x->rank == 0 ? fl_cli_fail(st) : fl_exit_code(st);
    x->base_path = fl_strfmt("%s/base.ini", x->dir);
    if (!x->base_path) return FL_EXIT_FAILURE;
    x->threads_swept = fl_sweep_axis_find(x->s, "experiment.threads") >= 0;

    int shared = 1, cores = core_budget(&shared);
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
    if ((long)x->jobs * x->threads > budget) x->envp = passive_env(); /* --oversubscribe */
    if (x->rank == 0) {
        st = check_values(x);
        if (st != FL_OK) return fl_cli_fail(st);
        print_cells(x, x->s->n_product - x->s->n_cells);
    }
    if (dry_run) return -1;

    /* rank 0 lays out the directory */
    if (x->rank == 0) {
        char *logs = fl_strfmt("%s/logs", x->dir);
        st = logs ? fl_mkdirs(logs) : FL_ERR_NOMEM;
        free(logs);
        if (st == FL_OK) st = fl_rundir_write(x->dir, "sweep.ini", *text, strlen(*text));
        if (st == FL_OK) st = fl_rundir_write(x->dir, "base.ini", x->s->base, strlen(x->s->base));
        if (st != FL_OK) return fl_cli_fail(st);
    }
    return FL_EXIT_OK;
}

int fl_cmd_sweep(fl_cli *cli, int argc, char **argv)
{
    sweep_ctx x = { .cli = cli, .argv0 = "flowlab", .jobs = 1, .threads = 1, .size = 1 };
    const char *out = NULL;
    int dry_run = 0, oversubscribe = 0, jobs_set = 0, threads_set = 0;
    x.sets = calloc((size_t)argc + 1, sizeof *x.sets);
    if (!x.sets) return FL_EXIT_FAILURE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            free(x.sets);
            return FL_EXIT_OK;
        } else if (!strcmp(a, "--dry-run")) {
            dry_run = 1;
        } else if (!strcmp(a, "--oversubscribe")) {
            oversubscribe = 1;
        } else if (!strcmp(a, "--out") && more) {
            out = argv[++i];
        } else if (!strcmp(a, "--jobs") && more) {
            if (!parse_count(a, argv[++i], &x.jobs)) goto usage_error;
            jobs_set = 1;
        } else if (!strcmp(a, "--threads") && more) {
            if (!parse_count(a, argv[++i], &x.threads)) goto usage_error;
            threads_set = 1;
        } else if (!strcmp(a, "--set") && more) {
            x.sets[x.n_sets++] = argv[++i];
        } else if (!strncmp(a, "--set=", 6)) {
            x.sets[x.n_sets++] = a + 6;
        } else if (!strcmp(a, "--plugin") && more) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (a[0] == '-' || x.exp_path) {
            fprintf(stderr, "flowlab sweep: error: unexpected argument '%s'\n%s", a, usage);
            goto usage_error;
        } else {
            x.exp_path = a;
        }
    }
    if (!x.exp_path) {
        fprintf(stderr, "flowlab sweep: error: no experiment file given\n%s", usage);
        goto usage_error;
    }

#ifndef FL_HAVE_MPI
    const char *ranks = getenv("OMPI_COMM_WORLD_SIZE");
    if (ranks && atoi(ranks) > 1) {
        fprintf(stderr, "flowlab: error: sweep under mpirun, but this flowlab was built without "
                        "MPI (meson setup -Dmpi=enabled, with libopenmpi-dev)\n");
        free(x.sets);
        return FL_EXIT_USAGE;
    }
#else
    /* Only under a launcher: a plain run must not start MPI's runtime. */
    int mpi = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
    if (mpi && MPI_Init(NULL, NULL) != MPI_SUCCESS) mpi = 0;
    if (mpi) {
        MPI_Comm_rank(MPI_COMM_WORLD, &x.rank);
        MPI_Comm_size(MPI_COMM_WORLD, &x.size);
    }
#endif
    char *text = NULL;
    int rc = prepare(&x, out, dry_run, oversubscribe, jobs_set, threads_set, &text);
#ifdef FL_HAVE_MPI
    if (mpi) { /* every rank goes on only if rank 0 laid out the directory */
        int rc0 = rc;
        MPI_Bcast(&rc0, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (rc == FL_EXIT_OK && rc0 != FL_EXIT_OK) rc = rc0;
    }
#endif
    slot *slots = calloc((size_t)x.jobs, sizeof *slots);
    if (rc == FL_EXIT_OK && !slots) rc = FL_EXIT_FAILURE;
    if (rc == FL_EXIT_OK && x.rank == 0) {
        x.res = calloc(x.s->n_cells, sizeof *x.res);
        if (!x.res) rc = FL_EXIT_FAILURE;
        else if (write_cells_csv(&x) != FL_OK) rc = fl_cli_fail(FL_ERR_IO);
    }
    if (rc == FL_EXIT_OK) {
        if (x.rank == 0) coordinate(&x, slots);
#ifdef FL_HAVE_MPI
        else work(&x, slots);
#endif
    }
    if (rc == FL_EXIT_OK && x.rank == 0) {
        char *logs = fl_strfmt("%s/logs", x.dir);
        if (logs) rmdir(logs); /* empty once every cell has moved its log */
        free(logs);
        size_t n[4] = { 0 };
        for (size_t c = 0; c < x.s->n_cells; c++) n[x.res[c].status]++;
        fl_report_opts o = { 0 };
        printf("\n");
        fl_status st = fl_report_write(x.dir, x.s, &o, stdout);
        if (st != FL_OK) rc = fl_cli_fail(st);
        printf("\nsweep %s: %zu cells: %zu ran, %zu finished earlier, %zu failed; report in "
               "%s/report.{md,csv,html}\n",
               x.exp_path, x.s->n_cells, n[ST_DONE], n[ST_CACHED], n[ST_FAILED], x.dir);
        if (n[ST_FAILED] && rc == FL_EXIT_OK) rc = FL_EXIT_FAILURE;
    }
    if (rc == -1) rc = FL_EXIT_OK; /* dry run */
#ifdef FL_HAVE_MPI
    if (mpi) {
        MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
        MPI_Finalize();
    }
#endif
    free(slots);
    free(text);
    free(x.res);
    fl_registry_free(x.reg);
    fl_sweep_free(x.s);
    free(x.envp);
    free(x.dir);
    free(x.base_path);
    free(x.sets);
    return rc;

usage_error:
    free(x.sets);
    return FL_EXIT_USAGE;
}
