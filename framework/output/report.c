/* report.c - aggregating a sweep's cells into report.md, .csv and .html. */
#define _POSIX_C_SOURCE 200809L
#include "output/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "output/metrics.h"
#include "output/plot.h"
#include "output/rundir.h"

/* ---- the cells' results ------------------------------------------------ */

enum { CELL_MISSING, CELL_DONE, CELL_FAILED };

typedef struct cell_data {
    int state;
    int exit_status;
    char *error;          /* failed.txt's error line */
    double *v;            /* per field, NAN when absent */
} cell_data;

typedef struct field_stats {
    size_t n;
    double mean, se;      /* se NAN when n < 2 */
} field_stats;

typedef struct group {
    size_t first;         /* a member cell, for the key values */
    size_t *cells;
    size_t n_cells, n_done, n_failed, n_missing;
    field_stats *f;       /* per field */
} group;

typedef struct report {
    const fl_sweep *s;
    const char *dir;
    cell_data *cd;
    char **fields;
    size_t n_fields;
    int *in_group;        /* per axis */
    group *g;
    size_t n_groups;
    size_t *order;        /* groups, best first */
    long metric;          /* field index, -1 = none */
    int direction;
    size_t n_done, n_failed, n_missing;
} report;

static long field_index(const report *r, const char *name)
{
    for (size_t i = 0; i < r->n_fields; i++)
        if (strcmp(r->fields[i], name) == 0) return (long)i;
    return -1;
}

/* The error line and exit status of failed.txt ("exit status N", then
 * the last error line of the cell's log). */
static void read_failed(const char *path, cell_data *c)
{
    char *text = NULL;
    if (fl_read_file(path, &text, NULL) != FL_OK) {
        fl_err_clear();
        return;
    }
    c->state = CELL_FAILED;
    c->exit_status = -1;
    sscanf(text, "exit status %d", &c->exit_status);
    const char *nl = strchr(text, '\n');
    if (nl && nl[1]) {
        const char *e = strchr(nl + 1, '\n');
        c->error = fl_strndup(nl + 1, e ? (size_t)(e - nl - 1) : strlen(nl + 1));
    }
    free(text);
}

/* Files a finished cell may hold besides result.json, whose numeric
 * top-level fields join the cell's under a prefix: the vae task's final
 * evaluation (eval.json, written by `flowlab run` and `flowlab eval`) and
 * `flowlab gradvar`'s flat summary (gradvar.json). */
static const struct {
    const char *file, *prefix;
} extras[] = { { "eval.json", "eval_" }, { "gradvar.json", "gv_" } };

/* Appends the prefixed numeric fields of cell c's extra files to its
 * (*nums, *nn). A missing file adds nothing; a malformed one is a warning. */
static fl_status load_extras(report *r, size_t c, fl_json_num **nums, size_t *nn)
{
    for (size_t x = 0; x < sizeof extras / sizeof extras[0]; x++) {
        char *path = fl_strfmt("%s/%s/%s", r->dir, r->s->cells[c].name, extras[x].file);
        char *text = NULL;
        fl_json_num *v = NULL;
        size_t n = 0;
        if (!path) return FL_ERR_NOMEM;
        if (fl_read_file(path, &text, NULL) != FL_OK) {
            fl_err_clear();
        } else if (fl_json_numbers(text, &v, &n) != FL_OK) {
            fl_log(FL_LOG_WARN, "%s: malformed JSON; its fields are left out", path);
            fl_err_clear();
        }
        free(text);
        free(path);
        fl_json_num *grown = n ? realloc(*nums, (*nn + n) * sizeof *grown) : *nums;
        fl_status st = n && !grown ? FL_ERR_NOMEM : FL_OK;
        for (size_t i = 0; i < n; i++) {
            char *name = st == FL_OK ? fl_strfmt("%s%s", extras[x].prefix, v[i].name) : NULL;
            if (st == FL_OK && !name) st = FL_ERR_NOMEM;
            if (st == FL_OK) {
                grown[*nn].name = name;
                grown[*nn].v = v[i].v;
                (*nn)++;
            }
            free(v[i].name);
        }
        free(v);
        if (grown) *nums = grown;
        if (st != FL_OK) return st;
    }
    return FL_OK;
}

