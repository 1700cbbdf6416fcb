/* report_tables.c - the files of `flowlab report`: report.md (the sweep's
 * --set options, a Markdown table of the shown columns, failed and missing
 * cells listed), report.csv (every field, full precision) and report.html
 * (the tables, the overlaid charts and the cells' pictures,
 * report_charts.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sweep/report_impl.h"

/* 5 significant digits for means, 2 for standard errors; integers whole. */
void fl_report_fmt_num(char *buf, size_t cap, double v, int digits)
{
    if (!isfinite(v)) snprintf(buf, cap, "-");
    else if (v == floor(v) && fabs(v) < 1e12) snprintf(buf, cap, "%.0f", v);
    else snprintf(buf, cap, "%.*g", digits, v);
}

/* mean +- se, the se left out for a single cell */
static void fmt_stat(char *buf, size_t cap, const fl_report_stat *f, const char *pm)
{
    char m[64], e[64];
    fl_report_fmt_num(m, sizeof m, f->mean, 5);
    if (!isfinite(f->se)) {
        snprintf(buf, cap, "%s", m);
        return;
    }
    fl_report_fmt_num(e, sizeof e, f->se, 2);
    snprintf(buf, cap, "%s %s %s", m, pm, e);
}

void fl_report_html_text(fl_buf *b, const char *s)
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

static void describe(const fl_report *r, fl_buf *b, int md)
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
    if (fl_report_metric_name(r))
        fl_buf_printf(b, "Sorted by %s%s%s, %s is better.", md ? "`" : "", fl_report_metric_name(r),
                      md ? "`" : "", r->direction < 0 ? "lower" : "higher");
}

/* The sweep's --set options (sets.txt) as one sentence. */
static void sets_text(const fl_report *r, fl_buf *b, int md)
{
    fl_buf_printf(b, "Options given to every cell (flowlab sweep --set): ");
    if (!r->sets) {
        fl_buf_printf(b, "not recorded (the sweep predates sets.txt).");
        return;
    }
    size_t k = 0;
    for (const char *p = r->sets; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n) {
            fl_buf_printf(b, "%s%s", k++ ? ", " : "", md ? "`" : "");
            fl_buf_write(b, p, n);
            if (md) fl_buf_printf(b, "`");
        }
        p += n + (e != NULL);
    }
    fl_buf_printf(b, "%s", k ? "." : "none.");
}

void fl_report_sets_md(const fl_report *r, fl_buf *b)
{
    sets_text(r, b, 1);
}

/* The fields left out as repeats, or nothing. */
static void dups_text(const fl_report *r, fl_buf *b, int md)
{
    const char *q = md ? "`" : "";
    size_t k = 0;
    for (size_t f = 0; f < r->n_fields; f++) {
        long d = r->dup_of[f];
        if (d == -1) continue;
        fl_buf_printf(b, "%s%s%s%s (= %s%s%s)", k++ ? ", " : "Left out as repeats of another column in "
                                                            "every cell (--all-columns shows them): ",
                      q, r->fields[f], q, q, d >= 0 ? r->fields[d] : r->s->axes[-2 - d].key, q);
    }
    if (k) fl_buf_printf(b, ".");
}

