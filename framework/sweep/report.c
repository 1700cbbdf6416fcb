/* report.c - `flowlab report`'s entry point: reads every cell's results
 * (result.json, and a finished cell's eval.json and gradvar.json under a
 * prefix; failed.txt for a failed one), groups and ranks them
 * (report_stats.c), picks the columns to show (duplicates left out), and
 * writes report.md, report.csv, report.html and the pivot table
 * (report_tables.c, report_charts.c, report_pivot.c). */
#define _POSIX_C_SOURCE 200809L
#include "sweep/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "output/json.h"
#include "sweep/report_impl.h"
#include "output/rundir.h"

long fl_report_field_index(const fl_report *r, const char *name)
{
    for (size_t i = 0; i < r->n_fields; i++)
        if (strcmp(r->fields[i], name) == 0) return (long)i;
    return -1;
}

/* The error line and exit status of failed.txt ("exit status N", then
 * the last error line of the cell's log). */
static void read_failed(const char *path, fl_report_cell *c)
{
    char *text = NULL;
    if (fl_read_file(path, &text, NULL) != FL_OK) {
        fl_err_clear();
        return;
    }
    c->state = FL_CELL_FAILED;
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
static fl_status load_extras(fl_report *r, size_t c, fl_json_num **nums, size_t *nn)
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

static fl_status load_cells(fl_report *r)
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
                r->cd[c].state = FL_CELL_DONE;
            } else {
                fl_log(FL_LOG_WARN, "%s: malformed JSON; cell counted as failed", rp);
                r->cd[c].state = FL_CELL_FAILED;
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
        if (st == FL_OK && r->cd[c].state == FL_CELL_DONE) st = load_extras(r, c, &nums[c], &nn[c]);
        /* the union of field names, in first-seen order */
        for (size_t k = 0; st == FL_OK && k < nn[c]; k++) {
            if (fl_report_field_index(r, nums[c][k].name) >= 0) continue;
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
        for (size_t k = 0; k < nn[c]; k++) r->cd[c].v[fl_report_field_index(r, nums[c][k].name)] = nums[c][k].v;
        r->n_done += r->cd[c].state == FL_CELL_DONE;
        r->n_failed += r->cd[c].state == FL_CELL_FAILED;
        r->n_missing += r->cd[c].state == FL_CELL_MISSING;
    }
    for (size_t c = 0; nums && nn && c < s->n_cells; c++) {
        for (size_t k = 0; k < nn[c]; k++) free(nums[c][k].name);
        free(nums[c]);
    }
    free(nums);
    free(nn);
    return st;
}

const char *fl_report_metric_name(const fl_report *r)
{
    return r->metric >= 0 ? r->fields[r->metric] : NULL;
}

/* A field's list for messages: "a, b, c" (or "none"). */
static void field_list(const fl_report *r, fl_buf *b)
{
    for (size_t f = 0; f < r->n_fields; f++) fl_buf_printf(b, "%s%s", f ? ", " : "", r->fields[f]);
    if (!r->n_fields) fl_buf_printf(b, "none");
}

/* 1 when field f has, in every finished cell, the value of swept key a
 * (read as a number), and some finished cell has it. */
static int repeats_axis(const fl_report *r, size_t f, size_t a)
{
    size_t seen = 0;
    for (size_t c = 0; c < r->s->n_cells; c++) {
        if (r->cd[c].state != FL_CELL_DONE) continue;
        const char *txt = fl_sweep_value(r->s, c, a);
        char *end;
        double v = strtod(txt, &end);
        if (end == txt || *end || !isfinite(r->cd[c].v[f]) || r->cd[c].v[f] != v) return 0;
        seen++;
    }
    return seen > 0;
}

/* 1 when fields f and g have the same value (or none) in every finished
 * cell, and some finished cell has a value. */
static int repeats_field(const fl_report *r, size_t f, size_t g)
{
    size_t seen = 0;
    for (size_t c = 0; c < r->s->n_cells; c++) {
        if (r->cd[c].state != FL_CELL_DONE) continue;
        double x = r->cd[c].v[f], y = r->cd[c].v[g];
        if (isfinite(x) != isfinite(y) || (isfinite(x) && x != y)) return 0;
        seen += isfinite(x) != 0;
    }
    return seen > 0;
}

/* r->cols (the shown fields) and r->dup_of from the options: --columns as
 * given, else every field but the metric's and the kept fields' repeats
 * (the metric is kept first, so it is never the one left out). */