static fl_status load_cells(report *r)
{
    const fl_sweep *s = r->s;
    r->cd = calloc(s->n_cells, sizeof *r->cd);
    if (!r->cd) return FL_ERR_NOMEM;
    fl_json_num **nums = calloc(s->n_cells, sizeof *nums);
    size_t *nn = calloc(s->n_cells, sizeof *nn);
    fl_status st = nums && nn ? FL_OK : FL_ERR_NOMEM;
    for (size_t c = 0; st == FL_OK && c < s->n_cells; c++) {
        char *rp = fl_strfmt("%s/%s/result.json", r->dir, s->cells[c].name);
        char *fp = fl_strfmt("%s/%s/failed.txt", r->dir, s->cells[c].name);
        char *text = NULL;
        if (!rp || !fp) st = FL_ERR_NOMEM;
        else if (fl_read_file(rp, &text, NULL) == FL_OK) {
            if (fl_json_numbers(text, &nums[c], &nn[c]) == FL_OK) {
                r->cd[c].state = CELL_DONE;
            } else {
                fl_log(FL_LOG_WARN, "%s: malformed JSON; cell counted as failed", rp);
                r->cd[c].state = CELL_FAILED;
                r->cd[c].exit_status = 0;
                r->cd[c].error = fl_strdup("malformed result.json");
            }
        } else {
            fl_err_clear();
            read_failed(fp, &r->cd[c]);
        }
        free(text);
        free(rp);
        free(fp);
        if (st == FL_OK && r->cd[c].state == CELL_DONE) st = load_extras(r, c, &nums[c], &nn[c]);
        /* the union of field names, in first-seen order */
        for (size_t k = 0; st == FL_OK && k < nn[c]; k++) {
            if (field_index(r, nums[c][k].name) >= 0) continue;
            char **nf = realloc(r->fields, (r->n_fields + 1) * sizeof *nf);
            if (!nf) {
                st = FL_ERR_NOMEM;
                break;
            }
            r->fields = nf;
            r->fields[r->n_fields] = fl_strdup(nums[c][k].name);
            if (!r->fields[r->n_fields]) st = FL_ERR_NOMEM;
            else r->n_fields++;
        }
    }
    for (size_t c = 0; st == FL_OK && c < s->n_cells; c++) {
        r->cd[c].v = malloc((r->n_fields + 1) * sizeof(double));
        if (!r->cd[c].v) {
            st = FL_ERR_NOMEM;
            break;
        }
        for (size_t f = 0; f < r->n_fields; f++) r->cd[c].v[f] = NAN;
        for (size_t k = 0; k < nn[c]; k++) r->cd[c].v[field_index(r, nums[c][k].name)] = nums[c][k].v;
        r->n_done += r->cd[c].state == CELL_DONE;
        r->n_failed += r->cd[c].state == CELL_FAILED;
        r->n_missing += r->cd[c].state == CELL_MISSING;
    }
    for (size_t c = 0; nums && nn && c < s->n_cells; c++) {
        for (size_t k = 0; k < nn[c]; k++) free(nums[c][k].name);
        free(nums[c]);
    }
    free(nums);
    free(nn);
    return st;
}

/* ---- grouping and statistics ------------------------------------------ */

fl_status fl_report_check_group_by(const fl_sweep *s, const char *group_by)
{
    if (!group_by) return FL_OK;
    char *copy = fl_strdup(group_by);
    if (!copy) {
        fl_err("--group-by: out of memory");
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
        fl_err("--group-by: '%s' is not a swept key of %s (swept: %s)", k, s->path, list);
        st = FL_ERR_INVALID;
    }
    free(copy);
    return st;
}

/* Cells ordered by their values of the grouping keys, then by number: the
 * cells of a group are then neighbours. */
