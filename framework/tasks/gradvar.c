/* gradvar.c - signal-to-noise ratio of VAE gradient estimators (see
 * gradvar.h). */
#include "tasks/gradvar.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "output/json.h"
#include "tasks/task_vae.h"

fl_status fl_gradvar_stats_init(fl_gradvar_stats *s, size_t total)
{
    memset(s, 0, sizeof *s);
    s->total = total;
    s->mean = calloc(total ? total : 1, sizeof *s->mean);
    s->m2 = calloc(total ? total : 1, sizeof *s->m2);
    if (!s->mean || !s->m2) {
        fl_gradvar_stats_free(s);
        fl_err("gradvar: out of memory for %zu gradient moments", total);
        return FL_ERR_NOMEM;
    }
    return FL_OK;
}

void fl_gradvar_stats_free(fl_gradvar_stats *s)
{
    if (!s) return;
    free(s->mean);
    free(s->m2);
    s->mean = s->m2 = NULL;
}

/* ESS of each of the n points' k log weights, added to *sum / *count. */
static void add_ess(const fl_real *logw, uint32_t n, uint32_t k, double *sum, uint64_t *count)
{
    for (uint32_t b = 0; b < n; b++) {
        const fl_real *lw = logw + (size_t)b * k;
        double m = -INFINITY;
        for (uint32_t j = 0; j < k; j++)
            if (lw[j] > m) m = lw[j];
        if (!isfinite(m)) continue; /* every sample impossible: no weights */
        double s1 = 0, s2 = 0;
        for (uint32_t j = 0; j < k; j++) {
            double w = exp((double)lw[j] - m);
            s1 += w;
            s2 += w * w;
        }
        *sum += s1 * s1 / s2;
        (*count)++;
    }
}

fl_status fl_gradvar_draw(fl_experiment *e, const fl_real *x, uint32_t n, uint32_t draw,
                          double *g, double *bound, double *ess_sum, uint64_t *ess_count)
{
    uint32_t k;
    fl_vae_estimator(e, &k);
    const uint32_t rows = fl_vae_max_rows(e);
    if (k > rows || n == 0) {
        fl_err("gradvar: k = %u samples per point exceed the %u sample rows the model holds "
               "(raise [eval] batch, e.g. with --batch)", k, rows);
        return FL_ERR_INVALID;
    }
    const uint32_t per = rows / k, calls = (n + per - 1) / per, dim = e->info.dim;
    const size_t total = e->arena.total;
    double *bnd = malloc((size_t)(per < n ? per : n) * sizeof *bnd);
    if (!bnd) {
        fl_err("gradvar: out of memory");
        return FL_ERR_NOMEM;
    }
    memset(g, 0, total * sizeof *g);
    double bsum = 0;
    fl_status st = FL_OK;
    for (uint32_t c = 0; c < calls && st == FL_OK; c++) {
        const uint32_t p0 = c * per, m = n - p0 < per ? n - p0 : per;
        fl_arena_zero_grad(&e->arena);
        /* fl_vae_bound gives point b of a call sub-stream noise_sub + b, so
         * point p of draw t gets SUB0 + t*n + p however the batch is split */
        st = fl_vae_bound(e, x + (size_t)p0 * dim, m, FL_GRADVAR_SUB0 + (uint64_t)draw * n + p0,
                          1, bnd);
        if (st != FL_OK) break;
        /* arena grad = d(-mean over the call's m points)/dtheta; this call's
         * share of d(mean over n)/dtheta is -(m/n) of it */
        const double w = -(double)m / n;
        const fl_real *ag = e->arena.grad;
        for (size_t i = 0; i < total; i++) g[i] += w * (double)ag[i];
        for (uint32_t b = 0; b < m; b++) bsum += bnd[b];
        if (ess_sum && ess_count) add_ess(fl_vae_logw(e), m, k, ess_sum, ess_count);
    }
    free(bnd);
    if (st == FL_OK && bound) *bound = bsum / n;
    if (st == FL_OK && !isfinite(bsum)) {
        fl_err("gradvar: the bound is not finite (%g) at draw %u", bsum / n, draw);
        st = FL_ERR_NUMERIC;
    }
    return st;
}

