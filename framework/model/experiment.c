/* experiment.c - validating an experiment file and assembling its model. */
#include "model/experiment.h"
#include "model/datapath.h"

#include <stdlib.h>
#include <string.h>

#include <math.h>

#include "compute/fpenv.h"
#include "core/hostimpl.h"
#include "core/log.h"
#include "core/util.h"

static const fl_key exp_keys[] = {
    { "task", FL_KEY_STRING, "density", 0, 0, NULL,
      "what to do: one of the task table's entries (listed below)" },
    { "name", FL_KEY_STRING, "experiment", 0, 0, NULL, "run name (default run directory prefix)" },
    { "seed", FL_KEY_INT, "1", 0, 4611686018427387904.0, NULL,
      "seed of every random stream (init, data, noise)" },
    { "threads", FL_KEY_INT, "0", 0, 1024, NULL, "OpenMP threads; 0 = all cores" },
    { "flush_denormals", FL_KEY_BOOL, "true", 0, 0, NULL,
      "flush denormal floats to zero in every computing thread (FTZ and DAZ): results below "
      "2^-126 (float) become 0; off, some x86 cores run several times slower where they occur "
      "(docs/performance.md)" },
};

static const fl_key train_keys[] = {
    { "steps", FL_KEY_INT, "2000", 0, 1e12, NULL, "optimizer steps" },
    { "batch", FL_KEY_INT, "256", 1, 1 << 20, NULL, "examples per step" },
    { "lr", FL_KEY_REAL, "1e-3", 0, 10, NULL, "Adam learning rate" },
    { "beta1", FL_KEY_REAL, "0.9", 0, 0.999999, NULL, "Adam first-moment decay" },
    { "beta2", FL_KEY_REAL, "0.999", 0, 0.99999999, NULL, "Adam second-moment decay" },
    { "eps", FL_KEY_REAL, "1e-8", 1e-30, 1, NULL, "Adam epsilon (> 0)" },
    { "eval_every", FL_KEY_INT, "500", 0, 1e12, NULL,
      "steps between test evaluations (one 'epoch' row of metrics.csv); 0 = only at the end" },
    { "log_every", FL_KEY_INT, "100", 1, 1e12, NULL,
      "steps between log lines when stderr is not a terminal" },
    { "ema", FL_KEY_REAL, "0", 0, 0.999999, NULL,
      "decay of an exponential moving average of the parameters (Polyak averaging) used for "
      "evaluation, sampling and the checkpoint's model; 0 = evaluate the last iterate. Running "
      "statistics (batch norm) are not averaged, so with batch norm prefer 0" },
    { "checkpoint_every", FL_KEY_INT, "1000", 0, 1e12, NULL,
      "steps between checkpoints, so that a killed run can go on with run --resume; 0 = only "
      "at the end" },
    { "epochs", FL_KEY_INT, "0", 0, 1e9, NULL,
      "passes over a finite training split; when > 0 it replaces steps (steps = epochs x "
      "floor(N / batch))" },
    { "schedule", FL_KEY_ENUM, "constant", 0, 0, "constant|exponential|iwae|cosine",
      "learning rate: constant; exponential = lr x lr_decay^(step / lr_decay_steps); iwae = "
      "Burda et al.'s 3^i passes at lr x 10^(-i/7), i = 0 .. iwae_rounds-1 (replaces steps "
      "and epochs; 8 rounds = 3,280 passes); cosine = lr_min + (lr - lr_min) x (1 + cos(pi "
      "x (step - warmup) / (steps - warmup))) / 2 after the warm-up" },
    { "lr_min", FL_KEY_REAL, "0", 0, 10, NULL,
      "cosine schedule: the learning rate it ends at (at most lr)" },
    { "warmup", FL_KEY_INT, "0", 0, 1e12, NULL,
      "linear warm-up: step s (from 0) of the first warmup steps runs at (s + 1) / warmup "
      "times the schedule's rate; 0 = none" },
    { "clip_norm", FL_KEY_REAL, "0", 0, 1e30, NULL,
      "gradient clipping: when the global L2 norm of the gradient over all parameters exceeds "
      "this, the gradient is scaled down to it before the optimizer step; 0 = off" },
    { "weight_decay", FL_KEY_REAL, "0", 0, 1, NULL,
      "decoupled weight decay (AdamW, Loshchilov & Hutter): every trained parameter is "
      "multiplied by 1 - lr_t x weight_decay before each Adam step (lr_t the step's rate; "
      "state such as running statistics is not decayed); 0 = plain Adam" },
    { "patience", FL_KEY_INT, "0", 0, 1e12, NULL,
      "early stopping: end training when the validation figure (density: valid NLL; vae: "
      "valid IWAE-k) has not improved for this many evaluations ([train] eval_every); needs a "
      "validation split; 0 = off" },
    { "keep_best", FL_KEY_BOOL, "true", 0, 0, NULL,
      "write best.flc, the model of the evaluation with the best validation figure, when the "
      "task has a validation split (flowlab eval/sample/plot --best use it)" },
    { "lr_decay", FL_KEY_REAL, "1", 1e-9, 1, NULL, "exponential schedule: decay factor" },
    { "lr_decay_steps", FL_KEY_INT, "1000", 1, 1e12, NULL,
      "exponential schedule: steps per decay factor" },
    { "iwae_rounds", FL_KEY_INT, "8", 1, 12, NULL, "iwae schedule: number of rounds i" },
    { "diverge_factor", FL_KEY_REAL, "10", 0, 1e12, NULL,
      "stop the run as diverged (exit 1, the last checkpoint kept, no result.json) when the "
      "running mean of the training loss (over about 10 steps) rises more than this many "
      "times max(1, |best|) above its best; a non-finite loss always stops it; 0 = off" },
    { "grad_blocks", FL_KEY_INT, "1", 1, 1 << 20, NULL,
      "cut every batch into this many fixed blocks of points whose gradients are summed in "
      "block order, so results do not depend on the number of MPI ranks (mpirun -n N needs "
      "N <= grad_blocks <= batch; 1 = the batch in one piece)" },
};

