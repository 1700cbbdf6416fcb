/* csv.c - tabular data from CSV files, for density estimation.
 *
 * Rows of numbers separated by commas (or blanks); '#' starts a comment
 * line; a first line that is not numeric is a header. The training file
 * may be split into train/valid/test by a fixed seeded shuffle (the same
 * for every experiment seed, so all seeds are scored on the same rows), or
 * valid and test come from their own files. Columns are standardised with
 * the training split's mean and standard deviation; the log-determinant of
 * that map is logged so NLLs can be converted to the original units. */
#define _POSIX_C_SOURCE 200809L /* getline */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <flowlab/flowlab.h>

typedef struct table {
    double *v;       /* rows x cols */
    uint64_t *line;  /* rows: each row's line in its file, for messages */
    uint64_t rows;
    uint32_t cols;
} table;

typedef struct csv {
    table split[3];
    double *mean, *sd;
    uint32_t dim;
} csv;

static const fl_key keys[] = {
    { "path", FL_KEY_STRING, NULL, 0, 0, NULL,
      "CSV file of the training rows (relative to the experiment file's folder)" },
    { "valid_path", FL_KEY_STRING, "", 0, 0, NULL,
      "CSV file of the validation rows; empty = split off the training file" },
    { "test_path", FL_KEY_STRING, "", 0, 0, NULL,
      "CSV file of the test rows; empty = split off the training file" },
    { "valid_fraction", FL_KEY_REAL, "0.1", 0, 0.9, NULL,
      "share of the training file held out for validation when valid_path is empty" },
    { "test_fraction", FL_KEY_REAL, "0.1", 0, 0.9, NULL,
      "share of the training file held out for testing when test_path is empty" },
    { "standardize", FL_KEY_BOOL, "true", 0, 0, NULL,
      "z-score every column with the training split's mean and standard deviation" },
};

static void table_free(table *t)
{
    free(t->v);
    free(t->line);
    t->v = NULL;
    t->line = NULL;
}

/* Values a model can hold: rows are standardised in double, but read as
 * fl_real, and a value past its largest would become infinite. Values
 * below its smallest normal number are rounded toward 0 like any value is
 * rounded to its precision (strtod's underflow included). */
#define CSV_REAL_MAX (sizeof(fl_real) == sizeof(float) ? (double)FLT_MAX : DBL_MAX)

enum { CSV_NAN = 1, CSV_BIG = 2 };

/* Parses one line into `out` (at most `cap` values); returns the count,
 * or -1-k when field k is bad, *why saying how (CSV_NAN: not a number,
 * CSV_BIG: too large for fl_real). */
static long parse_line(char *s, double *out, size_t cap, int *why)
{
    long n = 0;
    char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p || *p == '\n' || *p == '\r') return n;
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        *why = CSV_NAN;
        if (end == p ||
            !(*end == 0 || *end == ',' || *end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            return -1 - n;
        /* ERANGE with a finite result is an underflow: rounded, kept */
        if (!isfinite(v) && errno != ERANGE) return -1 - n; /* "nan", "inf" */
        *why = CSV_BIG;
        if (!isfinite(v) || fabs(v) > CSV_REAL_MAX) return -1 - n;
        if ((size_t)n < cap) out[n] = v;
        n++;
        p = end;
    }
}

/* The field (1-based) that byte `at` of `s` falls in. */
static long field_at(const char *s, size_t at)
{
    long k = 0;
    int in = 0;
    for (size_t i = 0; i <= at; i++) {
        int sep = s[i] == ' ' || s[i] == '\t' || s[i] == ',';
        if (!sep && !in) k++;
        in = !sep;
    }
    return k ? k : 1;
}

static void bad_field(const fl_host *h, fl_ctx *cx, const char *path, size_t lineno, long k,
                      int why)
{
    if (why == CSV_BIG)
        h->error(cx, "%s:%zu: field %ld is too large for fl_real (%s, at most %.9g)", path, lineno,
                 k, FL_REAL_NAME, CSV_REAL_MAX);
    else h->error(cx, "%s:%zu: field %ld is not a number", path, lineno, k);
}