static const report *group_ctx;
static int by_group_key(const void *pa, const void *pb)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const report *r = group_ctx;
    for (size_t x = 0; x < r->s->n_axes; x++) {
        if (!r->in_group[x]) continue;
        size_t va = r->s->cells[a].choice[x], vb = r->s->cells[b].choice[x];
        if (va != vb) return (va > vb) - (va < vb);
    }
    return (a > b) - (a < b);
}

static int same_key(const report *r, size_t a, size_t b)
{
    for (size_t x = 0; x < r->s->n_axes; x++)
        if (r->in_group[x] && r->s->cells[a].choice[x] != r->s->cells[b].choice[x]) return 0;
    return 1;
}

static int by_first_cell(const void *pa, const void *pb)
{
    const group *a = pa, *b = pb;
    return (a->first > b->first) - (a->first < b->first);
}

static fl_status make_groups(report *r, const char *group_by)
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
        group *gr = &r->g[r->n_groups];
        gr->first = order[k]; /* the lowest-numbered cell of the group */
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
            gr->n_done += stt == CELL_DONE;
            gr->n_failed += stt == CELL_FAILED;
            gr->n_missing += stt == CELL_MISSING;
        }
    }
    free(order);
    /* groups in the order of their first cell, as listed */
    qsort(r->g, r->n_groups, sizeof *r->g, by_first_cell);
    /* mean and standard error of the mean, two passes */
    for (size_t g = 0; g < r->n_groups; g++) {
        group *gr = &r->g[g];
        for (size_t f = 0; f < r->n_fields; f++) {
            double sum = 0, ss = 0;
            size_t n = 0;
            for (size_t k = 0; k < gr->n_cells; k++) {
                const cell_data *cd = &r->cd[gr->cells[k]];
                if (cd->state == CELL_DONE && isfinite(cd->v[f])) sum += cd->v[f], n++;
            }
            double mean = n ? sum / (double)n : NAN;
            for (size_t k = 0; k < gr->n_cells; k++) {
                const cell_data *cd = &r->cd[gr->cells[k]];
                if (cd->state == CELL_DONE && isfinite(cd->v[f]))
                    ss += (cd->v[f] - mean) * (cd->v[f] - mean);
            }
            gr->f[f].n = n;
            gr->f[f].mean = mean;
            gr->f[f].se = n >= 2 ? sqrt(ss / (double)(n - 1) / (double)n) : NAN;
        }
    }
    return FL_OK;
}

static int default_direction(const char *metric)
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

static const report *order_ctx;
static int by_metric(const void *pa, const void *pb)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const report *r = order_ctx;
    if (r->metric >= 0) {
        double x = r->g[a].f[r->metric].mean, y = r->g[b].f[r->metric].mean;
        int fx = isfinite(x), fy = isfinite(y);
        if (fx != fy) return fy - fx; /* rows without a value last */
        if (fx && x != y) return (x < y ? -1 : 1) * (r->direction < 0 ? 1 : -1);
    }
    return (a > b) - (a < b);
}

/* ---- formatting ------------------------------------------------------- */

/* 5 significant digits for means, 2 for standard errors; integers whole. */
static void fmt_num(char *buf, size_t cap, double v, int digits)
{
    if (!isfinite(v)) snprintf(buf, cap, "-");
    else if (v == floor(v) && fabs(v) < 1e12) snprintf(buf, cap, "%.0f", v);
    else snprintf(buf, cap, "%.*g", digits, v);
}

/* mean +- se, the se left out for a single cell */
static void fmt_stat(char *buf, size_t cap, const field_stats *f, const char *pm)
{
    char m[64], e[64];
    fmt_num(m, sizeof m, f->mean, 5);
    if (!isfinite(f->se)) {
        snprintf(buf, cap, "%s", m);
        return;
    }
    fmt_num(e, sizeof e, f->se, 2);
    snprintf(buf, cap, "%s %s %s", m, pm, e);
}