fl_status fl_gradvar_accumulate(fl_experiment *e, const fl_real *x, uint32_t n, uint32_t draws,
                                fl_gradvar_stats *s, fl_progress *prog, uint64_t prog_base)
{
    uint32_t k;
    const char *name = fl_vae_estimator(e, &k);
    double *g = malloc((s->total ? s->total : 1) * sizeof *g);
    if (!g) {
        fl_err("gradvar: out of memory");
        return FL_ERR_NOMEM;
    }
    fl_status st = FL_OK;
    char status[96];
    snprintf(status, sizeof status, "%s k=%u", name, k);
    for (uint32_t t = 0; t < draws && st == FL_OK; t++) {
        const uint32_t draw = s->draws;
        double b;
        st = fl_gradvar_draw(e, x, n, draw, g, &b, &s->ess_sum, &s->ess_count);
        if (st != FL_OK) break;
        const double cnt = (double)draw + 1;
        for (size_t i = 0; i < s->total; i++) {
            const double d = g[i] - s->mean[i];
            s->mean[i] += d / cnt;
            s->m2[i] += d * (g[i] - s->mean[i]);
        }
        const double d = b - s->bound_mean;
        s->bound_mean += d / cnt;
        s->bound_m2 += d * (b - s->bound_mean);
        s->draws = draw + 1;
        if (prog && (prog->tty || t + 1 == draws))
            fl_progress_update(prog, prog_base + (uint64_t)(t + 1) * k, status);
    }
    free(g);
    return st;
}

static int starts_with_word(const char *name, const char *w)
{
    size_t n = strlen(w);
    return strncmp(name, w, n) == 0 && (name[n] == '.' || name[n] == 0);
}

int fl_gradvar_side(const char *name)
{
    if (starts_with_word(name, "encoder") || starts_with_word(name, "posterior") ||
        starts_with_word(name, "flow"))
        return 1;
    if (starts_with_word(name, "decoder") || starts_with_word(name, "likelihood") ||
        starts_with_word(name, "prior"))
        return 2;
    return 0;
}

void fl_gradvar_prefix(const char *name, char *buf, size_t cap)
{
    size_t a = strcspn(name, ".");
    size_t len = a;
    if (name[a] == '.') {
        const char *q = name + a + 1;
        size_t b = strspn(q, "0123456789");
        if (b > 0 && (q[b] == '.' || q[b] == 0)) len = a + 1 + b;
    }
    if (len >= cap) len = cap - 1;
    memcpy(buf, name, len);
    buf[len] = 0;
}

void fl_gradvar_summarize(const fl_experiment *e, const fl_gradvar_stats *s, int side,
                          const char *prefix, fl_gradvar_group *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s",
             side == 1 ? "inference" : side == 2 ? "generative" : prefix ? prefix : "?");
    double snr = 0, ma = 0, sd = 0;
    size_t cnt = 0;
    const fl_arena *a = &e->arena;
    for (size_t p = 0; p < a->n && s->draws >= 2; p++) {
        const fl_param_rec *r = &a->p[p];
        if (r->flags & FL_PARAM_STATE) continue;
        if (side) {
            if (fl_gradvar_side(r->name) != side) continue;
        } else {
            char pre[64];
            fl_gradvar_prefix(r->name, pre, sizeof pre);
            if (!prefix || strcmp(pre, prefix) != 0) continue;
        }
        for (size_t j = 0; j < r->size; j++) {
            const size_t i = r->offset + j;
            const double var = s->m2[i] / (s->draws - 1);
            if (!(var > 0)) continue; /* the same in every draw */
            const double sdev = sqrt(var), m = fabs(s->mean[i]);
            snr += m / sdev;
            ma += m;
            sd += sdev;
            cnt++;
        }
    }
    out->entries = cnt;
    out->snr = cnt ? snr / cnt : NAN;
    out->mean_abs = cnt ? ma / cnt : NAN;
    out->mean_std = cnt ? sd / cnt : NAN;
}

/* The distinct top-level prefixes of the trained slices, in arena order. */
static fl_status collect_prefixes(const fl_experiment *e, fl_gradvar_result *r)
{
    const fl_arena *a = &e->arena;
    for (size_t p = 0; p < a->n; p++) {
        if (a->p[p].flags & FL_PARAM_STATE) continue;
        char pre[64];
        fl_gradvar_prefix(a->p[p].name, pre, sizeof pre);
        size_t i = 0;
        while (i < r->n_prefix && strcmp(r->prefix[i], pre) != 0) i++;
        if (i < r->n_prefix) continue;
        char **np = realloc(r->prefix, (r->n_prefix + 1) * sizeof *np);
        if (!np) return FL_ERR_NOMEM;
        r->prefix = np;
        if (!(r->prefix[r->n_prefix] = fl_strdup(pre))) return FL_ERR_NOMEM;
        r->n_prefix++;
    }
    return FL_OK;
}

