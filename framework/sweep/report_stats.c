/* report_stats.c - the statistics of `flowlab report`: cells grouped over
 * the keys left out of the grouping (by default the seeds), the mean and
 * standard error of every field per group, and the groups ranked by the
 * metric. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sweep/report_impl.h"

/* FL_OK when every key of `keys` is a swept key, else FL_ERR_INVALID
 * naming the option `opt`. */
static fl_status check_keys(const fl_sweep *s, const char *opt, const char *keys)
{
    if (!keys) return FL_OK;
    char *copy = fl_strdup(keys);
    if (!copy) {
        fl_err("%s: out of memory", opt);
        return FL_ERR_NOMEM;
    }
    fl_status st = FL_OK;
    for (char *save = NULL, *k = strtok_r(copy, " \t,", &save); k && st == FL_OK;
         k = strtok_r(NULL, " \t,", &save)) {
        if (fl_sweep_axis_find(s, k) >= 0) continue;
        char list[512];
        size_t used = 0;
        list[0] = 0;
        for (size_t a = 0; a < s->n_axes && used + 1 < sizeof list; a++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", a ? ", " : "",
                                     s->axes[a].key);
        fl_err("%s: '%s' is not a swept key of %s (swept: %s)", opt, k, s->path, list);
        st = FL_ERR_INVALID;
    }
    free(copy);
    return st;
}

fl_status fl_report_check_group_by(const fl_sweep *s, const char *group_by)
{
    return check_keys(s, "--group-by", group_by);
}

fl_status fl_report_check_opts(const fl_sweep *s, const fl_report_opts *o)
{
    fl_status st = check_keys(s, "--group-by", o->group_by);
    if (st == FL_OK && (o->pivot_rows || o->pivot_cols || o->pivot_metric) &&
        !(o->pivot_rows && o->pivot_cols && o->pivot_metric)) {
        fl_err("--pivot: needs ROWS COLS METRIC");
        st = FL_ERR_INVALID;
    }
    if (st == FL_OK && o->pivot_rows) {
        if (strchr(o->pivot_rows, ',') || strchr(o->pivot_cols, ',')) {
            fl_err("--pivot %s %s: ROWS and COLS are one swept key each", o->pivot_rows,
                   o->pivot_cols);
            st = FL_ERR_INVALID;
        }
        if (st == FL_OK) st = check_keys(s, "--pivot ROWS", o->pivot_rows);
        if (st == FL_OK) st = check_keys(s, "--pivot COLS", o->pivot_cols);
        if (st == FL_OK && !strcmp(o->pivot_rows, o->pivot_cols)) {
            fl_err("--pivot %s %s: ROWS and COLS must be different swept keys", o->pivot_rows,
                   o->pivot_cols);
            st = FL_ERR_INVALID;
        }
    }
    return st;
}

/* Cells ordered by their values of the grouping keys, then by number: the
 * cells of a group are then neighbours. */
static const fl_report *group_ctx;
static int by_group_key(const void *pa, const void *pb)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const fl_report *r = group_ctx;
    for (size_t x = 0; x < r->s->n_axes; x++) {
        if (!r->in_group[x]) continue;
        size_t va = r->s->cells[a].choice[x], vb = r->s->cells[b].choice[x];
        if (va != vb) return (va > vb) - (va < vb);
    }
    return (a > b) - (a < b);
}

static int same_key(const fl_report *r, size_t a, size_t b)
{
    for (size_t x = 0; x < r->s->n_axes; x++)
        if (r->in_group[x] && r->s->cells[a].choice[x] != r->s->cells[b].choice[x]) return 0;
    return 1;
}

static int by_first_cell(const void *pa, const void *pb)
{
    const fl_report_group *a = pa, *b = pb;
    return (a->first > b->first) - (a->first < b->first);
}

