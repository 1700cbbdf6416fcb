/* logprob.c - log p(x) of a user's rows (logprob.h). */
#include "tasks/logprob.h"

#include <stdio.h>
#include <string.h>

#include "core/util.h"
#include "tasks/task.h"
#include "tasks/task_density.h"

extern const fl_task fl_task_density;

static int has_logprob(const fl_task *t) { return t->logprob != NULL; }

fl_status fl_logprob(fl_experiment *e, const fl_real *x, uint64_t n, uint32_t dim, uint64_t k,
                     double *out)
{
    const fl_task *t = fl_task_of(e);
    if (!t->logprob) {
        char names[128];
        fl_task_names(has_logprob, names, sizeof names);
        fl_err("log p(x) is computed for %s runs; this run's task is %s", names, e->task->name);
        return FL_ERR_INVALID;
    }
    if (dim != e->info.dim) {
        fl_err("the rows have %u values; this run's data (%s) has %u per row", dim, e->data_type,
               e->info.dim);
        return FL_ERR_INVALID;
    }
    if (n == 0) return FL_OK;
    return t->logprob(e, x, n, k, out);
}

double fl_logprob_bpd_factor(const fl_experiment *e)
{
    if (fl_task_of(e) != &fl_task_density) return 0;
    return fl_density_pre_of(e)->bpd;
}

void fl_logprob_describe(const fl_experiment *e, uint64_t k, char *buf, size_t cap)
{
    if (fl_task_of(e) == &fl_task_density) {
        const fl_density_pre *p = fl_density_pre_of(e);
        snprintf(buf, cap, "%s",
                 p->dequantize ? "log P(x) of the 8-bit image in nats (levels k/255; one "
                                 "uniform dequantization draw per value, preprocessing "
                                 "Jacobians counted)"
                 : p->transform != FL_PRE_NONE ? "exact log p(x) in nats (preprocessing "
                                                 "Jacobian counted)"
                                               : "exact log p(x) in nats");
        return;
    }
    if (k == 0) k = (uint64_t)fl_exp_int(&e->eval, "k");
    snprintf(buf, cap, "IWAE-%llu estimate of log p(x) in nats", (unsigned long long)k);
}
