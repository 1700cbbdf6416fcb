/* resume.c - continuing an interrupted run from its run directory. */
#include "train/resume.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "output/metrics.h"
#include "train/checkpoint.h"
#include "core/log.h"

fl_status fl_resume_load(fl_experiment *e, const char *rundir, fl_adam *opt, fl_ema *ema,
                         uint64_t *step0, fl_buf *metrics, double *train_seconds)
{
    *step0 = 0;
    *train_seconds = 0;
    char *p = fl_strfmt("%s/checkpoint.flc", rundir), *mp = fl_strfmt("%s/metrics.csv", rundir);
    fl_status st = p && mp ? FL_OK : FL_ERR_NOMEM;
    if (st == FL_OK && access(p, R_OK) == 0) {
        st = fl_checkpoint_load(p, &e->arena, opt, ema, 0, step0);
        if (st == FL_OK) {
            fl_log(FL_LOG_INFO, "resuming %s at step %llu", rundir, (unsigned long long)*step0);
            size_t len = 0;
            char *old = NULL;
            if (fl_read_file(mp, &old, &len) == FL_OK)
                fl_metrics_keep(metrics, old, len, *step0, train_seconds);
            free(old);
            if (metrics->failed) st = FL_ERR_NOMEM;
        }
    }
    free(p);
    free(mp);
    return st;
}

fl_status fl_run_optim_init(fl_experiment *e, fl_adam *opt, fl_ema *ema, fl_real **live)
{
    *live = NULL;
    memset(ema, 0, sizeof *ema);
    fl_status st = fl_adam_init(opt, e->arena.total, fl_exp_real(&e->train, "lr"),
                                fl_exp_real(&e->train, "beta1"), fl_exp_real(&e->train, "beta2"),
                                fl_exp_real(&e->train, "eps"));
    if (st != FL_OK) return st;
    st = fl_ema_init(ema, e->arena.total, fl_exp_real(&e->train, "ema"));
    if (st == FL_OK && ema->avg && !(*live = fl_alloc(e->arena.total * sizeof(fl_real))))
        st = FL_ERR_NOMEM;
    if (st != FL_OK) {
        fl_run_optim_free(opt, ema, *live);
        *live = NULL;
    }
    return st;
}

void fl_run_optim_free(fl_adam *opt, fl_ema *ema, fl_real *live)
{
    fl_adam_free(opt);
    fl_ema_free(ema);
    fl_free(live);
}

fl_status fl_run_save(fl_experiment *e, const char *dir, const fl_adam *opt, const fl_ema *ema,
                      uint64_t step)
{
    char *p = fl_strfmt("%s/checkpoint.flc", dir);
    if (!p) return FL_ERR_NOMEM;
    fl_status st = fl_checkpoint_save(p, &e->arena, opt, ema, step);
    free(p);
    return st;
}

void fl_run_use_average(fl_experiment *e, const fl_ema *ema, fl_real *live, int on)
{
    if (!ema->avg || ema->t == 0) return; /* no average yet: evaluate the iterate */
    if (on) {
        memcpy(live, e->arena.theta, e->arena.total * sizeof(fl_real));
        fl_ema_get(ema, e->arena.theta);
        fl_arena_copy_state(&e->arena, e->arena.theta, live);
    } else {
        memcpy(e->arena.theta, live, e->arena.total * sizeof(fl_real));
    }
}