fl_status fl_report_group_cells(fl_report *r, const char *group_by)
{
    const fl_sweep *s = r->s;
    r->in_group = calloc(s->n_axes + 1, sizeof *r->in_group);
    if (!r->in_group) return FL_ERR_NOMEM;
    if (group_by) {
        char *copy = fl_strdup(group_by);
        if (!copy) return FL_ERR_NOMEM;
        for (char *save = NULL, *k = strtok_r(copy, " \t,", &save); k;
             k = strtok_r(NULL, " \t,", &save)) {
            long a = fl_sweep_axis_find(s, k);
            if (a >= 0) r->in_group[a] = 1;
        }
        free(copy);
    } else {
        for (size_t a = 0; a < s->n_axes; a++)
            r->in_group[a] = strcmp(s->axes[a].key, "experiment.seed") != 0;
    }
    /* Sorting the cells by group key keeps memory linear in the cells (a
     * group's list holds its own cells only) and the time n log n. */
    size_t *order = malloc((s->n_cells + 1) * sizeof *order);
    if (!order) return FL_ERR_NOMEM;
    for (size_t c = 0; c < s->n_cells; c++) order[c] = c;
    group_ctx = r;
    qsort(order, s->n_cells, sizeof *order, by_group_key);
    size_t n_groups = 0;
    for (size_t k = 0; k < s->n_cells; k++) n_groups += k == 0 || !same_key(r, order[k - 1], order[k]);
    r->g = calloc(n_groups + 1, sizeof *r->g);
    if (!r->g) {
        free(order);
        return FL_ERR_NOMEM;
    }
    for (size_t k = 0, j; k < s->n_cells; k = j) {
        for (j = k + 1; j < s->n_cells && same_key(r, order[k], order[j]); j++) {}
        fl_report_group *gr = &r->g[r->n_groups];
        gr->first = order[k]; /* the lowest-numbered cell of the fl_report_group */
        gr->cells = malloc((j - k) * sizeof *gr->cells);
        gr->f = calloc(r->n_fields + 1, sizeof *gr->f);
        if (!gr->cells || !gr->f) {
            free(gr->cells);
            free(gr->f);
            free(order);
            return FL_ERR_NOMEM;
        }
        r->n_groups++;
        for (size_t i = k; i < j; i++) {
            size_t c = order[i];
            gr->cells[gr->n_cells++] = c;
            int stt = r->cd[c].state;
            gr->n_done += stt == FL_CELL_DONE;
            gr->n_failed += stt == FL_CELL_FAILED;
            gr->n_missing += stt == FL_CELL_MISSING;
        }
    }
    free(order);
    /* groups in the order of their first cell, as listed */
    qsort(r->g, r->n_groups, sizeof *r->g, by_first_cell);
    /* mean and standard error of the mean, two passes */
    for (size_t g = 0; g < r->n_groups; g++) {
        fl_report_group *gr = &r->g[g];
        for (size_t f = 0; f < r->n_fields; f++) {
            double sum = 0, ss = 0;
            size_t n = 0;
            for (size_t k = 0; k < gr->n_cells; k++) {
                const fl_report_cell *cd = &r->cd[gr->cells[k]];
                if (cd->state == FL_CELL_DONE && isfinite(cd->v[f])) sum += cd->v[f], n++;
            }
            double mean = n ? sum / (double)n : NAN;
            for (size_t k = 0; k < gr->n_cells; k++) {
                const fl_report_cell *cd = &r->cd[gr->cells[k]];
                if (cd->state == FL_CELL_DONE && isfinite(cd->v[f]))
                    ss += (cd->v[f] - mean) * (cd->v[f] - mean);
            }
            gr->f[f].n = n;
            gr->f[f].mean = mean;
            gr->f[f].se = n >= 2 ? sqrt(ss / (double)(n - 1) / (double)n) : NAN;
        }
    }
    return FL_OK;
}

int fl_report_default_direction(const char *metric)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", metric);
    int dir = -1;
    for (char *save = NULL, *w = strtok_r(buf, "_", &save); w; w = strtok_r(NULL, "_", &save)) {
        if (!strcmp(w, "ll") || !strcmp(w, "elbo") || !strcmp(w, "accuracy") ||
            !strcmp(w, "likelihood") || !strcmp(w, "iwae") || !strcmp(w, "bound") ||
            !strcmp(w, "snr") || !strcmp(w, "ess"))
            dir = 1;
    }
    /* a standard error is better small, whatever it is the error of */
    size_t len = strlen(metric);
    if (len >= 3 && strcmp(metric + len - 3, "_se") == 0) dir = -1;
    return dir;
}

static const fl_report *order_ctx;
static int by_metric(const void *pa, const void *pb)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const fl_report *r = order_ctx;
    if (r->metric >= 0) {
        double x = r->g[a].f[r->metric].mean, y = r->g[b].f[r->metric].mean;
        int fx = isfinite(x), fy = isfinite(y);
        if (fx != fy) return fy - fx; /* rows without a value last */
        if (fx && x != y) return (x < y ? -1 : 1) * (r->direction < 0 ? 1 : -1);
    }
    return (a > b) - (a < b);
}

void fl_report_rank(fl_report *r)
{
    for (size_t g = 0; g < r->n_groups; g++) r->order[g] = g;
    order_ctx = r;
    qsort(r->order, r->n_groups, sizeof *r->order, by_metric);
}
