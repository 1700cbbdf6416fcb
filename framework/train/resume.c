/* resume.c - continuing an interrupted run from its run directory. */
#include "train/resume.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "output/metrics.h"
#include "train/checkpoint.h"
#include "core/log.h"

/* Keys that may change when a run is resumed: the run's length and
 * cadences, the thread count (results do not depend on it) and [eval]
 * (what is evaluated after training, not how it trains). Everything else
 * must be the run's own. */
const char fl_resume_free_keys[] =
    "[train] steps, epochs, eval_every, log_every, checkpoint_every, diverge_factor, "
    "grad_blocks, patience, keep_best; "
    "[experiment] threads; every [eval] key";

static int free_key(const char *section, size_t slen, const char *key, size_t klen)
{
#define IS(a, s, n) (strlen(a) == (n) && memcmp(a, s, n) == 0)
    if (IS("eval", section, slen)) return 1;
    if (IS("experiment", section, slen)) return IS("threads", key, klen);
    if (!IS("train", section, slen)) return 0;
    return IS("steps", key, klen) || IS("epochs", key, klen) || IS("eval_every", key, klen) ||
           IS("log_every", key, klen) || IS("checkpoint_every", key, klen) ||
           IS("diverge_factor", key, klen) || IS("grad_blocks", key, klen) ||
           IS("patience", key, klen) || IS("keep_best", key, klen);
#undef IS
}

/* One "key = value" line of a resolved config and its section; the
 * scanner skips blank lines, comments and the keys that may change. */
typedef struct cfg_line {
    const char *sec, *key, *val;
    size_t slen, klen, vlen;
} cfg_line;

typedef struct cfg_scan {
    const char *p, *end;
    const char *sec;
    size_t slen;
} cfg_scan;

static int next_line(cfg_scan *s, cfg_line *out)
{
    while (s->p < s->end) {
        const char *l = s->p, *nl = memchr(l, '\n', (size_t)(s->end - l));
        const char *le = nl ? nl : s->end;
        s->p = nl ? nl + 1 : s->end;
        while (l < le && (*l == ' ' || *l == '\t')) l++;
        const char *r = le;
        while (r > l && (r[-1] == ' ' || r[-1] == '\t' || r[-1] == '\r')) r--;
        if (l == r || *l == ';' || *l == '#') continue;
        if (*l == '[') {
            const char *c = memchr(l, ']', (size_t)(r - l));
            s->sec = l + 1;
            s->slen = c ? (size_t)(c - l - 1) : (size_t)(r - l - 1);
            continue;
        }
        const char *eq = memchr(l, '=', (size_t)(r - l));
        const char *ke = eq ? eq : r, *v = eq ? eq + 1 : r;
        while (ke > l && (ke[-1] == ' ' || ke[-1] == '\t')) ke--;
        while (v < r && (*v == ' ' || *v == '\t')) v++;
        out->sec = s->sec ? s->sec : "";
        out->slen = s->sec ? s->slen : 0;
        out->key = l;
        out->klen = (size_t)(ke - l);
        out->val = v;
        out->vlen = (size_t)(r - v);
        if (free_key(out->sec, out->slen, out->key, out->klen)) continue;
        return 1;
    }
    return 0;
}

uint64_t fl_resume_config_hash(const char *text, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    cfg_scan s = { text, text + len, NULL, 0 };
    cfg_line l;
#define MIX(ptr, n)                                                                                \
    for (size_t i_ = 0; i_ < (n); i_++) h = (h ^ (unsigned char)(ptr)[i_]) * 1099511628211ull
    while (next_line(&s, &l)) {
        MIX(l.sec, l.slen);
        MIX("]", 1);
        MIX(l.key, l.klen);
        MIX("=", 1);
        MIX(l.val, l.vlen);
        MIX("\n", 1);
    }
#undef MIX
    return h ? h : 1; /* 0 means "no hash" in a checkpoint */
}

/* The first difference between two resolved configs, past the keys that
 * may change: a line of fl_err naming section.key and both values (or the
 * key one of them lacks). Returns 0 when they agree. */
static int first_difference(const char *path, const char *old, size_t olen, const char *now,
                            size_t nlen)
{
    cfg_scan a = { old, old + olen, NULL, 0 }, b = { now, now + nlen, NULL, 0 };
    cfg_line x, y;
    for (;;) {
        int hx = next_line(&a, &x), hy = next_line(&b, &y);
        if (!hx && !hy) return 0;
        int same_key = hx && hy && x.slen == y.slen && x.klen == y.klen &&
                       memcmp(x.sec, y.sec, x.slen) == 0 && memcmp(x.key, y.key, x.klen) == 0;
        if (same_key && x.vlen == y.vlen && memcmp(x.val, y.val, x.vlen) == 0) continue;
        if (same_key)
            fl_err("%s: [%.*s] %.*s = %.*s in the run, %.*s in this experiment: --resume "
                   "continues a run only with its own experiment (may change: %s)",
                   path, (int)x.slen, x.sec, (int)x.klen, x.key, (int)x.vlen, x.val,
                   (int)y.vlen, y.val, fl_resume_free_keys);
        else if (hx)
            fl_err("%s: [%.*s] %.*s = %.*s in the run, %s in this experiment: --resume "
                   "continues a run only with its own experiment (may change: %s)",
                   path, (int)x.slen, x.sec, (int)x.klen, x.key, (int)x.vlen, x.val,
                   hy ? "another key in its place" : "absent", fl_resume_free_keys);
        else
            fl_err("%s: [%.*s] %.*s = %.*s in this experiment, absent in the run: --resume "
                   "continues a run only with its own experiment (may change: %s)",
                   path, (int)y.slen, y.sec, (int)y.klen, y.key, (int)y.vlen, y.val,
                   fl_resume_free_keys);
        return 1;
    }
}