static const fl_key eval_keys[] = {
    { "batch", FL_KEY_INT, "2000", 1, 1 << 20, NULL, "rows per evaluation chunk" },
};


static const fl_key data_host_keys[] = {
    { "type", FL_KEY_STRING, NULL, 0, 0, NULL, "data set (see `flowlab plugins`)" },
};


int64_t fl_exp_int(const fl_values *v, const char *key) { return fl_values_get(v, key)->i; }
double fl_exp_real(const fl_values *v, const char *key) { return fl_values_get(v, key)->r; }


static fl_status resolve_host(const fl_config *c, const char *name, const fl_key *keys, uint32_t n,
                              fl_values *out)
{
    const fl_key *tabs[1] = { keys };
    uint32_t ns[1] = { n };
    return fl_values_resolve(c, name, tabs, ns, 1, out);
}

static fl_status check_sections(const fl_config *c, const fl_task_model *t)
{
    const char *known[24] = { "experiment", "train", "eval", "flow.1" };
    size_t nk = 4;
    const char *const *ts = t->sections;
    for (size_t i = 0; ts[i] && nk < 24; i++) known[nk++] = ts[i];
    for (size_t i = 0; i < c->n; i++) {
        const char *nm = c->s[i].name;
        int ok = strcmp(nm, "flow") == 0 || strncmp(nm, "flow.", 5) == 0;
        for (size_t k = 0; k < nk && !ok; k++) ok = strcmp(nm, known[k]) == 0;
        if (!ok) {
            char where[512], list[512] = "";
            fl_config_where(c, &c->s[i], NULL, where, sizeof where);
            for (size_t k = 0; k < nk; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                         k ? ", " : "", strcmp(known[k], "flow.1") == 0 ? "flow.N" : known[k]);
            const char *near = fl_closest(nm, known, nk);
            if (near)
                fl_err("%s: unknown section [%s]; did you mean [%s]?", where, nm, near);
            else
                fl_err("%s: unknown section [%s] for task %s (known: %s)", where, nm, t->name, list);
            return FL_ERR_INVALID;
        }
    }
    return FL_OK;
}

/* The [data] set, through the component path of every other section
 * (fl_part_prepare / fl_part_created), then the checks the host needs. */