static void html_text(fl_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fl_buf_printf(b, "&lt;"); break;
        case '>': fl_buf_printf(b, "&gt;"); break;
        case '&': fl_buf_printf(b, "&amp;"); break;
        case '"': fl_buf_printf(b, "&quot;"); break;
        default: fl_buf_write(b, s, 1);
        }
    }
}

/* Markdown cell text: '|' would end the cell. */
static void md_text(fl_buf *b, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|') fl_buf_write(b, "\\", 1);
        fl_buf_write(b, s, 1);
    }
}

static const char *metric_name(const report *r)
{
    return r->metric >= 0 ? r->fields[r->metric] : NULL;
}

static void describe(const report *r, fl_buf *b, int md)
{
    const fl_sweep *s = r->s;
    fl_buf_printf(b, "%zu cells: %zu finished, %zu failed, %zu not run. ", s->n_cells, r->n_done,
                  r->n_failed, r->n_missing);
    size_t n_in = 0;
    for (size_t a = 0; a < s->n_axes; a++) n_in += r->in_group[a];
    if (n_in < s->n_axes) {
        fl_buf_printf(b, "Each row averages over ");
        for (size_t a = 0, k = 0; a < s->n_axes; a++)
            if (!r->in_group[a]) fl_buf_printf(b, "%s%s%s%s", k++ ? ", " : "", md ? "`" : "",
                                               s->axes[a].key, md ? "`" : "");
        fl_buf_printf(b, ": mean %s standard error, n = finished cells. ", md ? "±" : "+-");
    } else {
        fl_buf_printf(b, "One row per cell. ");
    }
    if (metric_name(r))
        fl_buf_printf(b, "Sorted by %s%s%s, %s is better.", md ? "`" : "", metric_name(r),
                      md ? "`" : "", r->direction < 0 ? "lower" : "higher");
}

static void write_md(const report *r, fl_buf *b, fl_buf *table)
{
    const fl_sweep *s = r->s;
    fl_buf_printf(b, "# Sweep report: %s\n\n", r->dir);
    describe(r, b, 1);
    fl_buf_printf(b, "\n\n");
    /* the table, also printed on stdout */
    fl_buf_printf(table, "| rank |");
    for (size_t a = 0; a < s->n_axes; a++)
        if (r->in_group[a]) fl_buf_printf(table, " %s |", s->axes[a].key);
    fl_buf_printf(table, " n | failed |");
    for (size_t f = 0; f < r->n_fields; f++) fl_buf_printf(table, " %s |", r->fields[f]);
    fl_buf_printf(table, "\n|---:|");
    for (size_t a = 0; a < s->n_axes; a++)
        if (r->in_group[a]) fl_buf_printf(table, "---|");
    fl_buf_printf(table, "---:|---:|");
    for (size_t f = 0; f < r->n_fields; f++) fl_buf_printf(table, "---:|");
    fl_buf_printf(table, "\n");
    for (size_t k = 0; k < r->n_groups; k++) {
        const group *g = &r->g[r->order[k]];
        int best = k == 0 && r->metric >= 0 && g->f[r->metric].n > 0;
        fl_buf_printf(table, "| %zu%s |", k + 1, best ? " (best)" : "");
        for (size_t a = 0; a < s->n_axes; a++)
            if (r->in_group[a]) {
                fl_buf_printf(table, " ");
                md_text(table, fl_sweep_value(s, g->first, a));
                fl_buf_printf(table, " |");
            }
        fl_buf_printf(table, " %zu | %zu |", g->n_done, g->n_failed);
        for (size_t f = 0; f < r->n_fields; f++) {
            char cell[160];
            fmt_stat(cell, sizeof cell, &g->f[f], "±");
            if (best && (long)f == r->metric) fl_buf_printf(table, " **%s** |", cell);
            else fl_buf_printf(table, " %s |", cell);
        }
        fl_buf_printf(table, "\n");
    }
    fl_buf_write(b, table->data, table->len);
    if (r->n_failed) {
        fl_buf_printf(b, "\n## Failed cells\n\n| cell | exit status | error |\n|---|---:|---|\n");
        for (size_t c = 0; c < s->n_cells; c++) {
            const cell_data *cd = &r->cd[c];
            if (cd->state != CELL_FAILED) continue;
            fl_buf_printf(b, "| ");
            md_text(b, s->cells[c].name);
            fl_buf_printf(b, " | %d | ", cd->exit_status);
            md_text(b, cd->error ? cd->error : "");
            fl_buf_printf(b, " |\n");
        }
    }
    if (r->n_missing) {
        fl_buf_printf(b, "\n## Cells not run\n\n");
        for (size_t c = 0; c < s->n_cells; c++)
            if (r->cd[c].state == CELL_MISSING) {
                fl_buf_printf(b, "- ");
                md_text(b, s->cells[c].name);
                fl_buf_printf(b, "\n");
            }
    }
}