fl_status fl_resume_hash(const fl_experiment *e, uint64_t *hash)
{
    fl_buf b = { 0 };
    fl_status st = fl_experiment_resolved(e, &b);
    *hash = st == FL_OK ? fl_resume_config_hash(b.data, b.len) : 0;
    fl_buf_free(&b);
    return st;
}

/* Whether the checkpoint at `ckpt` (at `step`, with record `rec`) may be
 * continued by e: the same experiment (the record's hash; DIR/config.ini
 * names the first differing key) and a step within e's steps. */
static fl_status check_record(const fl_experiment *e, const char *rundir, const char *ckpt,
                              uint64_t step, const fl_checkpoint_run *rec)
{
    fl_buf now = { 0 };
    fl_status st = fl_experiment_resolved(e, &now);
    if (st != FL_OK) {
        fl_buf_free(&now);
        return st;
    }
    char *cp = fl_strfmt("%s/config.ini", rundir), *old = NULL;
    size_t olen = 0;
    const int have_old = cp && fl_read_file(cp, &old, &olen) == FL_OK;
    fl_err_clear();
    if (have_old && first_difference(cp, old, olen, now.data, now.len)) {
        st = FL_ERR_INVALID;
    } else if (rec->config_hash && rec->config_hash != fl_resume_config_hash(now.data, now.len)) {
        fl_err("%s: saved by a run of another experiment than this one%s: --resume continues "
               "a run only with its own experiment (may change: %s)",
               ckpt, have_old ? " (and than its config.ini, which this experiment matches)" : "",
               fl_resume_free_keys);
        st = FL_ERR_INVALID;
    } else if (step > fl_experiment_steps(e)) {
        fl_err("%s: at step %llu, past the %llu steps of this experiment ([train] steps or "
               "epochs): resume with at least %llu steps",
               ckpt, (unsigned long long)step, (unsigned long long)fl_experiment_steps(e),
               (unsigned long long)step);
        st = FL_ERR_INVALID;
    }
    free(old);
    free(cp);
    fl_buf_free(&now);
    return st;
}

fl_status fl_resume_check(const fl_experiment *e, const char *rundir)
{
    char *rp = fl_strfmt("%s/result.json", rundir), *p = fl_strfmt("%s/checkpoint.flc", rundir);
    fl_status st = rp && p ? FL_OK : FL_ERR_NOMEM;
    if (st == FL_OK && access(rp, F_OK) == 0) {
        fl_err("%s: the run is finished (result.json): --resume continues only an unfinished "
               "run, and writes nothing into a finished one; to train it further, copy the "
               "directory without result.json and resume the copy",
               rundir);
        st = FL_ERR_EXISTS;
    } else if (st == FL_OK && access(p, R_OK) == 0) {
        uint64_t step = 0;
        fl_checkpoint_run rec;
        st = fl_checkpoint_peek(p, &step, &rec);
        if (st == FL_OK) st = check_record(e, rundir, p, step, &rec);
    }
    free(rp);
    free(p);
    return st;
}

fl_status fl_resume_load(fl_experiment *e, const char *rundir, fl_adam *opt, fl_ema *ema,
                         uint64_t *step0, fl_buf *metrics, double *train_seconds,
                         fl_checkpoint_run *rec)
{
    *step0 = 0;
    *train_seconds = 0;
    memset(rec, 0, sizeof *rec);
    char *p = fl_strfmt("%s/checkpoint.flc", rundir), *mp = fl_strfmt("%s/metrics.csv", rundir);
    fl_status st = p && mp ? FL_OK : FL_ERR_NOMEM;
    if (st == FL_OK && access(p, R_OK) == 0) {
        uint64_t step = 0;
        st = fl_checkpoint_peek(p, &step, rec);
        if (st == FL_OK) st = check_record(e, rundir, p, step, rec);
        if (st == FL_OK) st = fl_checkpoint_load_run(p, &e->arena, opt, ema, 0, step0, rec);
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
                      uint64_t step, const fl_checkpoint_run *rec)
{
    char *p = fl_strfmt("%s/checkpoint.flc", dir);
    if (!p) return FL_ERR_NOMEM;
    fl_status st = fl_checkpoint_save_run(p, &e->arena, opt, ema, step, rec);
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