static fl_status make_dataset(fl_experiment *e)
{
    fl_status st = fl_part_prepare(e, FL_KIND_DATASET, "data", NULL, &e->data);
    if (st != FL_OK) return st;
    e->dcls = &e->data.rec->cls.dataset;
    e->data_type = fl_strdup(e->data.rec->cls.base.name);
    if (!e->data_type) return FL_ERR_NOMEM;
    /* its files and folders: against the experiment file's folder, or
     * searched for (model/datapath.h) */
    st = fl_data_resolve(e->cfg, &e->data.cfg, e->data_type);
    if (st != FL_OK) {
        char msg[2048], where[512];
        snprintf(msg, sizeof msg, "%s", fl_err_msg());
        fl_part_created(e, &e->data, FL_OK); /* leaves the create */
        fl_config_where(e->cfg, fl_config_section(e->cfg, "data"), NULL, where, sizeof where);
        fl_err("%s: %s", where, msg);
        return st;
    }
    st = e->dcls->create(fl_host_table(), e->data.cx, &e->info, &e->data.self);
    st = fl_part_created(e, &e->data, st);
    e->dself = e->data.self;
    if (st != FL_OK) return st;
    const char *name = e->data_type;
    if (e->info.dim == 0) {
        fl_err("[data] %s reports dimension 0", name);
        return FL_ERR_INVALID;
    }
    if (!(e->info.drawn & 1u)) {
        uint64_t N = e->info.n[FL_SPLIT_TRAIN];
        if (!e->dcls->read) {
            fl_err("[data] %s: its training split is finite but the data set cannot read rows",
                   name);
            return FL_ERR_INVALID;
        }
        if (N < e->batch) {
            fl_err("[data] %s: the training split has %llu rows, fewer than [train] batch = %u",
                   name, (unsigned long long)N, e->batch);
            return FL_ERR_INVALID;
        }
        e->perm = malloc(N * sizeof *e->perm);
        if (!e->perm) return FL_ERR_NOMEM;
    }
    if (e->info.flags & FL_DATA_BINARIZE_DYNAMIC) {
        e->binbuf = fl_alloc((size_t)e->batch * e->info.dim * sizeof(fl_real));
        if (!e->binbuf) return FL_ERR_NOMEM;
    }
    return FL_OK;
}

fl_status fl_experiment_section(fl_experiment *e, const char *name, const fl_key *keys,
                                uint32_t n, fl_values *out)
{
    fl_status st = resolve_host(e->cfg, name, keys, n, out);
    if (st == FL_OK && e->n_extra < FL_EXP_MAX_SECTIONS) e->extra[e->n_extra++] = out;
    return st;
}

/* A kind in words for messages ("data set", "posterior", ...). */
static const char *kind_noun(fl_kind kind)
{
    return kind == FL_KIND_DATASET ? "data set" : fl_kind_name(kind);
}

/* The error for [section] type = `type` naming no registered component. */
static fl_status no_such_type(const fl_experiment *e, fl_kind kind, const char *section,
                              const fl_cfg_section *sec, const fl_cfg_entry *te, const char *type)
{
    char where[512];
    const char *near = fl_registry_suggest(e->reg, kind, type);
    if (te) fl_config_where(e->cfg, sec, te, where, sizeof where);
    else snprintf(where, sizeof where, "%s", e->cfg->path);
    if (near)
        fl_err("%s: [%s] type = '%s': no such %s; did you mean '%s'?", where, section, type,
               kind_noun(kind), near);
    else
        fl_err("%s: [%s] type = '%s': no such %s (`flowlab plugins` lists them)", where,
               section, type, kind_noun(kind));
    return FL_ERR_NOT_FOUND;
}

/* Every `type` written in a component section names a registered
 * component: checked before the data set loads, so a typo costs nothing. */
static fl_status check_types(const fl_experiment *e)
{
    static const struct { const char *prefix; fl_kind kind; } kinds[] = {
        { "posterior", FL_KIND_POSTERIOR }, { "likelihood", FL_KIND_LIKELIHOOD },
        { "prior", FL_KIND_PRIOR },         { "estimator", FL_KIND_ESTIMATOR },
        { "target", FL_KIND_TARGET },       { "flow", FL_KIND_FLOW },
    };
    const fl_config *c = e->cfg;
    for (size_t i = 0; i < c->n; i++) {
        const fl_cfg_section *sec = &c->s[i];
        const fl_cfg_entry *te = fl_config_entry(sec, "type");
        if (!te) continue;
        for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
            size_t n = strlen(kinds[k].prefix);
            if (strncmp(sec->name, kinds[k].prefix, n) || (sec->name[n] && sec->name[n] != '.'))
                continue;
            if (!fl_registry_find(e->reg, kinds[k].kind, te->value))
                return no_such_type(e, kinds[k].kind, sec->name, sec, te, te->value);
        }
    }
    return FL_OK;
}