static void write_csv(const report *r, fl_buf *b)
{
    const fl_sweep *s = r->s;
    fl_buf_printf(b, "rank,best");
    for (size_t a = 0; a < s->n_axes; a++)
        if (r->in_group[a]) {
            fl_buf_printf(b, ",");
            fl_buf_csv(b, s->axes[a].key);
        }
    fl_buf_printf(b, ",n,failed");
    for (size_t f = 0; f < r->n_fields; f++)
        fl_buf_printf(b, ",%s_mean,%s_se", r->fields[f], r->fields[f]);
    fl_buf_printf(b, "\n");
    for (size_t k = 0; k < r->n_groups; k++) {
        const group *g = &r->g[r->order[k]];
        int best = k == 0 && r->metric >= 0 && g->f[r->metric].n > 0;
        fl_buf_printf(b, "%zu,%d", k + 1, best);
        for (size_t a = 0; a < s->n_axes; a++)
            if (r->in_group[a]) {
                fl_buf_printf(b, ",");
                fl_buf_csv(b, fl_sweep_value(s, g->first, a));
            }
        fl_buf_printf(b, ",%zu,%zu", g->n_done, g->n_failed);
        for (size_t f = 0; f < r->n_fields; f++) {
            if (isfinite(g->f[f].mean)) fl_buf_printf(b, ",%.9g", g->f[f].mean);
            else fl_buf_printf(b, ",");
            if (isfinite(g->f[f].se)) fl_buf_printf(b, ",%.9g", g->f[f].se);
            else fl_buf_printf(b, ",");
        }
        fl_buf_printf(b, "\n");
    }
}

/* ---- curves ----------------------------------------------------------- */

static const fl_rgb palette[10] = {
    { 31, 119, 180 }, { 255, 127, 14 }, { 44, 160, 44 }, { 214, 39, 40 }, { 148, 103, 189 },
    { 140, 86, 75 },  { 227, 119, 194 }, { 127, 127, 127 }, { 188, 189, 34 }, { 23, 190, 207 },
};

/* Column `name` of a metrics.csv against its `step` column. `want` is tried
 * first, then test_nll, then the first column after step; *col gets the
 * chosen name (owned). Returns 0 when the file has no usable rows. */
static int read_curve(const char *path, const char *want, double **xs, double **ys, size_t *n,
                      char **col)
{
    *xs = *ys = NULL;
    *n = 0;
    *col = NULL;
    fl_metrics_table t;
    if (fl_metrics_read(path, &t) != FL_OK) {
        fl_err_clear();
        return 0;
    }
    long cs = fl_metrics_find(&t, "step"), cy = want ? fl_metrics_find(&t, want) : -1;
    if (cy < 0) cy = fl_metrics_find(&t, "test_nll");
    for (size_t k = 0; cy < 0 && k < t.n_cols; k++)
        if ((long)k != cs) cy = (long)k;
    if (cy >= 0 && t.n_rows) {
        *xs = malloc(t.n_rows * sizeof **xs);
        *ys = malloc(t.n_rows * sizeof **ys);
        *col = fl_strdup(t.names[cy]);
    }
    if (!*xs || !*ys || !*col) {
        free(*xs);
        free(*ys);
        free(*col);
        *xs = *ys = NULL;
        *col = NULL;
        fl_metrics_table_free(&t);
        return 0;
    }
    memcpy(*xs, t.col[cs], t.n_rows * sizeof **xs);
    memcpy(*ys, t.col[cy], t.n_rows * sizeof **ys);
    *n = t.n_rows;
    fl_metrics_table_free(&t);
    return 1;
}