void fl_report_md(const fl_report *r, fl_buf *b, fl_buf *table)
{
    const fl_sweep *s = r->s;
    fl_buf_printf(b, "# Sweep report: %s\n\n", r->dir);
    describe(r, b, 1);
    fl_buf_printf(b, "\n\n");
    sets_text(r, b, 1);
    fl_buf_printf(b, "\n\n");
    size_t before = b->len;
    dups_text(r, b, 1);
    if (b->len > before) fl_buf_printf(b, "\n\n");
    /* the table, also printed on stdout */
    fl_buf_printf(table, "| rank |");
    for (size_t a = 0; a < s->n_axes; a++)
        if (r->in_group[a]) fl_buf_printf(table, " %s |", s->axes[a].key);
    fl_buf_printf(table, " n | failed |");
    for (size_t i = 0; i < r->n_cols; i++) fl_buf_printf(table, " %s |", r->fields[r->cols[i]]);
    fl_buf_printf(table, "\n|---:|");
    for (size_t a = 0; a < s->n_axes; a++)
        if (r->in_group[a]) fl_buf_printf(table, "---|");
    fl_buf_printf(table, "---:|---:|");
    for (size_t i = 0; i < r->n_cols; i++) fl_buf_printf(table, "---:|");
    fl_buf_printf(table, "\n");
    for (size_t k = 0; k < r->n_groups; k++) {
        const fl_report_group *g = &r->g[r->order[k]];
        int best = k == 0 && r->metric >= 0 && g->f[r->metric].n > 0;
        fl_buf_printf(table, "| %zu%s |", k + 1, best ? " (best)" : "");
        for (size_t a = 0; a < s->n_axes; a++)
            if (r->in_group[a]) {
                fl_buf_printf(table, " ");
                md_text(table, fl_sweep_value(s, g->first, a));
                fl_buf_printf(table, " |");
            }
        fl_buf_printf(table, " %zu | %zu |", g->n_done, g->n_failed);
        for (size_t i = 0; i < r->n_cols; i++) {
            size_t f = r->cols[i];
            char cell[160];
            fmt_stat(cell, sizeof cell, &g->f[f], "±");
            if (best && (long)f == r->metric) fl_buf_printf(table, " **%s** |", cell);
            else fl_buf_printf(table, " %s |", cell);
        }
        fl_buf_printf(table, "\n");
    }
    if (r->pivot) {
        fl_buf_printf(table, "\n");
        fl_report_pivot_md(r, table);
    }
    fl_buf_write(b, table->data, table->len);
    fl_report_snr_md(r, b);
    if (r->n_failed) {
        fl_buf_printf(b, "\n## Failed cells\n\n| cell | exit status | error |\n|---|---:|---|\n");
        for (size_t c = 0; c < s->n_cells; c++) {
            const fl_report_cell *cd = &r->cd[c];
            if (cd->state != FL_CELL_FAILED) continue;
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
            if (r->cd[c].state == FL_CELL_MISSING) {
                fl_buf_printf(b, "- ");
                md_text(b, s->cells[c].name);
                fl_buf_printf(b, "\n");
            }
    }
}

void fl_report_csv(const fl_report *r, fl_buf *b)
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
        const fl_report_group *g = &r->g[r->order[k]];
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


fl_status fl_report_html(const fl_report *r, fl_buf *h)
{
    const fl_sweep *s = r->s;
    fl_buf_printf(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                     "<title>Sweep report: ");
    fl_report_html_text(h, r->dir);
    fl_buf_printf(h,
                  "</title>\n<style>\n"
                  "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:90em}\n"
                  "table{border-collapse:collapse;font-size:0.9em}\n"
                  "th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}\n"
                  "th{background:#f0f0f0}td.key{text-align:left;font-family:monospace}\n"
                  "tr.best td{background:#e6f4e6;font-weight:bold}\n"
                  "figure{display:inline-block;margin:0.5em;vertical-align:top}\n"
                  "div.cell{display:inline-block;vertical-align:top;margin:0.4em;font-size:0.8em}\n"
                  "div.cell img{width:160px;display:block}\n"
                  "figcaption{font-size:0.8em}\n"
                  "span.key{display:inline-block;width:0.8em;height:0.8em;margin:0 0.2em}\n"
                  "</style></head><body>\n<h1>Sweep report: ");
    fl_report_html_text(h, r->dir);
    fl_buf_printf(h, "</h1>\n<p>From <code>");
    fl_report_html_text(h, s->path);
    fl_buf_printf(h, "</code>. ");
    fl_buf d = { 0 };
    describe(r, &d, 0);
    fl_report_html_text(h, d.data);
    fl_buf_free(&d);
    fl_buf_printf(h, "</p>\n<p>");
    fl_buf t = { 0 };
    sets_text(r, &t, 0);
    fl_report_html_text(h, t.data);
    fl_buf_free(&t);
    fl_buf_printf(h, "</p>\n");
    dups_text(r, &t, 0);
    if (t.data) {
        fl_buf_printf(h, "<p>");
        fl_report_html_text(h, t.data);
        fl_buf_printf(h, "</p>\n");
    }
    fl_buf_free(&t);
    fl_buf_printf(h, "<table>\n<tr><th>rank</th>");
    for (size_t a = 0; a < s->n_axes; a++)
        if (r->in_group[a]) {
            fl_buf_printf(h, "<th>");
            fl_report_html_text(h, s->axes[a].key);
            fl_buf_printf(h, "</th>");
        }
    fl_buf_printf(h, "<th>n</th><th>failed</th>");
    for (size_t i = 0; i < r->n_cols; i++) {
        fl_buf_printf(h, "<th>");
        fl_report_html_text(h, r->fields[r->cols[i]]);
        fl_buf_printf(h, "</th>");
    }
    fl_buf_printf(h, "</tr>\n");
    for (size_t k = 0; k < r->n_groups; k++) {
        const fl_report_group *g = &r->g[r->order[k]];
        int best = k == 0 && r->metric >= 0 && g->f[r->metric].n > 0;
        fl_buf_printf(h, "<tr%s><td>%zu%s</td>", best ? " class=\"best\"" : "", k + 1,
                      best ? " &#9733;" : "");
        for (size_t a = 0; a < s->n_axes; a++)
            if (r->in_group[a]) {
                fl_buf_printf(h, "<td class=\"key\">");
                fl_report_html_text(h, fl_sweep_value(s, g->first, a));
                fl_buf_printf(h, "</td>");
            }
        fl_buf_printf(h, "<td>%zu</td><td>%zu</td>", g->n_done, g->n_failed);
        for (size_t i = 0; i < r->n_cols; i++) {
            char cell[160];
            fmt_stat(cell, sizeof cell, &g->f[r->cols[i]], "&plusmn;");
            fl_buf_printf(h, "<td>%s</td>", cell);
        }
        fl_buf_printf(h, "</tr>\n");
    }
    fl_buf_printf(h, "</table>\n");
    if (r->n_failed) {
        fl_buf_printf(h, "<h2>Failed cells</h2>\n<table>\n<tr><th>cell</th><th>exit status</th>"
                         "<th>error</th></tr>\n");
        for (size_t c = 0; c < s->n_cells; c++) {
            const fl_report_cell *cd = &r->cd[c];
            if (cd->state != FL_CELL_FAILED) continue;
            fl_buf_printf(h, "<tr><td class=\"key\">");
            fl_report_html_text(h, s->cells[c].name);
            fl_buf_printf(h, "</td><td>%d</td><td class=\"key\">", cd->exit_status);
            fl_report_html_text(h, cd->error ? cd->error : "");
            fl_buf_printf(h, "</td></tr>\n");
        }
        fl_buf_printf(h, "</table>\n");
    }
    fl_status st = r->pivot ? fl_report_pivot_html(r, h) : FL_OK;
    if (st == FL_OK) st = fl_report_snr_html(r, h);
    fl_buf_printf(h, "<h2>Training curves</h2>\n");
    if (st == FL_OK) st = fl_report_charts(r, h);
    fl_report_cell_pictures(r, h);
    fl_buf_printf(h, "</body></html>\n");
    return st;
}

