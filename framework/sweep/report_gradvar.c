/* report_gradvar.c - gradient signal-to-noise against k in `flowlab report`,
 * for sweeps run with [sweep] gradvar = yes (each finished cell holds
 * `flowlab gradvar`'s gradvar.json, read as gv_* fields by report.c).
 *
 * From the fields gv_<estimator>_k<K>_snr_inference and ..._snr_generative:
 * per estimator and k the mean over the finished cells that have it (each
 * cell a trained model), and per estimator the least-squares slope of
 * log SNR against log k over its k with a positive mean (theory, Rainforth
 * et al. 2018: iwae -1/2 inference, +1/2 generative; dreg +1/2 inference).
 * report.md gets a table, report.html two log-log charts (kept as
 * report_curves/snr-inference.png and snr-generative.png). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "output/plot.h"
#include "sweep/report_impl.h"

#define MAX_EST 16
#define MAX_K 32

typedef struct snr_table {
    char est[MAX_EST][64];
    size_t n_est;
    unsigned k[MAX_K]; /* ascending */
    size_t n_k;
    double snr[2][MAX_EST][MAX_K]; /* [inference, generative]: mean over cells, NAN if none */
    double slope[2][MAX_EST];      /* NAN with fewer than two k */
} snr_table;

static const char *const net[2] = { "inference", "generative" };

/* Splits "gv_<est>_k<K>_snr_<net>" into est, K and the network (0, 1);
 * 0 when the name is not such a field. */
static int parse_field(const char *name, char *est, size_t cap, unsigned *k, int *w)
{
    if (strncmp(name, "gv_", 3) != 0) return 0;
    const char *p = strstr(name, "_snr_");
    if (!p || (strcmp(p + 5, net[0]) && strcmp(p + 5, net[1]))) return 0;
    *w = strcmp(p + 5, net[0]) != 0;
    const char *u = p;
    while (u > name + 3 && u[-1] >= '0' && u[-1] <= '9') u--;
    if (u == p || u - name < 6 || u[-1] != 'k' || u[-2] != '_') return 0;
    size_t n = (size_t)(u - 2 - (name + 3));
    if (n == 0 || n >= cap) return 0;
    memcpy(est, name + 3, n);
    est[n] = 0;
    *k = (unsigned)strtoul(u, NULL, 10);
    return *k > 0;
}

/* Fills t; 0 when no cell has a gradvar SNR. */
static int collect(const fl_report *r, snr_table *t)
{
    memset(t, 0, sizeof *t);
    double sum[2][MAX_EST][MAX_K] = { { { 0 } } };
    size_t cnt[2][MAX_EST][MAX_K] = { { { 0 } } };
    for (size_t f = 0; f < r->n_fields; f++) {
        char est[64];
        unsigned k;
        int w;
        if (!parse_field(r->fields[f], est, sizeof est, &k, &w)) continue;
        size_t e = 0, j = 0;
        while (e < t->n_est && strcmp(t->est[e], est)) e++;
        if (e == t->n_est) {
            if (t->n_est == MAX_EST) continue;
            memcpy(t->est[t->n_est++], est, sizeof est);
        }
        while (j < t->n_k && t->k[j] < k) j++;
        if (j == t->n_k || t->k[j] != k) {
            if (t->n_k == MAX_K) continue;
            /* insert k at j, moving the sums along */
            memmove(t->k + j + 1, t->k + j, (t->n_k - j) * sizeof *t->k);
            for (int a = 0; a < 2; a++)
                for (size_t q = 0; q < MAX_EST; q++) {
                    memmove(&sum[a][q][j + 1], &sum[a][q][j], (t->n_k - j) * sizeof(double));
                    memmove(&cnt[a][q][j + 1], &cnt[a][q][j], (t->n_k - j) * sizeof(size_t));
                    sum[a][q][j] = 0;
                    cnt[a][q][j] = 0;
                }
            t->k[j] = k;
            t->n_k++;
        }
        for (size_t c = 0; c < r->s->n_cells; c++) {
            const fl_report_cell *cd = &r->cd[c];
            if (cd->state == FL_CELL_DONE && isfinite(cd->v[f])) {
                sum[w][e][j] += cd->v[f];
                cnt[w][e][j]++;
            }
        }
    }
    for (int a = 0; a < 2; a++)
        for (size_t e = 0; e < t->n_est; e++) {
            double sx = 0, sy = 0, sxx = 0, sxy = 0;
            size_t n = 0;
            for (size_t j = 0; j < t->n_k; j++) {
                double m = cnt[a][e][j] ? sum[a][e][j] / (double)cnt[a][e][j] : NAN;
                t->snr[a][e][j] = m;
                if (!(m > 0)) continue;
                double x = log((double)t->k[j]), y = log(m);
                sx += x, sy += y, sxx += x * x, sxy += x * y, n++;
            }
            double den = (double)n * sxx - sx * sx;
            t->slope[a][e] = n >= 2 && den > 0 ? ((double)n * sxy - sx * sy) / den : NAN;
        }
    return t->n_est > 0 && t->n_k > 0;
}