static void base64(fl_buf *b, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n) v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char out[4] = { tab[v >> 18 & 63], tab[v >> 12 & 63],
                        i + 1 < n ? tab[v >> 6 & 63] : '=', i + 2 < n ? tab[v & 63] : '=' };
        fl_buf_write(b, out, 4);
    }
}

/* The chart of group `gi` (rank k) as an <img> plus caption; nothing when
 * no member has a metrics.csv. */
static fl_status chart(const report *r, size_t gi, size_t k, fl_buf *h)
{
    const fl_sweep *s = r->s;
    const group *g = &r->g[gi];
    double *xs[64] = { 0 }, *ys[64] = { 0 };
    size_t ns[64] = { 0 }, who[64];
    char *col = NULL;
    size_t m = 0;
    for (size_t i = 0; i < g->n_cells && m < 64; i++) {
        char *p = fl_strfmt("%s/%s/metrics.csv", r->dir, s->cells[g->cells[i]].name);
        char *c = NULL;
        if (p && read_curve(p, col ? col : metric_name(r), &xs[m], &ys[m], &ns[m], &c)) {
            if (!col) col = c;
            else free(c);
            who[m++] = g->cells[i];
        }
        free(p);
    }
    fl_status st = FL_OK;
    if (m) {
        double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
        for (size_t j = 0; j < m; j++)
            for (size_t i = 0; i < ns[j]; i++) {
                x0 = fmin(x0, xs[j][i]);
                x1 = fmax(x1, xs[j][i]);
                if (isfinite(ys[j][i])) y0 = fmin(y0, ys[j][i]), y1 = fmax(y1, ys[j][i]);
            }
        if (!(y1 >= y0)) y0 = 0, y1 = 1;
        double pad = 0.05 * (y1 - y0);
        fl_canvas cv = { 0 };
        st = fl_canvas_init(&cv, 400, 240, (fl_rgb){ 255, 255, 255 });
        char *dir = fl_strfmt("%s/report_curves", r->dir);
        char *png = fl_strfmt("%s/report_curves/row-%zu.png", r->dir, k + 1);
        if (st == FL_OK && (!dir || !png)) st = FL_ERR_NOMEM;
        if (st == FL_OK) st = fl_mkdirs(dir);
        if (st == FL_OK) {
            fl_canvas_window(&cv, 16, x0, x1, y0 - pad, y1 + pad);
            fl_canvas_frame(&cv, (fl_rgb){ 0, 0, 0 }, 5);
            for (size_t j = 0; j < m; j++) fl_canvas_polyline(&cv, xs[j], ys[j], ns[j], palette[j % 10]);
            st = fl_canvas_save(&cv, png);
        }
        unsigned char *bytes = NULL;
        size_t nb = 0;
        if (st == FL_OK) st = fl_read_file(png, (char **)&bytes, &nb);
        if (st == FL_OK) {
            char a[64], b2[64], c[64], d[64];
            fmt_num(a, sizeof a, cv.x_min, 5);
            fmt_num(b2, sizeof b2, cv.x_max, 5);
            fmt_num(c, sizeof c, cv.y_min, 5);
            fmt_num(d, sizeof d, cv.y_max, 5);
            fl_buf_printf(h, "<figure><img alt=\"%s curves of row %zu\" src=\"data:image/png;base64,",
                          col, k + 1);
            base64(h, bytes, nb);
            fl_buf_printf(h, "\"><figcaption>row %zu: <code>%s</code> against step (x %s to %s, "
                             "y %s to %s)<br>", k + 1, col, a, b2, c, d);
            for (size_t j = 0; j < m; j++) {
                fl_rgb p = palette[j % 10];
                fl_buf_printf(h, "<span class=\"key\" style=\"background:#%02x%02x%02x\"></span>",
                              p.r, p.g, p.b);
                for (size_t a2 = 0, q = 0; a2 < s->n_axes; a2++)
                    if (!r->in_group[a2]) {
                        fl_buf_printf(h, "%s%s=", q++ ? ", " : "", s->axes[a2].key);
                        html_text(h, fl_sweep_value(s, who[j], a2));
                    }
                fl_buf_printf(h, " ");
            }
            fl_buf_printf(h, "</figcaption></figure>\n");
        }
        free(bytes);
        free(dir);
        free(png);
        fl_canvas_free(&cv);
    }
    for (size_t j = 0; j < m; j++) {
        free(xs[j]);
        free(ys[j]);
    }
    free(col);
    return st;
}

