/* embed.c - the embedding API (include/flowlab/embed.h): a run directory
 * loaded as cli/cli.c's fl_cli_load_run does, log p(x) through
 * tasks/logprob.h, samples through the task's sample hook. */
#define _GNU_SOURCE /* dladdr */
#include <flowlab/embed.h>

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/registry.h"
#include "core/util.h"
#include "model/experiment.h"
#include "tasks/logprob.h"
#include "tasks/task.h"
#include "train/checkpoint.h"

struct fl_embed_run {
    fl_registry *reg;     /* the plugins, owned */
    fl_experiment *e;     /* model and parameters, owned */
};

/* One computation at a time: the experiment's buffers, the registry's
 * loading (child processes, dlopen) and the compute services' threads are
 * not meant for concurrent callers. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;

/* A library prints no progress: warnings and errors only, as --quiet. */
static void quiet(void) { fl_log_set_level(FL_LOG_WARN); }

/* This library's file (dladdr), so that a build tree's library loads the
 * build tree's plugins whatever program loaded it; NULL if unknown. */
static const char *self_path(void)
{
    Dl_info info;
    if (dladdr((void *)&fl_embed_open, &info) && info.dli_fname) {
        static char path[PATH_MAX];
        if (realpath(info.dli_fname, path)) return path;
    }
    return NULL;
}

static fl_status load(const char *dir, fl_embed_run *r)
{
    char *cpath = fl_strfmt("%s/config.ini", dir), *kpath = fl_strfmt("%s/checkpoint.flc", dir);
    fl_config *cfg = NULL;
    fl_status st = cpath && kpath ? FL_OK : FL_ERR_NOMEM;
    struct stat sb;
    if (st == FL_OK && stat(dir, &sb) != 0) {
        fl_err("%s: %s", dir, strerror(errno));
        st = FL_ERR_IO;
    } else if (st == FL_OK && access(cpath, R_OK) != 0) {
        fl_err("%s: not a run directory (no readable config.ini; `flowlab run` makes one)", dir);
        st = FL_ERR_IO;
    } else if (st == FL_OK && access(kpath, R_OK) != 0) {
        fl_err("%s: no checkpoint.flc (the run has not saved its parameters yet)", dir);
        st = FL_ERR_IO;
    }
    if (st == FL_OK) st = fl_config_load(cpath, &cfg);
    if (st == FL_OK) {
        r->reg = fl_registry_new();
        if (!r->reg) st = FL_ERR_NOMEM;
        else fl_registry_load_defaults_for(r->reg, self_path());
    }
    if (st == FL_OK) {
        st = fl_experiment_new(r->reg, cfg, &r->e);
        cfg = NULL;
    }
    if (st == FL_OK) st = fl_checkpoint_load(kpath, &r->e->arena, NULL, NULL, 1, NULL);
    fl_config_free(cfg);
    free(cpath);
    free(kpath);
    return st;
}

fl_status fl_embed_open(const char *dir, fl_embed_run **out)
{
    *out = NULL;
    fl_err_clear();
    pthread_once(&quiet_once, quiet);
    if (!dir) {
        fl_err("fl_embed_open: no run directory given");
        return FL_ERR_INVALID;
    }
    fl_embed_run *r = calloc(1, sizeof *r);
    if (!r) return FL_ERR_NOMEM;
    pthread_mutex_lock(&lock);
    fl_status st = load(dir, r);
    pthread_mutex_unlock(&lock);
    if (st != FL_OK) {
        fl_embed_close(r);
        return st;
    }
    *out = r;
    return FL_OK;
}

void fl_embed_close(fl_embed_run *r)
{
    if (!r) return;
    pthread_mutex_lock(&lock);
    fl_experiment_free(r->e);
    fl_registry_free(r->reg);
    pthread_mutex_unlock(&lock);
    free(r);
}

const char *fl_embed_task(const fl_embed_run *r) { return r->e->task->name; }

uint32_t fl_embed_dim(const fl_embed_run *r) { return r->e->task->data ? r->e->info.dim : 0; }

uint32_t fl_embed_sample_dim(const fl_embed_run *r)
{
    const fl_task *t = fl_task_of(r->e);
    return t->sample ? t->sample_dim(r->e) : 0;
}

fl_status fl_embed_log_prob(fl_embed_run *r, const double *x, uint64_t n, uint32_t dim,
                            uint64_t k, double *out)
{
    fl_err_clear();
    if (n == 0) return FL_OK;
    if (dim && n > SIZE_MAX / sizeof(fl_real) / dim) {
        fl_err("fl_embed_log_prob: %llu rows of %u values do not fit in memory",
               (unsigned long long)n, dim);
        return FL_ERR_NOMEM;
    }
    fl_real *xr = fl_alloc((size_t)n * dim * sizeof(fl_real));
    if (!xr) return FL_ERR_NOMEM;
    for (size_t i = 0; i < (size_t)n * dim; i++) xr[i] = (fl_real)x[i];
    pthread_mutex_lock(&lock);
    fl_status st = fl_logprob(r->e, xr, n, dim, k, out);
    pthread_mutex_unlock(&lock);
    fl_free(xr);
    return st;
}

fl_status fl_embed_sample(fl_embed_run *r, uint64_t n, uint64_t seed, double *out)
{
    fl_err_clear();
    const fl_task *t = fl_task_of(r->e);
    if (!t->sample) {
        fl_err("the %s task does not sample", t->model.name);
        return FL_ERR_UNSUPPORTED;
    }
    const uint32_t d = t->sample_dim(r->e);
    if (n == 0) return FL_OK;
    fl_real *xr = fl_alloc((size_t)n * d * sizeof(fl_real));
    if (!xr) return FL_ERR_NOMEM;
    pthread_mutex_lock(&lock);
    fl_status st = t->sample(r->e, n, seed, xr);
    pthread_mutex_unlock(&lock);
    for (size_t i = 0; st == FL_OK && i < (size_t)n * d; i++) out[i] = (double)xr[i];
    fl_free(xr);
    return st;
}

const char *fl_embed_error(void) { return fl_err_msg(); }

uint32_t fl_embed_real_size(void) { return (uint32_t)sizeof(fl_real); }