fl_status fl_part_prepare(fl_experiment *e, fl_kind kind, const char *section,
                          const char *def_type, fl_part *part)
{
    memset(part, 0, sizeof *part);
    const fl_config *c = e->cfg;
    const fl_cfg_section *sec = fl_config_section(c, section);
    fl_cfg_entry *te = sec ? fl_config_entry(sec, "type") : NULL;
    const char *type = te ? te->value : def_type;
    char where[512];
    if (!type) {
        if (sec) fl_config_where(c, sec, NULL, where, sizeof where);
        else snprintf(where, sizeof where, "%s", c->path);
        fl_err("%s: [%s] missing required key 'type' (a %s; `flowlab plugins` lists them)", where,
               section, kind_noun(kind));
        return FL_ERR_INVALID;
    }
    part->rec = fl_registry_find(e->reg, kind, type);
    if (!part->rec) return no_such_type(e, kind, section, sec, te, type);
    /* Host keys: type (and k for estimators) with the class's own keys. */
    static const fl_key type_key[] = {
        { "type", FL_KEY_STRING, NULL, 0, 0, NULL, "component (see `flowlab plugins`)" },
        { "k", FL_KEY_INT, "1", 1, 1 << 20, NULL,
          "samples per data point (the estimator's k; the same k for every estimator type)" },
    };
    /* [data]: then the task's own keys (fl_task_model.data_keys) */
    const int task_keys = kind == FL_KIND_DATASET && e->task && e->task->data_keys;
    const fl_key *tabs[3] = { type_key, part->rec->cls.base.keys,
                              task_keys ? e->task->data_keys : NULL };
    uint32_t ns[3] = { kind == FL_KIND_ESTIMATOR ? 2u : 1u, part->rec->cls.base.n_keys,
                       task_keys ? e->task->n_data_keys : 0u };
    fl_status st;
    if (!te) {
        /* Default type: resolve with the type filled in so config.ini shows it. */
        fl_config_put(e->cfg, section, "type", type, 0);
    }
    st = fl_values_resolve(c, section, tabs, ns, 3, &part->cfg);
    if (st != FL_OK) return st;
    int listed = 0;
    for (size_t i = 0; i < e->n_extra; i++) listed |= e->extra[i] == &part->cfg;
    if (!listed && e->n_extra < FL_EXP_MAX_SECTIONS) e->extra[e->n_extra++] = &part->cfg;
    /* a data set has no parameters: no arena to ask for them */
    part->cx = fl_ctx_new(section, &part->cfg, kind == FL_KIND_DATASET ? NULL : &e->arena,
                          e->seed);
    if (!part->cx) return FL_ERR_NOMEM;
    fl_host_clear_error();
    fl_part_enter(part, "create"); /* left in fl_part_created */
    return FL_OK;
}

void fl_part_enter(const fl_part *p, const char *call)
{
    fl_crash_enter(p->cx->path, p->rec->cls.base.name, call);
}

fl_status fl_part_created(fl_experiment *e, fl_part *part, fl_status st)
{
    fl_crash_leave();
    fl_ctx_end_create(part->cx);
    part->block = part->cx->block;
    if (st != FL_OK) {
        /* the component's own message, after where its section is */
        char where[512];
        fl_config_where(e->cfg, fl_config_section(e->cfg, part->cfg.section), NULL, where,
                        sizeof where);
        part->self = NULL;
        return fl_comp_fail(st, "%s: [%s] %s", where, part->cfg.section,
                            part->rec->cls.base.name);
    }
    return st;
}

void fl_part_free(fl_part *part, void (*destroy)(void *))
{
    if (part->self && destroy) destroy(part->self);
    part->self = NULL;
    fl_ctx_free(part->cx);
    part->cx = NULL;
    fl_values_free(&part->cfg);
}

/* Optimizer steps per pass over the training data: whole batches of a
 * finite split, as fl_experiment_train_batch draws them, or 1 when the
 * split is drawn (endless; a "pass" is then one step). fl_experiment_steps
 * and fl_experiment_lr both use it, so the iwae schedule's length and its
 * learning rates agree. (A finite split smaller than one batch is refused
 * when the data set is made.) */