static fl_status select_columns(fl_report *r)
{
    const fl_report_opts *o = r->o;
    r->cols = malloc((r->n_fields + 1) * sizeof *r->cols);
    r->dup_of = malloc((r->n_fields + 1) * sizeof *r->dup_of);
    if (!r->cols || !r->dup_of) return FL_ERR_NOMEM;
    for (size_t f = 0; f < r->n_fields; f++) r->dup_of[f] = -1;
    if (o->columns) {
        char *copy = fl_strdup(o->columns);
        if (!copy) return FL_ERR_NOMEM;
        fl_status st = FL_OK;
        for (char *save = NULL, *k = strtok_r(copy, " \t,", &save); k && st == FL_OK;
             k = strtok_r(NULL, " \t,", &save)) {
            long f = fl_report_field_index(r, k);
            if (f < 0) {
                fl_buf list = { 0 };
                field_list(r, &list);
                fl_err("--columns: '%s' is in no cell's results under %s (fields: %s)", k, r->dir,
                       list.data ? list.data : "?");
                fl_buf_free(&list);
                st = FL_ERR_INVALID;
            } else if (r->n_cols < r->n_fields) {
                r->cols[r->n_cols++] = (size_t)f;
            }
        }
        free(copy);
        return st;
    }
    char *kept = calloc(r->n_fields + 1, 1);
    if (!kept) return FL_ERR_NOMEM;
    for (size_t k = 0; k <= r->n_fields; k++) {
        /* the metric first, then the fields in order */
        size_t f = k == 0 ? (size_t)r->metric : k - 1;
        if (k == 0 && r->metric < 0) continue;
        if (k > 0 && (long)f == r->metric) continue;
        for (size_t a = 0; !o->all_columns && r->dup_of[f] == -1 && a < r->s->n_axes; a++)
            if (repeats_axis(r, f, a)) r->dup_of[f] = -2 - (long)a;
        for (size_t g = 0; !o->all_columns && r->dup_of[f] == -1 && g < r->n_fields; g++)
            if (kept[g] && repeats_field(r, f, g)) r->dup_of[f] = (long)g;
        kept[f] = r->dup_of[f] == -1;
    }
    for (size_t f = 0; f < r->n_fields; f++)
        if (kept[f]) r->cols[r->n_cols++] = f;
    free(kept);
    return FL_OK;
}

/* sets.txt, written by `flowlab sweep`; absent for sweeps made before it. */
static void read_sets(fl_report *r)
{
    char *p = fl_strfmt("%s/sets.txt", r->dir);
    if (p && fl_read_file(p, &r->sets, NULL) != FL_OK) {
        fl_err_clear();
        r->sets = NULL;
    }
    free(p);
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
    static const fl_report_opts none = { 0 };
    fl_report r = { .s = s, .dir = dir, .metric = -1, .o = o ? o : &none };
    fl_status st = load_cells(&r);
    if (st == FL_OK) st = fl_report_group_cells(&r, o ? o->group_by : NULL);
    const char *want = o && o->metric ? o->metric : s->metric;
    if (st == FL_OK) {
        if (want) r.metric = fl_report_field_index(&r, want);
        else if ((r.metric = fl_report_field_index(&r, "test_nll")) < 0 && r.n_fields) r.metric = 0;
        if (want && r.metric < 0 && r.n_done) {
            fl_buf list = { 0 };
            field_list(&r, &list);
            fl_err("metric '%s' is in no cell's result.json under %s (fields: %s)", want, dir,
                   list.data ? list.data : "none");
            fl_buf_free(&list);
            st = FL_ERR_INVALID;
        }
    }
    if (st == FL_OK) {
        const char *m = fl_report_metric_name(&r);
        r.direction = o && o->direction ? o->direction
                      : s->direction     ? s->direction
                      : m                ? fl_report_default_direction(m)
                                         : -1;
        r.order = malloc((r.n_groups + 1) * sizeof *r.order);
        if (!r.order) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) st = select_columns(&r);
    if (st == FL_OK) st = fl_report_pivot_make(&r);
    if (st == FL_OK) {
        read_sets(&r);
        fl_report_rank(&r);
        fl_buf md = { 0 }, table = { 0 }, csv = { 0 }, html = { 0 }, pcsv = { 0 };
        fl_report_md(&r, &md, &table);
        fl_report_csv(&r, &csv);
        if (r.pivot) fl_report_pivot_csv(&r, &pcsv);
        st = fl_report_html(&r, &html);
        if (st == FL_OK) st = write_file(dir, "report.md", &md);
        if (st == FL_OK) st = write_file(dir, "report.csv", &csv);
        if (st == FL_OK && r.pivot) st = write_file(dir, "report_pivot.csv", &pcsv);
        if (st == FL_OK) st = write_file(dir, "report.html", &html);
        if (st == FL_OK && table_out && table.data) fputs(table.data, table_out);
        fl_buf_free(&md);
        fl_buf_free(&table);
        fl_buf_free(&csv);
        fl_buf_free(&pcsv);
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
    free(r.cols);
    free(r.dup_of);
    free(r.sets);
    fl_report_pivot_free(&r);
    /* The out-of-memory paths above only return the status. */
    if (st == FL_ERR_NOMEM) fl_err("%s: out of memory writing the report (%zu cells)", dir, s->n_cells);
    return st;
}