static fl_status load(const fl_host *h, fl_ctx *cx, const char *path, table *t)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        h->error(cx, "cannot open %s: %s", path, strerror(errno));
        return FL_ERR_IO;
    }
    size_t cap_rows = 1024, lineno = 0, cap_line = 0;
    char *line = NULL;
    double *row = NULL;
    memset(t, 0, sizeof *t);
    t->v = malloc(cap_rows * sizeof(double) * 1);
    t->line = malloc(cap_rows * sizeof *t->line);
    fl_status st = t->v && t->line ? FL_OK : FL_ERR_NOMEM;
    int first = 1, why = 0;
    ssize_t got;
    errno = 0;
    while (st == FL_OK && (got = getline(&line, &cap_line, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        /* A NUL would end the line early, dropping the fields after it. */
        const char *nul = memchr(line, 0, len);
        if (nul) {
            h->error(cx, "%s:%zu: field %ld contains a NUL byte", path, lineno,
                     field_at(line, (size_t)(nul - line)));
            st = FL_ERR_FORMAT;
            break;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || !*p) continue;
        if (!t->cols) {
            /* Count fields of the first data-or-header line. */
            long n = parse_line(p, NULL, 0, &why);
            if (n < 0) {
                if (first && why == CSV_NAN) { /* a header */
                    first = 0;
                    continue;
                }
                bad_field(h, cx, path, lineno, -n, why);
                st = FL_ERR_FORMAT;
                break;
            }
            if (n == 0) continue;
            t->cols = (uint32_t)n;
            free(t->v);
            t->v = malloc(cap_rows * t->cols * sizeof(double));
            row = malloc(t->cols * sizeof(double));
            if (!t->v || !row) {
                st = FL_ERR_NOMEM;
                break;
            }
        }
        first = 0;
        long n = parse_line(p, row, t->cols, &why);
        if (n < 0) {
            bad_field(h, cx, path, lineno, -n, why);
            st = FL_ERR_FORMAT;
            break;
        }
        if ((uint32_t)n != t->cols) {
            h->error(cx, "%s:%zu: %ld fields, expected %u like the first row", path, lineno, n,
                     t->cols);
            st = FL_ERR_FORMAT;
            break;
        }
        if (t->rows == cap_rows) {
            cap_rows *= 2;
            double *nv = realloc(t->v, cap_rows * t->cols * sizeof(double));
            if (nv) t->v = nv;
            uint64_t *nl = nv ? realloc(t->line, cap_rows * sizeof *nl) : NULL;
            if (!nl) {
                st = FL_ERR_NOMEM;
                break;
            }
            t->line = nl;
        }
        memcpy(t->v + t->rows * t->cols, row, t->cols * sizeof(double));
        t->line[t->rows] = lineno;
        t->rows++;
    }
    if (st == FL_OK && ferror(f)) {
        h->error(cx, "cannot read %s: %s", path, strerror(errno));
        st = FL_ERR_IO;
    }
    if (st == FL_OK && t->rows == 0) {
        h->error(cx, "%s: no data rows", path);
        st = FL_ERR_FORMAT;
    }
    if (st == FL_ERR_NOMEM) h->error(cx, "%s: out of memory", path);
    fclose(f);
    free(line);
    free(row);
    if (st != FL_OK) table_free(t);
    return st;
}

/* Moves rows idx[0..n) of `src` into a new table. */
static fl_status take(const table *src, const uint64_t *idx, uint64_t n, table *dst)
{
    dst->cols = src->cols;
    dst->rows = n;
    dst->v = malloc((n ? n : 1) * src->cols * sizeof(double));
    dst->line = malloc((n ? n : 1) * sizeof *dst->line);
    if (!dst->v || !dst->line) return FL_ERR_NOMEM;
    for (uint64_t i = 0; i < n; i++) {
        memcpy(dst->v + i * src->cols, src->v + idx[i] * src->cols, src->cols * sizeof(double));
        dst->line[i] = src->line[idx[i]];
    }
    return FL_OK;
}

static void destroy(void *self)
{
    csv *c = self;
    if (!c) return;
    for (int s = 0; s < 3; s++) table_free(&c->split[s]);
    free(c->mean);
    free(c->sd);
    free(c);
}

static fl_status create(const fl_host *h, fl_ctx *cx, fl_dataset_info *info, void **self)
{
    csv *c = calloc(1, sizeof *c);
    if (!c) return FL_ERR_NOMEM;
    const char *paths[3] = { h->cfg_str(cx, "path"), h->cfg_str(cx, "valid_path"),
                             h->cfg_str(cx, "test_path") };
    double frac[3] = { 0, h->cfg_real(cx, "valid_fraction"), h->cfg_real(cx, "test_fraction") };
    table all;
    fl_status st = load(h, cx, paths[0], &all);
    if (st != FL_OK) {
        free(c);
        return st;
    }
    /* Rows held out of the training file, by a shuffle that does not
     * depend on the experiment seed. */
    uint64_t N = all.rows, hold[3] = { 0, 0, 0 };
    for (int s = 1; s < 3; s++)
        if (!paths[s][0]) hold[s] = (uint64_t)floor(frac[s] * (double)N);
    if (hold[1] + hold[2] >= N) {
        h->error(cx, "%s: %llu rows leave none for training after the held-out fractions",
                 paths[0], (unsigned long long)N);
        table_free(&all);
        free(c);
        return FL_ERR_INVALID;
    }
    uint64_t *perm = malloc(N * sizeof *perm);
    if (!perm) st = FL_ERR_NOMEM;
    else {
        fl_rng_key key = fl_rng_key_make(0, "csv-split");
        for (uint64_t i = 0; i < N; i++) perm[i] = i;
        for (uint64_t i = N - 1; i > 0; i--) {
            fl_real u;
            fl_rng_uniform(key, 0, i, 1, &u);
            uint64_t j = (uint64_t)(u * (fl_real)(i + 1));
            if (j > i) j = i;
            uint64_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        /* Held-out rows first (valid, then test), training rows in file
         * order for readability of the split. */
        uint64_t at = 0;
        st = take(&all, perm + at, hold[1], &c->split[FL_SPLIT_VALID]);
        at += hold[1];
        if (st == FL_OK) st = take(&all, perm + at, hold[2], &c->split[FL_SPLIT_TEST]);
        at += hold[2];
        if (st == FL_OK) st = take(&all, perm + at, N - at, &c->split[FL_SPLIT_TRAIN]);
        free(perm);
    }
    table_free(&all);
    for (int s = 1; s < 3 && st == FL_OK; s++) {
        if (!paths[s][0]) continue;
        table_free(&c->split[s]);
        st = load(h, cx, paths[s], &c->split[s]);
        if (st == FL_OK && c->split[s].cols != c->split[0].cols) {
            h->error(cx, "%s has %u columns, the training file %u", paths[s], c->split[s].cols,
                     c->split[0].cols);
            st = FL_ERR_FORMAT;
        }
    }
    if (st != FL_OK) {
        if (st == FL_ERR_NOMEM) h->error(cx, "out of memory");
        destroy(c);
        return st;
    }
    c->dim = c->split[0].cols;
    c->mean = calloc(c->dim, sizeof *c->mean);
    c->sd = malloc(c->dim * sizeof *c->sd);
    if (!c->mean || !c->sd) {
        destroy(c);
        return FL_ERR_NOMEM;
    }
    for (uint32_t j = 0; j < c->dim; j++) c->sd[j] = 1;
    if (h->cfg_bool(cx, "standardize")) {
        const table *t = &c->split[0];
        double logdet = 0;
        for (uint32_t j = 0; j < c->dim; j++) {
            double s = 0, s2 = 0;
            for (uint64_t i = 0; i < t->rows; i++) s += t->v[i * c->dim + j];
            double m = s / (double)t->rows;
            for (uint64_t i = 0; i < t->rows; i++) {
                double d = t->v[i * c->dim + j] - m;
                s2 += d * d;
            }
            double sd = sqrt(s2 / (double)t->rows);
            /* the double build reads values up to DBL_MAX: their sum or
             * squared spread can overflow double */
            if (!isfinite(m) || !isfinite(sd)) {
                h->error(cx, "%s: column %u: its mean or standard deviation overflows double "
                         "(values too large to standardise; scale the column down, or set "
                         "[data] standardize = false)",
                         paths[0], j + 1);
                destroy(c);
                return FL_ERR_FORMAT;
            }
            c->mean[j] = m;
            c->sd[j] = sd > 0 ? sd : 1; /* a constant column stays centred */
            logdet -= log(c->sd[j]);
        }
        /* A value that fits fl_real raw may not once standardised: a
         * nearly constant training column (a tiny standard deviation) and
         * a valid or test value away from its mean. */
        for (int sp = 0; sp < 3; sp++) {
            const table *u = &c->split[sp];
            const char *file = paths[sp][0] ? paths[sp] : paths[0];
            for (uint64_t i = 0; i < u->rows; i++)
                for (uint32_t j = 0; j < c->dim; j++) {
                    double x = u->v[i * c->dim + j], z = (x - c->mean[j]) / c->sd[j];
                    if (isfinite(z) && fabs(z) <= CSV_REAL_MAX) continue;
                    h->error(cx, "%s:%llu: field %u (%.9g) standardises to %.3g, too large for "
                             "fl_real (%s, at most %.9g): the training rows' column %u has "
                             "mean %.9g and standard deviation %.3g (nearly constant; drop the "
                             "column, or set [data] standardize = false)",
                             file, (unsigned long long)u->line[i], j + 1, x, z, FL_REAL_NAME,
                             CSV_REAL_MAX, j + 1, c->mean[j], c->sd[j]);
                    destroy(c);
                    return FL_ERR_FORMAT;
                }
        }
        h->log(cx, FL_LOG_INFO,
               "standardised %u columns with the training split's statistics; NLL in the "
               "original units = NLL here - (%.6f)",
               c->dim, logdet);
    }
    info->dim = c->dim;
    info->drawn = 0;
    for (int s = 0; s < 3; s++) info->n[s] = c->split[s].rows;
    *self = c;
    return FL_OK;
}

static fl_status read_rows(void *self, fl_split split, const uint64_t *rows, uint32_t n,
                           fl_real *out)
{
    const csv *c = self;
    const table *t = &c->split[split];
    for (uint32_t i = 0; i < n; i++) {
        if (rows[i] >= t->rows) return FL_ERR_INVALID;
        const double *src = t->v + rows[i] * c->dim;
        for (uint32_t j = 0; j < c->dim; j++)
            out[(size_t)i * c->dim + j] = (fl_real)((src[j] - c->mean[j]) / c->sd[j]);
    }
    return FL_OK;
}

static const fl_dataset_class csv_class = {
    .base = { sizeof(fl_dataset_class), "csv",
              "tabular rows from CSV files, standardised with the training statistics", keys,
              sizeof keys / sizeof keys[0] },
    .flags = 0,
    .create = create,
    .destroy = destroy,
    .draw = NULL,
    .read = read_rows,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_DATASET, &csv_class.base);
}

FL_PLUGIN("datasets-csv", "1.0.0", init)
