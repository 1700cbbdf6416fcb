/* runner.c - runs a sweep's cells as child `flowlab run` processes on this
 * process's job slots (runner.h): each cell's directory made ready (kept,
 * superseded, resumed or cleared), the child spawned with its output in
 * DIR/logs/CELL.txt, reaped without blocking, its log moved into the cell,
 * a failure written to failed.txt, and on rank 0 every outcome recorded in
 * cells.csv. Which cell runs next is sweep/mpi.c's choice. */
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

#include "core/log.h"
#include "core/util.h"
#include "output/rundir.h"
#include "sweep/runner.h"
#include "sweep/sweep.h"

extern char **environ;

static const char *const status_name[] = { "pending", "done", "cached", "failed" };

/* ---- files ------------------------------------------------------------- */

int fl_sweep_exists(const char *dir, const char *name, const char *file)
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


/* ---- a cell whose config changed ------------------------------------- */

/* Moves DIR/NAME to DIR/superseded/NAME[.k] (one rename: the old run is
 * kept whole) and logs one line saying why: `why` ("finished with another
 * config", or the unfinished run's refusal). */
static fl_status supersede(const fl_sweep_run *x, const char *name, const char *why)
{
    char *from = fl_strfmt("%s/%s", x->dir, name), *sup = fl_strfmt("%s/superseded", x->dir);
    char *to = NULL;
    fl_status st = from && sup ? fl_mkdirs(sup) : FL_ERR_NOMEM;
    for (int k = 1; st == FL_OK && k < 10000 && !to; k++) {
        to = k == 1 ? fl_strfmt("%s/%s", sup, name) : fl_strfmt("%s/%s.%d", sup, name, k);
        struct stat sb;
        if (!to) st = FL_ERR_NOMEM;
        else if (lstat(to, &sb) == 0) {
            free(to);
            to = NULL;
        }
    }
    if (st == FL_OK && (!to || rename(from, to) != 0)) {
        fl_err("%s: cannot move the superseded cell aside: %s", from, strerror(errno));
        st = FL_ERR_IO;
    }
    if (st == FL_OK)
        fl_log(FL_LOG_WARN, "%s: %s; running it afresh (old run kept in %s)", name, why, to);
    free(from);
    free(sup);
    free(to);
    return st;
}

/* ---- running one cell -------------------------------------------------- */

static void fail_result(fl_cell_result *r, int code, const char *msg)
{
    r->status = FL_CELL_FAILED;
    r->code = code;
    snprintf(r->err, sizeof r->err, "%s", msg);
}

/* Starts `flowlab [--plugin P]... gradvar DIR/CELL [--estimators L] [--k L]
 * [--draws D] [--n N]` for finished cell `c` in slot `sl`, its output in
 * DIR/logs/CELL.gradvar.txt; `run` is the cell's own outcome, recorded
 * when gradvar ends. Returns 1 when started, 0 (warning logged) if not. */
static int start_gradvar(fl_sweep_run *x, size_t c, fl_sweep_slot *sl, const fl_cell_result *run)
{
    const fl_sweep *s = x->s;
    const char *name = s->cells[c].name;
    char *celldir = fl_strfmt("%s/%s", x->dir, name);
    char *log = fl_strfmt("%s/logs/%s.gradvar.txt", x->dir, name);
    char **av = calloc(16 + 2 * x->n_plugins, sizeof *av);
    int err = !celldir || !log || !av ? ENOMEM : 0;
    size_t n = 0;
    if (!err) {
        av[n++] = (char *)x->argv0;
        for (size_t i = 0; i < x->n_plugins; i++) {
            av[n++] = "--plugin";
            av[n++] = (char *)x->plugins[i];
        }
        av[n++] = "gradvar";
        av[n++] = celldir;
        const struct {
            const char *opt, *v;
        } o[] = { { "--estimators", s->gv_estimators }, { "--k", s->gv_k },
                  { "--draws", s->gv_draws }, { "--n", s->gv_n } };
        for (size_t i = 0; i < 4; i++)
            if (o[i].v) {
                av[n++] = (char *)o[i].opt;
                av[n++] = (char *)o[i].v;
            }
        av[n] = NULL;
        posix_spawn_file_actions_t fa;
        err = posix_spawn_file_actions_init(&fa);
        if (!err) {
            err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
            if (!err)
                err = posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC,
                                                       0644);
            if (!err) err = posix_spawn_file_actions_adddup2(&fa, 1, 2);
            if (!err)
                err = posix_spawn(&sl->pid, "/proc/self/exe", &fa, NULL, av,
                                  x->envp ? x->envp : environ);
            posix_spawn_file_actions_destroy(&fa);
        }
    }
    free(av);
    free(celldir);
    if (err) {
        fl_log(FL_LOG_WARN, "%s: cannot start `flowlab gradvar`: %s", name, strerror(err));
        free(log);
        sl->pid = 0;
        return 0;
    }
    sl->log = log;
    sl->cell = c;
    sl->t0 = fl_now();
    sl->gradvar = 1;
    sl->run = *run;
    return 1;
}