static uint64_t steps_per_epoch(const fl_experiment *e)
{
    if ((e->info.drawn & 1u) || !e->batch || e->info.n[FL_SPLIT_TRAIN] < e->batch) return 1;
    return e->info.n[FL_SPLIT_TRAIN] / e->batch;
}

static int finite_split(const fl_experiment *e)
{
    return !(e->info.drawn & 1u) && e->info.n[FL_SPLIT_TRAIN] >= e->batch && e->batch;
}

/* [train] steps written out but replaced by epochs or the iwae schedule:
 * say so, since `--set train.steps=N` is the usual way to shorten a run. */
static void warn_unused_steps(const fl_experiment *e, const fl_config *cfg)
{
    const fl_cfg_section *sec = fl_config_section(cfg, "train");
    const fl_cfg_entry *se = sec ? fl_config_entry(sec, "steps") : NULL;
    const uint64_t steps = fl_experiment_steps(e);
    if (!se || steps == (uint64_t)fl_exp_int(&e->train, "steps")) return;
    char where[512];
    fl_config_where(cfg, sec, se, where, sizeof where);
    const int iwae = strcmp(fl_values_get(&e->train, "schedule")->text, "iwae") == 0;
    const int epochs = fl_exp_int(&e->train, "epochs") > 0;
    fl_log(FL_LOG_WARN, "%s: [train] steps = %s is not used: %s sets the run's length (%llu "
           "steps); add%s%s to use it",
           where, se->value, iwae ? "schedule = iwae" : "epochs", (unsigned long long)steps,
           iwae ? " --set train.schedule=constant" : "", epochs ? " --set train.epochs=0" : "");
}

/* [train] keys that are valid alone but not together: one line naming the
 * file, line and key. */
static fl_status check_train(const fl_experiment *e, const fl_config *cfg)
{
    const fl_cfg_section *sec = fl_config_section(cfg, "train");
    char where[512];
    const double lr = fl_exp_real(&e->train, "lr"), lo = fl_exp_real(&e->train, "lr_min");
    if (strcmp(fl_values_get(&e->train, "schedule")->text, "cosine") == 0 && lo > lr) {
        fl_config_where(cfg, sec, sec ? fl_config_entry(sec, "lr_min") : NULL, where,
                        sizeof where);
        fl_err("%s: [train] lr_min = %g exceeds lr = %g: the cosine schedule decays from lr "
               "to lr_min", where, lo, lr);
        return FL_ERR_INVALID;
    }
    if (fl_exp_int(&e->train, "patience") > 0 && fl_exp_int(&e->train, "eval_every") == 0) {
        fl_config_where(cfg, sec, sec ? fl_config_entry(sec, "patience") : NULL, where,
                        sizeof where);
        fl_err("%s: [train] patience = %lld counts evaluations, but eval_every = 0 evaluates "
               "only at the end: set [train] eval_every", where,
               (long long)fl_exp_int(&e->train, "patience"));
        return FL_ERR_INVALID;
    }
    return FL_OK;
}