fl_status fl_gradvar_run(fl_experiment *e, const fl_real *x, uint32_t n,
                         const char *const *estimators, size_t n_est, const uint32_t *ks,
                         size_t n_k, uint32_t draws, int progress, fl_gradvar_result *out)
{
    memset(out, 0, sizeof *out);
    out->n = n;
    out->draws = draws;
    if (draws < 2 || n == 0) {
        fl_err("gradvar: needs at least 2 draws and 1 point (got %u draws, %u points)", draws, n);
        return FL_ERR_INVALID;
    }
    const uint32_t rows = fl_vae_max_rows(e);
    for (size_t j = 0; j < n_k; j++)
        if (ks[j] == 0 || ks[j] > rows) {
            fl_err("gradvar: k = %u: the model holds %u sample rows per call, so k must be in "
                   "[1, %u] (raise [eval] batch, e.g. with --batch)", ks[j], rows, rows);
            return FL_ERR_INVALID;
        }
    out->rows = calloc(n_est * n_k + 1, sizeof *out->rows);
    if (!out->rows || collect_prefixes(e, out) != FL_OK) {
        fl_err("gradvar: out of memory");
        return FL_ERR_NOMEM;
    }
    uint64_t total = 0;
    for (size_t j = 0; j < n_k; j++) total += (uint64_t)draws * ks[j] * n_est;
    fl_progress prog;
    if (progress) fl_progress_start(&prog, "gradvar", total, 1);
    uint64_t done = 0;
    fl_gradvar_stats s = { 0 };
    fl_status st = FL_OK;
    for (size_t i = 0; i < n_est && st == FL_OK; i++)
        for (size_t j = 0; j < n_k && st == FL_OK; j++) {
            fl_gradvar_row *row = &out->rows[out->n_rows++];
            snprintf(row->estimator, sizeof row->estimator, "%s", estimators[i]);
            row->k = ks[j];
            row->prefix = calloc(out->n_prefix + 1, sizeof *row->prefix);
            if (!row->prefix) {
                fl_err("gradvar: out of memory");
                st = FL_ERR_NOMEM;
                break;
            }
            fl_err_clear();
            if (fl_vae_use_estimator(e, estimators[i], ks[j]) != FL_OK) {
                row->reason = fl_strdup(fl_err_msg()[0] ? fl_err_msg() : "refused by the model");
                fl_err_clear();
                done += (uint64_t)draws * ks[j];
                continue;
            }
            row->ok = 1;
            row->points_per_call = rows / ks[j] < n ? rows / ks[j] : n;
            row->calls = (n + row->points_per_call - 1) / row->points_per_call;
            double t0 = fl_now();
            st = fl_gradvar_stats_init(&s, e->arena.total);
            if (st == FL_OK)
                st = fl_gradvar_accumulate(e, x, n, draws, &s, progress ? &prog : NULL, done);
            done += (uint64_t)draws * ks[j];
            if (st == FL_OK) {
                row->bound = s.bound_mean;
                row->bound_se = sqrt(s.bound_m2 / (s.draws - 1) / s.draws);
                row->ess = s.ess_count ? s.ess_sum / (double)s.ess_count : NAN;
                fl_gradvar_summarize(e, &s, 1, NULL, &row->inference);
                fl_gradvar_summarize(e, &s, 2, NULL, &row->generative);
                for (size_t p = 0; p < out->n_prefix; p++)
                    fl_gradvar_summarize(e, &s, 0, out->prefix[p], &row->prefix[p]);
            } else {
                fl_err_prefix("gradvar %s k=%u: ", estimators[i], ks[j]);
            }
            row->seconds = fl_now() - t0;
            fl_gradvar_stats_free(&s);
        }
    if (progress) fl_progress_end(&prog);
    return st;
}

