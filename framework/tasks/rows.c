/* rows.c - CSV and .npy readers for a user's points (rows.h). */
#include "tasks/rows.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void fl_rows_free(fl_rows *r)
{
    if (!r) return;
    fl_free(r->x);
    memset(r, 0, sizeof *r);
}

static uint64_t le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* The value of 'key': in the header dict (a Python literal), or NULL. */
static const char *dict_value(const char *h, const char *key)
{
    char q1[32], q2[32];
    snprintf(q1, sizeof q1, "'%s'", key);
    snprintf(q2, sizeof q2, "\"%s\"", key);
    const char *p = strstr(h, q1);
    if (!p) p = strstr(h, q2);
    if (!p) return NULL;
    p += strlen(q1);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

fl_status fl_rows_read_npy(const char *path, fl_rows *out)
{
    memset(out, 0, sizeof *out);
    char *data = NULL;
    size_t len = 0;
    fl_status st = fl_read_file(path, &data, &len);
    if (st != FL_OK) return st;
    const unsigned char *u = (const unsigned char *)data;
    const char *why = NULL;
    char whybuf[160];
    uint64_t hlen = 0, hoff = 0;
    if (len < 10 || memcmp(data, "\x93NUMPY", 6) != 0) why = "not a .npy file (no \\x93NUMPY magic)";
    else if (u[6] == 1) hlen = le(u + 8, 2), hoff = 10;
    else if (u[6] == 2 || u[6] == 3) {
        if (len < 12) why = "truncated header";
        else hlen = le(u + 8, 4), hoff = 12;
    } else {
        snprintf(whybuf, sizeof whybuf, "format version %u.%u (1.0, 2.0 and 3.0 are read)", u[6],
                 u[7]);
        why = whybuf;
    }
    if (!why && hoff + hlen > len) why = "truncated header";
    char *h = NULL;
    if (!why) {
        h = fl_strndup(data + hoff, (size_t)hlen);
        if (!h) st = FL_ERR_NOMEM;
    }
    int esize = 0, isbyte = 0;
    uint64_t n = 0, dim = 1;
    if (!why && h) {
        const char *d = dict_value(h, "descr"), *f = dict_value(h, "fortran_order"),
                   *s = dict_value(h, "shape");
        if (!d || !f || !s) why = "header lacks descr, fortran_order or shape";
        else if (strncmp(d, "'<f4'", 5) == 0 || strncmp(d, "\"<f4\"", 5) == 0) esize = 4;
        else if (strncmp(d, "'<f8'", 5) == 0 || strncmp(d, "\"<f8\"", 5) == 0) esize = 8;
        else if (strncmp(d + 1, "|u1", 3) == 0 || strncmp(d + 1, "<u1", 3) == 0 ||
                 strncmp(d + 1, ">u1", 3) == 0)
            esize = 1, isbyte = 1;
        if (!why && !esize) {
            size_t k = strcspn(d, ",}");
            snprintf(whybuf, sizeof whybuf,
                     "dtype %.*s (little-endian float32 '<f4', float64 '<f8' or uint8 '|u1' "
                     "are read)",
                     (int)(k < 40 ? k : 40), d);
            why = whybuf;
        }
        if (!why && strncmp(f, "False", 5) != 0)
            why = "Fortran order (save a C-ordered array: np.ascontiguousarray)";
        if (!why) {
            /* (n,) or (n, dim) */
            const char *p = s;
            char *end;
            if (*p++ != '(') why = "unreadable shape";
            while (!why && *p == ' ') p++;
            if (!why) {
                errno = 0;
                n = strtoull(p, &end, 10);
                if (end == p || errno) why = "unreadable shape (a 0-d array?)";
                p = end;
            }
            while (!why && (*p == ' ' || *p == ',')) p++;
            if (!why && *p != ')') {
                errno = 0;
                dim = strtoull(p, &end, 10);
                if (end == p || errno) why = "unreadable shape";
                p = end;
                while (!why && (*p == ' ' || *p == ',')) p++;
                if (!why && *p != ')') why = "an array of more than 2 dimensions (give n x dim)";
            }
        }
        if (!why && (dim == 0 || dim > (1u << 30))) why = "a row width of 0 or above 2^30";
    }
    if (!why && st == FL_OK) {
        const uint64_t want = n * dim * (uint64_t)esize, have = len - hoff - hlen;
        if (have != want) {
            snprintf(whybuf, sizeof whybuf,
                     "%llu bytes of data, its header (shape %llu x %llu) says %llu",
                     (unsigned long long)have, (unsigned long long)n, (unsigned long long)dim,
                     (unsigned long long)want);
            why = whybuf;
        }
    }
    if (!why && st == FL_OK) {
        out->x = fl_alloc((n > 0 ? n * dim : 1) * sizeof(fl_real));
        if (!out->x) st = FL_ERR_NOMEM;
    }
    if (!why && st == FL_OK) {
        const unsigned char *p = u + hoff + hlen;
        for (uint64_t i = 0; i < n * dim; i++, p += esize) {
            double v;
            if (esize == 1) v = p[0];
            else if (esize == 4) {
                uint32_t b = (uint32_t)le(p, 4);
                float fv;
                memcpy(&fv, &b, 4);
                v = fv;
            } else {
                uint64_t b = le(p, 8);
                memcpy(&v, &b, 8);
            }
            out->x[i] = (fl_real)v;
        }
        out->n = n;
        out->dim = (uint32_t)dim;
        out->bytes = isbyte;
    }
    free(h);
    free(data);
    if (why) {
        fl_err("%s: %s", path, why);
        return FL_ERR_FORMAT;
    }
    if (st != FL_OK) fl_rows_free(out);
    return st;
}

/* Parses one CSV line's fields into vals (cap of them); the count, or -1
 * with *bad at the first field that is not a number. */
static long parse_line(char *line, double *vals, long cap, long *bad)
{
    long k = 0;
    char *p = line;
    for (;;) {
        char *end;
        while (*p == ' ' || *p == '\t') p++;
        errno = 0;
        double v = strtod(p, &end);
        char *q = end;
        while (*q == ' ' || *q == '\t' || *q == '\r') q++;
        if (end == p || errno == ERANGE || (*q != ',' && *q != 0)) {
            *bad = k;
            return -1;
        }
        if (vals && k < cap) vals[k] = v;
        k++;
        if (*q == 0) return k;
        p = q + 1;
    }
}

fl_status fl_rows_read_csv(const char *path, fl_rows *out)
{
    memset(out, 0, sizeof *out);
    char *data = NULL;
    size_t len = 0;
    fl_status st = fl_read_file(path, &data, &len);
    if (st != FL_OK) return st;
    /* pass 1: count rows and the width; pass 2: values */
    uint64_t rows = 0, cap = 0;
    long dim = -1;
    double *tmp = NULL;
    for (int pass = 0; pass < 2 && st == FL_OK; pass++) {
        char *p = data;
        uint64_t line = 0, r = 0;
        while (*p && st == FL_OK) {
            char *nl = strchr(p, '\n');
            if (nl) *nl = 0;
            line++;
            char *s = p;
            while (*s == ' ' || *s == '\t' || *s == '\r') s++;
            if (*s) {
                long bad = 0;
                long k = parse_line(s, pass ? tmp : NULL, dim, &bad);
                if (k < 0 && line == 1 && r == 0) {
                    /* a header line of column names */
                } else if (k < 0) {
                    fl_err("%s:%llu: column %ld is not a number", path, (unsigned long long)line,
                           bad + 1);
                    st = FL_ERR_FORMAT;
                } else if (dim >= 0 && k != dim) {
                    fl_err("%s:%llu: %ld values, the rows before have %ld", path,
                           (unsigned long long)line, k, dim);
                    st = FL_ERR_FORMAT;
                } else {
                    dim = k;
                    if (pass) {
                        if (!tmp) break;
                        for (long j = 0; j < k; j++) out->x[r * (uint64_t)k + j] = (fl_real)tmp[j];
                    }
                    r++;
                }
            }
            if (nl) *nl = '\n';
            p = nl ? nl + 1 : p + strlen(p);
        }
        if (pass == 0 && st == FL_OK) {
            rows = r;
            if (rows == 0) {
                fl_err("%s: no rows of numbers", path);
                st = FL_ERR_FORMAT;
                break;
            }
            cap = rows * (uint64_t)dim;
            out->x = fl_alloc(cap * sizeof(fl_real));
            tmp = malloc((size_t)dim * sizeof *tmp);
            if (!out->x || !tmp) st = FL_ERR_NOMEM;
        }
    }
    free(tmp);
    free(data);
    if (st != FL_OK) {
        fl_rows_free(out);
        return st;
    }
    out->n = rows;
    out->dim = (uint32_t)dim;
    return FL_OK;
}

fl_status fl_rows_read(const char *path, fl_rows *out)
{
    size_t l = strlen(path);
    if (l >= 4 && strcmp(path + l - 4, ".npy") == 0) return fl_rows_read_npy(path, out);
    return fl_rows_read_csv(path, out);
}