static fl_status write_html(const report *r, fl_buf *h)
{
    const fl_sweep *s = r->s;
    fl_buf_printf(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                     "<title>Sweep report: ");
    html_text(h, r->dir);
    fl_buf_printf(h,
                  "</title>\n<style>\n"
                  "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:90em}\n"
                  "table{border-collapse:collapse;font-size:0.9em}\n"
                  "th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}\n"
                  "th{background:#f0f0f0}td.key{text-align:left;font-family:monospace}\n"
                  "tr.best td{background:#e6f4e6;font-weight:bold}\n"
                  "figure{display:inline-block;margin:0.5em;vertical-align:top;max-width:420px}\n"
                  "figcaption{font-size:0.8em}\n"
                  "span.key{display:inline-block;width:0.8em;height:0.8em;margin:0 0.2em}\n"
                  "</style></head><body>\n<h1>Sweep report: ");
    html_text(h, r->dir);
    fl_buf_printf(h, "</h1>\n<p>From <code>");
    html_text(h, s->path);
    fl_buf_printf(h, "</code>. ");
    fl_buf d = { 0 };
    describe(r, &d, 0);
    html_text(h, d.data);
    fl_buf_free(&d);
    fl_buf_printf(h, "</p>\n<table>\n<tr><th>rank</th>");
    for (size_t a = 0; a < s->n_axes; a++)
        if (r->in_group[a]) {
            fl_buf_printf(h, "<th>");
            html_text(h, s->axes[a].key);
            fl_buf_printf(h, "</th>");
        }
    fl_buf_printf(h, "<th>n</th><th>failed</th>");
    for (size_t f = 0; f < r->n_fields; f++) {
        fl_buf_printf(h, "<th>");
        html_text(h, r->fields[f]);
        fl_buf_printf(h, "</th>");
    }
    fl_buf_printf(h, "</tr>\n");
    for (size_t k = 0; k < r->n_groups; k++) {
        const group *g = &r->g[r->order[k]];
        int best = k == 0 && r->metric >= 0 && g->f[r->metric].n > 0;
        fl_buf_printf(h, "<tr%s><td>%zu%s</td>", best ? " class=\"best\"" : "", k + 1,
                      best ? " &#9733;" : "");
        for (size_t a = 0; a < s->n_axes; a++)
            if (r->in_group[a]) {
                fl_buf_printf(h, "<td class=\"key\">");
                html_text(h, fl_sweep_value(s, g->first, a));
                fl_buf_printf(h, "</td>");
            }
        fl_buf_printf(h, "<td>%zu</td><td>%zu</td>", g->n_done, g->n_failed);
        for (size_t f = 0; f < r->n_fields; f++) {
            char cell[160];
            fmt_stat(cell, sizeof cell, &g->f[f], "&plusmn;");
            fl_buf_printf(h, "<td>%s</td>", cell);
        }
        fl_buf_printf(h, "</tr>\n");
    }
    fl_buf_printf(h, "</table>\n");
    if (r->n_failed) {
        fl_buf_printf(h, "<h2>Failed cells</h2>\n<table>\n<tr><th>cell</th><th>exit status</th>"
                         "<th>error</th></tr>\n");
        for (size_t c = 0; c < s->n_cells; c++) {
            const cell_data *cd = &r->cd[c];
            if (cd->state != CELL_FAILED) continue;
            fl_buf_printf(h, "<tr><td class=\"key\">");
            html_text(h, s->cells[c].name);
            fl_buf_printf(h, "</td><td>%d</td><td class=\"key\">", cd->exit_status);
            html_text(h, cd->error ? cd->error : "");
            fl_buf_printf(h, "</td></tr>\n");
        }
        fl_buf_printf(h, "</table>\n");
    }
    fl_buf_printf(h, "<h2>Training curves</h2>\n");
    fl_status st = FL_OK;
    for (size_t k = 0; k < r->n_groups && st == FL_OK; k++) st = chart(r, r->order[k], k, h);
    fl_buf_printf(h, "</body></html>\n");
    return st;
}