void fl_gradvar_result_free(fl_gradvar_result *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_rows; i++) {
        free(r->rows[i].reason);
        free(r->rows[i].prefix);
    }
    free(r->rows);
    for (size_t i = 0; i < r->n_prefix; i++) free(r->prefix[i]);
    free(r->prefix);
    memset(r, 0, sizeof *r);
}

/* ---- output ------------------------------------------------------------- */

/* A number for CSV/JSON: %.9g, or the empty string / null when not finite. */
static void num(fl_buf *b, double v, int json)
{
    if (isfinite(v)) fl_buf_printf(b, "%.9g", v);
    else if (json) fl_buf_printf(b, "null");
}

static void csv_group(fl_buf *b, const fl_gradvar_row *r, const fl_gradvar_group *g)
{
    fl_buf_printf(b, "%s,%u,ok,", r->estimator, r->k);
    num(b, r->bound, 0);
    fl_buf_printf(b, ",");
    num(b, r->bound_se, 0);
    fl_buf_printf(b, ",");
    num(b, r->ess, 0);
    fl_buf_printf(b, ",");
    num(b, r->ess / r->k, 0);
    fl_buf_printf(b, ",%s,%zu,", g->name, g->entries);
    num(b, g->snr, 0);
    fl_buf_printf(b, ",");
    num(b, g->mean_abs, 0);
    fl_buf_printf(b, ",");
    num(b, g->mean_std, 0);
    fl_buf_printf(b, ",%.3f\n", r->seconds);
}

void fl_gradvar_csv(const fl_gradvar_result *res, fl_buf *b)
{
    fl_buf_printf(b, "estimator,k,status,bound,bound_se,ess,ess_fraction,group,entries,snr,"
                     "mean_abs_grad,mean_std_grad,seconds\n");
    for (size_t i = 0; i < res->n_rows; i++) {
        const fl_gradvar_row *r = &res->rows[i];
        if (!r->ok) {
            fl_buf_printf(b, "%s,%u,", r->estimator, r->k);
            char *s = fl_strfmt("n/a: %s", r->reason ? r->reason : "");
            fl_buf_csv(b, s ? s : "n/a");
            free(s);
            fl_buf_printf(b, ",,,,,,,,,,\n");
            continue;
        }
        csv_group(b, r, &r->inference);
        csv_group(b, r, &r->generative);
        for (size_t p = 0; p < res->n_prefix; p++) csv_group(b, r, &r->prefix[p]);
    }
}

/* One group's figures, as an inline object. */
static void json_group(fl_json *w, const char *key, const fl_gradvar_group *g)
{
    fl_json_key_object(w, key, FL_JSON_INLINE);
    fl_json_key_str(w, "group", g->name);
    fl_json_key_uint(w, "entries", g->entries);
    fl_json_key_num(w, "snr", g->snr, "%.9g");
    fl_json_key_num(w, "mean_abs_grad", g->mean_abs, "%.9g");
    fl_json_key_num(w, "mean_std_grad", g->mean_std, "%.9g");
    fl_json_close(w);
}