void fl_report_snr_md(const fl_report *r, fl_buf *b)
{
    snr_table t;
    if (!collect(r, &t)) return;
    fl_buf_printf(b, "\n## Gradient SNR against k (`flowlab gradvar`, [sweep] gradvar = yes)\n\n"
                     "Mean over the finished cells of |E g| / std g per network; the slope is "
                     "the least-squares fit of log SNR against log k.\n\n| estimator | network |");
    for (size_t j = 0; j < t.n_k; j++) fl_buf_printf(b, " k=%u |", t.k[j]);
    fl_buf_printf(b, " slope |\n|---|---|");
    for (size_t j = 0; j <= t.n_k; j++) fl_buf_printf(b, "---:|");
    fl_buf_printf(b, "\n");
    for (size_t e = 0; e < t.n_est; e++)
        for (int a = 0; a < 2; a++) {
            char num[64];
            fl_buf_printf(b, "| %s | %s |", t.est[e], net[a]);
            for (size_t j = 0; j < t.n_k; j++) {
                fl_report_fmt_num(num, sizeof num, t.snr[a][e][j], 4);
                fl_buf_printf(b, " %s |", num);
            }
            fl_report_fmt_num(num, sizeof num, t.slope[a][e], 3);
            fl_buf_printf(b, " %s |\n", num);
        }
}

static const fl_rgb colours[6] = { { 31, 119, 180 }, { 255, 127, 14 }, { 44, 160, 44 },
                                   { 214, 39, 40 },  { 148, 103, 189 }, { 140, 86, 75 } };

fl_status fl_report_snr_html(const fl_report *r, fl_buf *h)
{
    snr_table t;
    if (!collect(r, &t)) return FL_OK;
    fl_buf_printf(h, "<h2>Gradient SNR against k</h2>\n");
    fl_status st = FL_OK;
    for (int a = 0; a < 2 && st == FL_OK; a++) {
        double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
        for (size_t e = 0; e < t.n_est; e++)
            for (size_t j = 0; j < t.n_k; j++)
                if (t.snr[a][e][j] > 0) {
                    x0 = fmin(x0, log10(t.k[j])), x1 = fmax(x1, log10(t.k[j]));
                    y0 = fmin(y0, log10(t.snr[a][e][j])), y1 = fmax(y1, log10(t.snr[a][e][j]));
                }
        if (!(x1 >= x0)) continue;
        fl_canvas cv = { 0 };
        char *png = fl_strfmt("%s/report_curves/snr-%s.png", r->dir, net[a]);
        char *dir = fl_strfmt("%s/report_curves", r->dir);
        st = png && dir ? fl_canvas_init(&cv, 400, 240, (fl_rgb){ 255, 255, 255 }) : FL_ERR_NOMEM;
        if (st == FL_OK) st = fl_mkdirs(dir);
        if (st == FL_OK) {
            double pad = 0.05 * (y1 - y0) + 0.01;
            fl_canvas_window(&cv, 16, x0, x1, y0 - pad, y1 + pad);
            fl_canvas_frame(&cv, (fl_rgb){ 0, 0, 0 }, 5);
            for (size_t e = 0; e < t.n_est; e++) {
                double xs[MAX_K], ys[MAX_K];
                fl_real xy[2 * MAX_K];
                size_t n = 0;
                for (size_t j = 0; j < t.n_k; j++)
                    if (t.snr[a][e][j] > 0) {
                        xs[n] = log10(t.k[j]), ys[n] = log10(t.snr[a][e][j]);
                        xy[2 * n] = (fl_real)xs[n], xy[2 * n + 1] = (fl_real)ys[n];
                        n++;
                    }
                fl_canvas_polyline(&cv, xs, ys, n, colours[e % 6]);
                fl_canvas_points(&cv, xy, n, 2, 2, colours[e % 6], 1.0);
            }
            st = fl_canvas_save(&cv, png);
        }
        char *bytes = NULL;
        size_t nb = 0;
        if (st == FL_OK) st = fl_read_file(png, &bytes, &nb);
        if (st == FL_OK) {
            fl_buf_printf(h, "<figure><img alt=\"%s gradient SNR against k\" "
                             "src=\"data:image/png;base64,", net[a]);
            fl_report_base64(h, (const unsigned char *)bytes, nb);
            fl_buf_printf(h, "\"><figcaption>%s network: log10 SNR (%.3g to %.3g) against "
                             "log10 k (%.3g to %.3g), mean over cells; fitted slopes:<br>",
                          net[a], cv.y_min, cv.y_max, cv.x_min, cv.x_max);
            for (size_t e = 0; e < t.n_est; e++) {
                fl_rgb c = colours[e % 6];
                char num[64];
                fl_report_fmt_num(num, sizeof num, t.slope[a][e], 3);
                fl_buf_printf(h, "<span class=\"key\" style=\"background:#%02x%02x%02x\"></span>",
                              c.r, c.g, c.b);
                fl_report_html_text(h, t.est[e]);
                fl_buf_printf(h, " %s ", num);
            }
            fl_buf_printf(h, "</figcaption></figure>\n");
        }
        free(bytes);
        free(png);
        free(dir);
        fl_canvas_free(&cv);
    }
    return st;
}