const fl_key *fl_experiment_section_keys(const char *section, uint32_t *n)
{
    static const struct { const char *name; const fl_key *keys; uint32_t n; } t[] = {
        { "experiment", exp_keys, FL_NTAB(exp_keys) }, { "train", train_keys, FL_NTAB(train_keys) },
        { "eval", eval_keys, FL_NTAB(eval_keys) },     { "data", data_host_keys, FL_NTAB(data_host_keys) },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (strcmp(section, t[i].name) == 0) {
            *n = t[i].n;
            return t[i].keys;
        }
    return NULL;
}

uint64_t fl_experiment_steps(const fl_experiment *e)
{
    const char *sched = fl_values_get(&e->train, "schedule")->text;
    if (strcmp(sched, "iwae") == 0) { /* the schedule's passes replace steps and epochs */
        int64_t rounds = fl_exp_int(&e->train, "iwae_rounds");
        uint64_t passes = 0, p = 1;
        for (int64_t i = 0; i < rounds; i++, p *= 3) passes += p;
        return passes * steps_per_epoch(e);
    }
    int64_t epochs = fl_exp_int(&e->train, "epochs");
    if (epochs > 0 && finite_split(e)) return (uint64_t)epochs * steps_per_epoch(e);
    return (uint64_t)fl_exp_int(&e->train, "steps");
}

/* The schedule's rate at `step`, before the warm-up factor. */
static double schedule_lr(const fl_experiment *e, uint64_t step)
{
    double lr = fl_exp_real(&e->train, "lr");
    const char *sched = fl_values_get(&e->train, "schedule")->text;
    if (strcmp(sched, "exponential") == 0)
        return lr * pow(fl_exp_real(&e->train, "lr_decay"),
                        (double)step / (double)fl_exp_int(&e->train, "lr_decay_steps"));
    if (strcmp(sched, "cosine") == 0) {
        /* from lr at the warm-up's end down to lr_min at the last step */
        const uint64_t w = (uint64_t)fl_exp_int(&e->train, "warmup"), S = fl_experiment_steps(e);
        const double lo = fl_exp_real(&e->train, "lr_min");
        if (step < w || S <= w) return lr;
        const double p = (double)(step - w) / (double)(S - w);
        return lo + (lr - lo) * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
    }
    if (strcmp(sched, "iwae") == 0) {
        uint64_t per_epoch = steps_per_epoch(e);
        uint64_t epoch = step / per_epoch, start = 0, p = 1;
        int64_t rounds = fl_exp_int(&e->train, "iwae_rounds"), i = 0;
        while (i < rounds - 1 && epoch >= start + p) {
            start += p;
            p *= 3;
            i++;
        }
        return lr * pow(10.0, -(double)i / 7.0);
    }
    return lr;
}

double fl_experiment_lr(const fl_experiment *e, uint64_t step)
{
    const uint64_t w = (uint64_t)fl_exp_int(&e->train, "warmup");
    const double lr = schedule_lr(e, step);
    return step < w ? lr * (double)(step + 1) / (double)w : lr;
}

/* e->task from [experiment] task: an entry of the task table. */
static fl_status find_task(fl_experiment *e)
{
    const char *name = fl_values_get(&e->exp, "task")->text;
    const char *names[32];
    size_t n = 0;
    for (const fl_task_model *t; n < 32 && (t = fl_task_model_at(n)); n++) {
        if (strcmp(t->name, name) == 0) {
            e->task = t;
            return FL_OK;
        }
        names[n] = t->name;
    }
    const fl_cfg_section *sec = fl_config_section(e->cfg, "experiment");
    const fl_cfg_entry *te = sec ? fl_config_entry(sec, "task") : NULL;
    char where[512], list[256] = "";
    if (te) fl_config_where(e->cfg, sec, te, where, sizeof where);
    else snprintf(where, sizeof where, "%s", e->cfg->path);
    for (size_t i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? "," : "", names[i]);
    const char *near = fl_closest(name, names, n);
    fl_err("%s: [experiment] task = '%s': expected one of %s%s%s%s", where, name, list,
           near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
    return FL_ERR_INVALID;
}

fl_status fl_experiment_new(const fl_registry *reg, fl_config *cfg, fl_experiment **out)
{
    fl_experiment *e = calloc(1, sizeof *e);
    if (!e) {
        fl_config_free(cfg);
        return FL_ERR_NOMEM;
    }
    e->cfg = cfg;
    e->reg = reg;
    fl_status st = resolve_host(cfg, "experiment", exp_keys, FL_NTAB(exp_keys), &e->exp);
    if (st != FL_OK) goto fail;
    st = find_task(e);
    if (st == FL_OK) st = check_sections(cfg, e->task);
    if (st == FL_OK) st = check_types(e);
    if (st == FL_OK) st = resolve_host(cfg, "train", train_keys, FL_NTAB(train_keys), &e->train);
    if (st == FL_OK) st = check_train(e, cfg);
    if (st == FL_OK)
        st = e->task->eval_keys
                 ? resolve_host(cfg, "eval", e->task->eval_keys, e->task->n_eval_keys, &e->eval)
                 : resolve_host(cfg, "eval", eval_keys, FL_NTAB(eval_keys), &e->eval);
    if (st != FL_OK) goto fail;
    e->seed = (uint64_t)fl_exp_int(&e->exp, "seed");
    /* before the model is built: initialisation computes too */
    fl_fpenv_flush_denormals(fl_exp_int(&e->exp, "flush_denormals") != 0);
    e->batch = (uint32_t)fl_exp_int(&e->train, "batch");
    e->eval_batch = (uint32_t)fl_exp_int(&e->eval, "batch");
    e->max_rows = e->batch > e->eval_batch ? e->batch : e->eval_batch;

    if (e->task->prepare) {
        st = e->task->prepare(e); /* before the data: its refusals cost no loading */
        if (st != FL_OK) goto fail;
    }
    if (e->task->data) {
        st = make_dataset(e);
        if (st != FL_OK) goto fail;
        /* config.ini lists [data] first whatever `prepare` made before it */
        for (size_t i = 1; i < e->n_extra; i++)
            if (e->extra[i] == &e->data.cfg) {
                memmove(e->extra + 1, e->extra, i * sizeof *e->extra);
                e->extra[0] = &e->data.cfg;
                break;
            }
    }
    st = e->task->build(e); /* the task's model: e->model, the arena finalised */
    if (st == FL_OK && e->task->flows && e->task->flows(e)) {
        /* a task's flows name the layer that first yields a non-finite
         * value (model/stack.h; under 1% of a step, docs/reliability.md) */
        ((fl_stack *)e->task->flows(e))->check = 1;
    }
    if (st != FL_OK) goto fail;
    warn_unused_steps(e, cfg);
    *out = e;
    return FL_OK;
fail:
    fl_experiment_free(e);
    return st;
}

void fl_experiment_free(fl_experiment *e)
{
    if (!e) return;
    if (e->task) e->task->free(e->model);
    fl_part_free(&e->data, e->dcls ? e->dcls->destroy : NULL);
    fl_arena_free(&e->arena);
    fl_values_free(&e->exp);
    fl_values_free(&e->train);
    fl_values_free(&e->eval);
    free(e->data_type);
    free(e->perm);
    fl_free(e->binbuf);
    fl_config_free(e->cfg);
    free(e);
}

fl_status fl_experiment_resolved(const fl_experiment *e, fl_buf *b)
{
    fl_buf_printf(b, "; resolved by flowlab from %s: every key, defaults included\n\n",
                  e->cfg->path);
    fl_values_write(&e->exp, b);
    for (size_t i = 0; i < e->n_extra; i++) fl_values_write(e->extra[i], b);
    /* One section per [flow.N] as written (not per expanded copy). */
    const char *last = NULL;
    const fl_stack *flows = e->task->flows ? e->task->flows(e) : NULL;
    for (size_t i = 0; flows && i < flows->n; i++) {
        const fl_layer *l = &flows->L[i];
        const fl_value *t = fl_values_get(&l->cfg, "type");
        if (!t) continue; /* an interleaved permutation */
        if (last && strcmp(last, l->cfg.section) == 0) continue;
        last = l->cfg.section;
        fl_values_write(&l->cfg, b);
    }
    fl_values_write(&e->train, b);
    fl_values_write(&e->eval, b);
    return b->failed ? FL_ERR_NOMEM : FL_OK;
}

/* x <- (u < x) with u uniform from (key, sub): a Bernoulli draw per grey
 * level. `u` is scratch of n values (or NULL: drawn in small pieces). */
/* Numbers first .. first+n-1 of stream (key, sub) decide x's n values. */
static void binarize(fl_rng_key key, uint64_t sub, uint64_t first, size_t n, fl_real *x,
                     fl_real *u)
{
    fl_real piece[256];
    for (size_t i = 0; i < n;) {
        size_t m = u ? n : (n - i < 256 ? n - i : 256);
        fl_real *buf = u ? u : piece;
        fl_rng_uniform(key, sub, first + i, m, buf);
        for (size_t j = 0; j < m; j++) x[i + j] = buf[j] < x[i + j] ? (fl_real)1 : (fl_real)0;
        i += m;
    }
}

fl_status fl_experiment_eval_split(fl_experiment *e, fl_split split, fl_real **rows, uint64_t *n)
{
    uint64_t cnt = e->info.n[split];
    uint32_t dim = e->info.dim;
    if (cnt == 0) {
        fl_err("[data] %s has no %s split", e->data_type, split == FL_SPLIT_TEST ? "test" : "valid");
        return FL_ERR_NOT_FOUND;
    }
    fl_real *x = fl_alloc(cnt * dim * sizeof(fl_real));
    if (!x) return FL_ERR_NOMEM;
    fl_status st = FL_OK;
    const uint32_t chunk = 4096;
    if (e->info.drawn & (1u << split)) {
        char name[320];
        snprintf(name, sizeof name, "%s/%s", split == FL_SPLIT_TEST ? "test" : "valid",
                 e->data_type);
        fl_rng_key key = fl_rng_key_make(0, name);
        for (uint64_t i = 0; i < cnt && st == FL_OK; i += chunk) {
            uint32_t m = (uint32_t)(cnt - i < chunk ? cnt - i : chunk);
            fl_part_enter(&e->data, "draw");
            st = e->dcls->draw(e->dself, split, key, i, m, x + i * dim);
            fl_crash_leave();
        }
    } else {
        uint64_t idx[4096];
        for (uint64_t i = 0; i < cnt && st == FL_OK; i += chunk) {
            uint32_t m = (uint32_t)(cnt - i < chunk ? cnt - i : chunk);
            for (uint32_t j = 0; j < m; j++) idx[j] = i + j;
            fl_part_enter(&e->data, "read");
            st = e->dcls->read(e->dself, split, idx, m, x + i * dim);
            fl_crash_leave();
        }
    }
    if (st != FL_OK) {
        fl_free(x);
        return fl_comp_fail(st, "[data] %s", e->data_type);
    }
    if (e->info.flags & FL_DATA_BINARIZE_DYNAMIC) {
        /* Evaluation sets are binarized once, independently of the seed, so
         * every run is scored on the same binary images. */
        char name[320];
        snprintf(name, sizeof name, "binarize/%s/%s", split == FL_SPLIT_TEST ? "test" : "valid",
                 e->data_type);
        binarize(fl_rng_key_make(0, name), 0, 0, (size_t)cnt * dim, x, NULL);
    }
    *rows = x;
    *n = cnt;
    return FL_OK;
}

fl_status fl_experiment_train_batch(fl_experiment *e, uint64_t step, uint32_t n, fl_real *out)
{
    return fl_experiment_train_rows(e, step, n, 0, n, out);
}

fl_status fl_experiment_train_rows(fl_experiment *e, uint64_t step, uint32_t n, uint32_t p0,
                                   uint32_t m, fl_real *out)
{
    fl_status st;
    if (e->info.drawn & 1u) {
        fl_rng_key key = fl_rng_key_make(e->seed, "data.train");
        fl_part_enter(&e->data, "draw");
        st = e->dcls->draw(e->dself, FL_SPLIT_TRAIN, key, step * n + p0, m, out);
        fl_crash_leave();
    } else {
        const uint64_t N = e->info.n[FL_SPLIT_TRAIN], per_epoch = N / n;
        const uint64_t epoch = step / per_epoch, b = step % per_epoch;
        if (e->perm_epoch != epoch + 1) {
            /* Fisher-Yates from (seed, epoch): the order never depends on
             * anything but the epoch number. */
            fl_rng_key key = fl_rng_key_make(e->seed, "data.shuffle");
            for (uint64_t i = 0; i < N; i++) e->perm[i] = i;
            for (uint64_t i = N - 1; i > 0; i--) {
                fl_real u;
                fl_rng_uniform(key, epoch, i, 1, &u);
                uint64_t j = (uint64_t)(u * (fl_real)(i + 1));
                if (j > i) j = i;
                uint64_t t = e->perm[i];
                e->perm[i] = e->perm[j];
                e->perm[j] = t;
            }
            e->perm_epoch = epoch + 1;
        }
        fl_part_enter(&e->data, "read");
        st = e->dcls->read(e->dself, FL_SPLIT_TRAIN, e->perm + b * n + p0, m, out);
        fl_crash_leave();
    }
    if (st != FL_OK) fl_comp_fail(st, "[data] %s", e->data_type);
    if (st == FL_OK && (e->info.flags & FL_DATA_BINARIZE_DYNAMIC))
        /* binbuf holds a [train] batch; a longer call (flowlab gradvar --n)
         * draws the same numbers in pieces */
        binarize(fl_rng_key_make(e->seed, "data.binarize"), step, (uint64_t)p0 * e->info.dim,
                 (size_t)m * e->info.dim, out, m <= e->batch ? e->binbuf : NULL);
    return st;
}