void fl_gradvar_json(const fl_gradvar_result *res, const char *run, const char *split, fl_buf *b)
{
    fl_json w;
    fl_json_begin(&w, b);
    fl_json_key_str(&w, "run", run ? run : "");
    fl_json_key_str(&w, "split", split ? split : "");
    fl_json_key_uint(&w, "points", res->n);
    fl_json_key_uint(&w, "draws", res->draws);
    /* flat numbers first, for `flowlab report` (gv_<name>) */
    for (size_t i = 0; i < res->n_rows; i++) {
        const fl_gradvar_row *r = &res->rows[i];
        if (!r->ok) continue;
        const struct {
            const char *what;
            double v;
        } f[] = { { "bound", r->bound },
                  { "ess", r->ess },
                  { "snr_inference", r->inference.snr },
                  { "snr_generative", r->generative.snr },
                  /* one draw is one gradient of the n points: a step at batch n */
                  { "sec_per_step", res->draws ? r->seconds / res->draws : NAN } };
        for (size_t j = 0; j < sizeof f / sizeof f[0]; j++) {
            if (!isfinite(f[j].v)) continue;
            char key[160];
            snprintf(key, sizeof key, "%s_k%u_%s", r->estimator, r->k, f[j].what);
            fl_json_key_num(&w, key, f[j].v, "%.9g");
        }
    }
    fl_json_key_array(&w, "rows", FL_JSON_BLOCK);
    for (size_t i = 0; i < res->n_rows; i++) {
        const fl_gradvar_row *r = &res->rows[i];
        fl_json_key_object(&w, NULL, FL_JSON_INLINE);
        fl_json_key_str(&w, "estimator", r->estimator);
        fl_json_key_uint(&w, "k", r->k);
        fl_json_key_bool(&w, "ok", r->ok);
        if (!r->ok) {
            fl_json_key_str(&w, "reason", r->reason ? r->reason : "");
            fl_json_close(&w);
            continue;
        }
        fl_json_break(&w);
        fl_json_key_uint(&w, "points_per_call", r->points_per_call);
        fl_json_key_uint(&w, "calls", r->calls);
        fl_json_key_num(&w, "bound", r->bound, "%.9g");
        fl_json_key_num(&w, "bound_se", r->bound_se, "%.9g");
        fl_json_key_num(&w, "ess", r->ess, "%.9g");
        fl_json_key_num(&w, "ess_fraction", r->ess / r->k, "%.9g");
        fl_json_key_num(&w, "seconds", r->seconds, "%.3f");
        fl_json_break(&w);
        json_group(&w, "inference", &r->inference);
        fl_json_break(&w);
        json_group(&w, "generative", &r->generative);
        fl_json_break(&w);
        fl_json_key_array(&w, "prefixes", FL_JSON_INLINE);
        for (size_t p = 0; p < res->n_prefix; p++) {
            fl_json_break(&w);
            json_group(&w, NULL, &r->prefix[p]);
        }
        fl_json_close(&w);
        fl_json_close(&w);
    }
    fl_json_close(&w);
    /* a misuse would be a bug here; an allocation failure shows in b->failed */
    if (fl_json_end(&w) != FL_OK) fl_err_clear();
}

static void cell(FILE *f, double v, const char *fmt, int width)
{
    if (isfinite(v)) fprintf(f, fmt, width, v);
    else fprintf(f, "%*s", width, "-");
}

void fl_gradvar_print(const fl_gradvar_result *res, FILE *f)
{
    fprintf(f, "%-10s %5s %12s %9s %9s %12s %12s\n", "estimator", "k", "bound", "ESS", "ESS/k",
            "SNR infer.", "SNR gener.");
    for (size_t i = 0; i < res->n_rows; i++) {
        const fl_gradvar_row *r = &res->rows[i];
        fprintf(f, "%-10s %5u ", r->estimator, r->k);
        if (!r->ok) {
            fprintf(f, "n/a: %s\n", r->reason ? r->reason : "");
            continue;
        }
        cell(f, r->bound, "%*.3f", 12);
        fprintf(f, " ");
        cell(f, r->ess, "%*.2f", 9);
        fprintf(f, " ");
        cell(f, r->ess / r->k, "%*.3f", 9);
        fprintf(f, " ");
        cell(f, r->inference.snr, "%*.4f", 12);
        fprintf(f, " ");
        cell(f, r->generative.snr, "%*.4f", 12);
        fprintf(f, "\n");
    }
    fprintf(f, "(%u points, %u draws; SNR = mean over a group's parameters of |E g| / std g)\n",
            res->n, res->draws);
    int any = 0;
    for (size_t i = 0; i < res->n_rows; i++) {
        const fl_gradvar_row *r = &res->rows[i];
        if (!r->ok) continue;
        if (!any++) {
            fprintf(f, "\nper group: SNR  (mean |E g|, mean std g)\n%-10s %5s", "estimator", "k");
            fprintf(f, "  %-30s %-30s", "inference", "generative");
            for (size_t p = 0; p < res->n_prefix; p++) fprintf(f, "  %-30s", res->prefix[p]);
            fprintf(f, "\n");
        }
        fprintf(f, "%-10s %5u", r->estimator, r->k);
        const fl_gradvar_group *gs[2] = { &r->inference, &r->generative };
        for (size_t p = 0; p < 2 + res->n_prefix; p++) {
            const fl_gradvar_group *g = p < 2 ? gs[p] : &r->prefix[p - 2];
            char s[64];
            if (g->entries) snprintf(s, sizeof s, "%.4f (%.2e, %.2e)", g->snr, g->mean_abs,
                                     g->mean_std);
            else snprintf(s, sizeof s, "-");
            fprintf(f, "  %-30s", s);
        }
        fprintf(f, "\n");
    }
}