int fl_sweep_start_cell(fl_sweep_run *x, size_t c, fl_sweep_slot *sl, fl_cell_result *r)
{
    const char *name = x->s->cells[c].name;
    memset(r, 0, sizeof *r);
    int resume = 0;
    fl_status st = FL_OK;
    if (fl_sweep_exists(x->dir, name, "result.json")) {
        int same = x->same_config(x, c, x->same_config_ctx);
        if (same == 1) {
            r->status = FL_CELL_CACHED;
            return x->s->gradvar && !fl_sweep_exists(x->dir, name, "gradvar.json")
                       ? start_gradvar(x, c, sl, r)
                       : 0;
        }
        if (same < 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "cannot check the finished cell: %s", fl_err_msg());
            fail_result(r, FL_EXIT_FAILURE, msg);
            return 0;
        }
        st = supersede(x, name, "finished with another config");
    } else if (fl_sweep_exists(x->dir, name, "checkpoint.flc")) {
        /* `run --resume` would refuse a checkpoint of another experiment
         * (exit 3) and the cell would fail on every rerun: start it afresh */
        int ok = x->resumable ? x->resumable(x, c, x->same_config_ctx) : 1;
        if (ok < 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "cannot check the unfinished cell: %s", fl_err_msg());
            fail_result(r, FL_EXIT_FAILURE, msg);
            return 0;
        }
        if (ok) {
            resume = 1;
        } else {
            char *why = fl_strfmt("unfinished, and its checkpoint cannot be resumed by the "
                                  "cell's experiment now (%s)", fl_err_msg());
            fl_err_clear();
            st = why ? supersede(x, name, why) : FL_ERR_NOMEM;
            free(why);
        }
    } else if (fl_sweep_exists(x->dir, name, NULL)) {
        char *p = fl_strfmt("%s/%s", x->dir, name);
        st = p ? rm_tree(p) : FL_ERR_NOMEM;
        free(p);
    }
    if (st != FL_OK) {
        fail_result(r, fl_exit_code(st), fl_err_msg());
        return 0;
    }

    /* flowlab [--plugin P]... run BASE --out CELLDIR [--set S.K=V]... [--resume] */
    size_t cap = 16 + 2 * (x->n_plugins + x->n_sets + x->s->n_axes);
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
        for (size_t i = 0; i < x->n_plugins; i++) {
            av[n++] = "--plugin";
            av[n++] = (char *)x->plugins[i];
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
static void finish_cell(fl_sweep_run *x, fl_sweep_slot *sl, int ws, fl_cell_result *r)
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
    if (r->code == 0 && fl_sweep_exists(x->dir, name, "result.json")) {
        r->status = FL_CELL_DONE;
    } else {
        r->status = FL_CELL_FAILED;
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

/* The gradvar child of `sl` exited with wait status `ws`: appends its
 * output to the cell's log.txt, warns on a failure, and gives back the
 * cell's own outcome in `r`. */
static void finish_gradvar(fl_sweep_run *x, fl_sweep_slot *sl, int ws, fl_cell_result *r)
{
    const char *name = x->s->cells[sl->cell].name;
    *r = sl->run;
    char *log = fl_strfmt("%s/%s/log.txt", x->dir, name);
    char *text = NULL;
    size_t len = 0;
    FILE *f = log && fl_read_file(sl->log, &text, &len) == FL_OK ? fopen(log, "a") : NULL;
    if (f) {
        fprintf(f, "\n--- flowlab gradvar ([sweep] gradvar = yes) ---\n");
        fwrite(text, 1, len, f);
        fclose(f);
        unlink(sl->log);
    }
    fl_err_clear();
    int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
    if (code != 0) {
        char why[480];
        last_error(f ? log : sl->log, why, sizeof why);
        fl_log(FL_LOG_WARN, "%s: flowlab gradvar failed (exit %d): %s; the cell's results stand",
               name, code, why);
    }
    free(text);
    free(log);
    free(sl->log);
    sl->log = NULL;
    sl->pid = 0;
    sl->gradvar = 0;
}

/* ---- cells.csv (rank 0) ------------------------------------------------ */

fl_status fl_sweep_write_cells_csv(const fl_sweep_run *x)
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
        const fl_cell_result *r = &x->res[c];
        fl_buf_printf(&b, "%zu,", c + 1);
        fl_buf_csv(&b, s->cells[c].name);
        for (size_t a = 0; a < s->n_axes; a++) {
            fl_buf_printf(&b, ",");
            fl_buf_csv(&b, fl_sweep_value(s, c, a));
        }
        fl_buf_printf(&b, ",%s,", status_name[r->status]);
        const int ran = r->status == FL_CELL_DONE || r->status == FL_CELL_FAILED;
        if (ran) fl_buf_printf(&b, "%d", r->code);
        fl_buf_printf(&b, ",");
        if (ran) fl_buf_printf(&b, "%.2f", r->seconds);
        fl_buf_printf(&b, ",");
        fl_buf_csv(&b, r->err);
        fl_buf_printf(&b, "\n");
    }
    fl_status st = b.failed ? FL_ERR_NOMEM : fl_rundir_write(x->dir, "cells.csv", b.data, b.len);
    fl_buf_free(&b);
    return st;
}

