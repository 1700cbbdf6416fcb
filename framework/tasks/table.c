/* table.c - the task table (task.h): a new task is one line here. */
#include "tasks/task.h"

#include <string.h>

/* One entry per task, each defined in its task's file. */
extern const fl_task fl_task_density, fl_task_vae, fl_task_vi;
static const fl_task *const table[] = { &fl_task_density, &fl_task_vae, &fl_task_vi };

const fl_task *fl_task_at(size_t i)
{
    return i < sizeof table / sizeof *table ? table[i] : NULL;
}

const fl_task_model *fl_task_model_at(size_t i)
{
    const fl_task *t = fl_task_at(i);
    return t ? &t->model : NULL;
}

const fl_task *fl_task_find(const char *name)
{
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (strcmp(table[i]->model.name, name) == 0) return table[i];
    return NULL;
}

const fl_task *fl_task_of(const fl_experiment *e)
{
    /* e->task is the first member of its table entry */
    return (const fl_task *)e->task;
}

void fl_task_names(int (*has)(const fl_task *t), char *buf, size_t cap)
{
    size_t n = 0, k = 0;
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) n += has(table[i]) != 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        if (!has(table[i])) continue;
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%s", k == 0 ? "" : k + 1 == n ? " and " : ", ",
                 table[i]->model.name);
        k++;
    }
}

fl_status fl_task_train(fl_experiment *e, const char *rundir, int resume, void **run,
                        fl_train_summary *s)
{
    const fl_task *t = fl_task_of(e);
    memset(s, 0, sizeof *s);
    *run = NULL;
    fl_status st = t->run_new(e, run);
    const fl_trainer *tr = t->trainer_of ? t->trainer_of(e) : &t->trainer;
    if (st == FL_OK) st = fl_train_loop(e, tr, *run, rundir, resume, s);
    return st;
}
