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

#include "output/chart.h"
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
        /* log10 k and log10 SNR of each estimator: points with a positive mean */
        double xs[MAX_EST][MAX_K], ys[MAX_EST][MAX_K];
        char label[MAX_EST][96];
        fl_series ser[MAX_EST];
        size_t ns = 0;
        for (size_t e = 0; e < t.n_est; e++) {
            size_t n = 0;
            for (size_t j = 0; j < t.n_k; j++)
                if (t.snr[a][e][j] > 0) {
                    xs[e][n] = log10(t.k[j]), ys[e][n] = log10(t.snr[a][e][j]);
                    n++;
                }
            if (!n) continue;
            char num[64];
            fl_report_fmt_num(num, sizeof num, t.slope[a][e], 3);
            snprintf(label[e], sizeof label[e], "%s (slope %s)", t.est[e], num);
            ser[ns++] = (fl_series){ .label = label[e], .x = xs[e], .y = ys[e], .n = n,
                                     .colour = colours[e % 6], .markers = 1 };
        }
        if (!ns) continue;
        char title[96];
        snprintf(title, sizeof title, "Gradient SNR of the %s network, mean over cells", net[a]);
        const fl_line_chart ch = { .title = title, .xlabel = "log10 k (samples per point)",
                                   .ylabel = "log10 SNR", .series = ser, .n_series = ns,
                                   .w = 560, .h = 360, .x_min = NAN, .x_max = NAN,
                                   .y_min = NAN, .y_max = NAN };
        char *png = fl_strfmt("%s/report_curves/snr-%s.png", r->dir, net[a]);
        char *svg = fl_strfmt("%s/report_curves/snr-%s.svg", r->dir, net[a]);
        char *dir = fl_strfmt("%s/report_curves", r->dir);
        st = png && svg && dir ? fl_mkdirs(dir) : FL_ERR_NOMEM;
        if (st == FL_OK) st = fl_chart_lines(&ch, png, svg, NULL);
        char *bytes = NULL;
        size_t nb = 0;
        if (st == FL_OK) st = fl_read_file(png, &bytes, &nb);
        if (st == FL_OK) {
            fl_buf_printf(h, "<figure><img alt=\"%s gradient SNR against k\" "
                             "src=\"data:image/png;base64,", net[a]);
            fl_report_base64(h, (const unsigned char *)bytes, nb);
            fl_buf_printf(h, "\"><figcaption>%s network: log10 SNR against log10 k, one line per "
                             "estimator with its fitted slope in the legend "
                             "(report_curves/snr-%s.svg)</figcaption></figure>\n",
                          net[a], net[a]);
        }
        free(bytes);
        free(png);
        free(svg);
        free(dir);
    }
    return st;
}