void fl_sweep_record(fl_sweep_run *x, size_t c, const fl_cell_result *r)
{
    x->res[c] = *r;
    x->n_recorded++;
    const char *name = x->s->cells[c].name;
    if (r->status == FL_CELL_FAILED)
        fl_log(FL_LOG_WARN, "[%zu/%zu] cell %zu FAILED (exit %d): %s: %s", x->n_recorded,
               x->s->n_cells, c + 1, r->code, name, r->err);
    else if (r->status == FL_CELL_CACHED)
        fl_log(FL_LOG_INFO, "[%zu/%zu] cell %zu finished earlier: %s", x->n_recorded,
               x->s->n_cells, c + 1, name);
    else
        fl_log(FL_LOG_INFO, "[%zu/%zu] cell %zu done in %.1f s: %s", x->n_recorded,
               x->s->n_cells, c + 1, r->seconds, name);
    if (fl_sweep_write_cells_csv(x) != FL_OK) fl_log(FL_LOG_WARN, "%s", fl_err_msg());
}


/* ---- job slots ------------------------------------------------------- */

void fl_sweep_nap(void)
{
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    nanosleep(&ts, NULL);
}

int fl_sweep_reap(fl_sweep_run *x, fl_sweep_slot *slots,
                  void (*done)(fl_sweep_run *, size_t, const fl_cell_result *))
{
    int got = 0;
    for (int j = 0; j < x->jobs; j++) {
        int ws;
        if (!slots[j].pid || waitpid(slots[j].pid, &ws, WNOHANG) != slots[j].pid) continue;
        size_t c = slots[j].cell;
        fl_cell_result r;
        if (slots[j].gradvar) {
            finish_gradvar(x, &slots[j], ws, &r);
        } else {
            finish_cell(x, &slots[j], ws, &r);
            if (r.status == FL_CELL_DONE && x->s->gradvar && start_gradvar(x, c, &slots[j], &r))
                continue; /* done() when gradvar ends */
        }
        done(x, c, &r);
        got++;
    }
    return got;
}

int fl_sweep_busy(const fl_sweep_run *x, const fl_sweep_slot *slots)
{
    for (int j = 0; j < x->jobs; j++)
        if (slots[j].pid) return 1;
    return 0;
}

fl_sweep_slot *fl_sweep_free_slot(const fl_sweep_run *x, fl_sweep_slot *slots)
{
    for (int j = 0; j < x->jobs; j++)
        if (!slots[j].pid) return &slots[j];
    return NULL;
}

/* ---- threads ---------------------------------------------------------- */

int fl_sweep_core_budget(int *shared_by)
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

/* Why passive: for cells that together have more threads than cores, a
 * thread that spins at a barrier takes a core from another cell's working
 * thread (the sweep process chose a policy for itself, and cells would
 * inherit it). */
char **fl_sweep_passive_env(void)
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

