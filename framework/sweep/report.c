/* report.c - `flowlab report`'s entry point: reads every cell's results
 * (result.json, and a finished cell's eval.json and gradvar.json under a
 * prefix; failed.txt for a failed one), groups and ranks them
 * (report_stats.c), and writes report.md, report.csv and report.html
 * (report_tables.c, report_charts.c). */
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

/* A report file from its buffer (FL_ERR_NOMEM when the buffer lost text). */
static fl_status write_file(const char *dir, const char *file, const fl_buf *b)
{
    if (b->failed) return FL_ERR_NOMEM;
    return fl_rundir_write(dir, file, b->data ? b->data : "", b->len);
}

fl_status fl_report_write(const char *dir, const fl_sweep *s, const fl_report_opts *o,
                          FILE *table_out)
{
    fl_report r = { .s = s, .dir = dir, .metric = -1 };
    fl_status st = load_cells(&r);
    if (st == FL_OK) st = fl_report_group_cells(&r, o ? o->group_by : NULL);
    const char *want = o && o->metric ? o->metric : s->metric;
    if (st == FL_OK) {
        if (want) r.metric = fl_report_field_index(&r, want);
        else if ((r.metric = fl_report_field_index(&r, "test_nll")) < 0 && r.n_fields) r.metric = 0;
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
        const char *m = fl_report_metric_name(&r);
        r.direction = o && o->direction ? o->direction
                      : s->direction     ? s->direction
                      : m                ? fl_report_default_direction(m)
                                         : -1;
        r.order = malloc((r.n_groups + 1) * sizeof *r.order);
        if (!r.order) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) {
        fl_report_rank(&r);
        fl_buf md = { 0 }, table = { 0 }, csv = { 0 }, html = { 0 };
        fl_report_md(&r, &md, &table);
        fl_report_csv(&r, &csv);
        st = fl_report_html(&r, &html);
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