/* A report file from its buffer (FL_ERR_NOMEM when the buffer lost text). */
static fl_status write_file(const char *dir, const char *file, const fl_buf *b)
{
    if (b->failed) return FL_ERR_NOMEM;
    return fl_rundir_write(dir, file, b->data ? b->data : "", b->len);
}

fl_status fl_report_write(const char *dir, const fl_sweep *s, const fl_report_opts *o,
                          FILE *table_out)
{
    report r = { .s = s, .dir = dir, .metric = -1 };
    fl_status st = load_cells(&r);
    if (st == FL_OK) st = make_groups(&r, o ? o->group_by : NULL);
    const char *want = o && o->metric ? o->metric : s->metric;
    if (st == FL_OK) {
        if (want) r.metric = field_index(&r, want);
        else if ((r.metric = field_index(&r, "test_nll")) < 0 && r.n_fields) r.metric = 0;
        if (want && r.metric < 0 && r.n_done) {
            fl_buf list = { 0 };
            for (size_t f = 0; f < r.n_fields; f++)
                fl_buf_printf(&list, "%s%s", f ? ", " : "", r.fields[f]);
            fl_err("metric '%s' is in no cell's result.json under %s (fields: %s)", want, dir,
                   list.data ? list.data : "none");
            fl_buf_free(&list);
            st = FL_ERR_INVALID;
        }
    }
    if (st == FL_OK) {
        r.direction = o && o->direction ? o->direction
                      : s->direction     ? s->direction
                      : metric_name(&r)  ? default_direction(metric_name(&r))
                                         : -1;
        r.order = malloc((r.n_groups + 1) * sizeof *r.order);
        if (!r.order) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) {
        for (size_t g = 0; g < r.n_groups; g++) r.order[g] = g;
        order_ctx = &r;
        qsort(r.order, r.n_groups, sizeof *r.order, by_metric);
        fl_buf md = { 0 }, table = { 0 }, csv = { 0 }, html = { 0 };
        write_md(&r, &md, &table);
        write_csv(&r, &csv);
        st = write_html(&r, &html);
        if (st == FL_OK) st = write_file(dir, "report.md", &md);
        if (st == FL_OK) st = write_file(dir, "report.csv", &csv);
        if (st == FL_OK) st = write_file(dir, "report.html", &html);
        if (st == FL_OK && table_out && table.data) fputs(table.data, table_out);
        fl_buf_free(&md);
        fl_buf_free(&table);
        fl_buf_free(&csv);
        fl_buf_free(&html);
    }
    for (size_t c = 0; r.cd && c < s->n_cells; c++) {
        free(r.cd[c].error);
        free(r.cd[c].v);
    }
    free(r.cd);
    for (size_t f = 0; f < r.n_fields; f++) free(r.fields[f]);
    free(r.fields);
    for (size_t g = 0; g < r.n_groups; g++) {
        free(r.g[g].cells);
        free(r.g[g].f);
    }
    free(r.g);
    free(r.in_group);
    free(r.order);
    /* The out-of-memory paths above only return the status. */
    if (st == FL_ERR_NOMEM) fl_err("%s: out of memory writing the report (%zu cells)", dir, s->n_cells);
    return st;
}
