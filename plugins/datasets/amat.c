/* amat.c - binary images from .amat text files (binarized MNIST).
 *
 * An .amat file holds one image per line: height*width values, each 0 or 1,
 * separated by blanks, rows of the image in row-major order. Files may be
 * gzip-compressed (zlib's gzread reads plain files as well). Images are
 * kept as bytes and converted to fl_real rows only in `read`, so the 70,000
 * binarized MNIST images take 55 MB instead of 220 (float) or 440 (double).
 *
 * Two data sets:
 *   amat             any three files (keys train, valid, test)
 *   binarized-mnist  the standard static binarization (Larochelle & Murray
 *                    2011), 50,000 / 10,000 / 10,000 images of 28x28, from
 *                    one folder (key dir)
 * All splits are finite; nothing is random. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include <flowlab/flowlab.h>

#include "gzfile.h"

typedef struct amat_split {
    uint8_t *px;      /* rows x dim, each 0 or 1 */
    uint64_t rows;
} amat_split;

typedef struct amat {
    amat_split split[3];
    uint32_t dim;
} amat;

static const char *const split_names[3] = { "train", "valid", "test" };

static const fl_key amat_keys[] = {
    { "train", FL_KEY_STRING, NULL, 0, 0, NULL,
      ".amat or .amat.gz file of training images (relative to the experiment file's folder)" },
    { "valid", FL_KEY_STRING, "", 0, 0, NULL,
      ".amat[.gz] file of validation images; empty = no validation split" },
    { "test", FL_KEY_STRING, "", 0, 0, NULL,
      ".amat[.gz] file of test images; empty = no test split" },
    { "height", FL_KEY_INT, "28", 1, 4096, NULL, "image height in pixels" },
    { "width", FL_KEY_INT, "28", 1, 4096, NULL, "image width in pixels (values per line = height*width)" },
};

static const fl_key mnist_keys[] = {
    { "dir", FL_KEY_STRING, "../shared/data/binarized_mnist", 0, 0, NULL,
      "folder of binarized_mnist_{train,valid,test}.amat[.gz] (relative to the experiment "
      "file's folder; when not set: searched for, `flowlab data`)" },
};

#define MNIST_SIDE 28
static const uint64_t mnist_rows[3] = { 50000, 10000, 10000 };
#define MNIST_SOURCE "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"

/* The streaming parser's state: it sees the file in chunks, so a token or a
 * line may straddle two chunks. */
typedef struct parser {
    const fl_host *h;
    fl_ctx *cx;
    const char *path;
    uint32_t dim;
    amat_split *out;
    uint64_t cap;         /* rows allocated in out->px */
    uint64_t line;        /* current line number, from 1 */
    uint64_t blank;       /* first blank line since the last image (0 = none) */
    uint32_t count;       /* values seen on the current line */
    uint32_t tok_len;     /* characters of the current token (0 = between tokens) */
    int slow_line;        /* the current line failed fast_line: parse it byte by byte */
    char tok[12];         /* its first characters, for the message */
} parser;

/* Makes room for one more row. */
static fl_status grow(parser *p)
{
    if (p->out->rows < p->cap) return FL_OK;
    uint64_t cap = p->cap ? 2 * p->cap : 1024;
    uint8_t *px = realloc(p->out->px, cap * p->dim);
    if (!px) {
        p->h->error(p->cx, "%s: out of memory after %llu images", p->path,
                    (unsigned long long)p->out->rows);
        return FL_ERR_NOMEM;
    }
    p->out->px = px;
    p->cap = cap;
    return FL_OK;
}

/* Ends the current token: a value is exactly "0" or "1". */
static fl_status end_token(parser *p)
{
    if (p->tok_len == 1 && (p->tok[0] == '0' || p->tok[0] == '1')) {
        if (p->count < p->dim) p->out->px[p->out->rows * p->dim + p->count] = (uint8_t)(p->tok[0] - '0');
        p->count++;
        p->tok_len = 0;
        return FL_OK;
    }
    /* Show the token as printable ASCII: a binary file must not put control
     * bytes on the user's terminal. */
    char shown[4 * sizeof p->tok + 4];
    size_t k = 0, m = p->tok_len < sizeof p->tok ? p->tok_len : sizeof p->tok;
    for (size_t i = 0; i < m; i++) {
        unsigned char c = (unsigned char)p->tok[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            shown[k++] = (char)c;
        else
            k += (size_t)snprintf(shown + k, sizeof shown - k, "\\x%02x", c);
    }
    if (p->tok_len > m) k += (size_t)snprintf(shown + k, sizeof shown - k, "...");
    shown[k] = 0;
    p->h->error(p->cx, "%s: line %llu: value %u is '%s', expected 0 or 1", p->path,
                (unsigned long long)p->line, p->count + 1, shown);
    return FL_ERR_FORMAT;
}

/* Ends the current line: an image has exactly dim values; blank lines are
 * allowed only at the end of the file. */
static fl_status end_line(parser *p)
{
    if (p->count == 0) {
        if (!p->blank) p->blank = p->line;
        return FL_OK;
    }
    if (p->blank) {
        p->h->error(p->cx, "%s: line %llu: empty line, expected %u values", p->path,
                    (unsigned long long)p->blank, p->dim);
        return FL_ERR_FORMAT;
    }
    if (p->count != p->dim) {
        p->h->error(p->cx, "%s: line %llu: %u values, expected %u", p->path,
                    (unsigned long long)p->line, p->count, p->dim);
        return FL_ERR_FORMAT;
    }
    p->out->rows++;
    p->count = 0;
    return FL_OK;
}

/* The usual line, exactly "v v ... v\n" (2*dim bytes, v = 0 or 1), checked
 * and stored in one branch-free pass. Returns 0 for any other line, which
 * the byte-by-byte parser then reads (and explains, if it is wrong); the
 * row it may have half-written is rewritten. */
static int fast_line(uint8_t *dst, const char *s, uint32_t dim)
{
    unsigned bad = 0;
    for (uint32_t k = 0; k < dim; k++) {
        unsigned v = (unsigned)(unsigned char)s[2 * k] - '0';
        bad |= v > 1;
        bad |= (unsigned)(s[2 * k + 1] != (k + 1 < dim ? ' ' : '\n'));
        dst[k] = (uint8_t)v;
    }
    return !bad;
}

/* Parses one chunk: whole lines through fast_line when they fit in the
 * chunk, the rest byte by byte; there a one-character value followed by a
 * blank is taken two bytes at a time. */
static fl_status parse_chunk(parser *p, const char *s, size_t n)
{
    fl_status st;
    size_t i = 0;
    size_t line_bytes = 2 * (size_t)p->dim;
    while (i < n) {
        if (p->count == 0 && p->tok_len == 0 && !p->slow_line && !p->blank &&
            n - i >= line_bytes) {
            if ((st = grow(p)) != FL_OK) return st;
            if (fast_line(p->out->px + p->out->rows * p->dim, s + i, p->dim)) {
                p->out->rows++;
                p->line++;
                i += line_bytes;
                continue;
            }
            p->slow_line = 1;
        }
        char c = s[i];
        if (p->tok_len == 0 && (c == '0' || c == '1') && i + 1 < n && s[i + 1] == ' ') {
            if (p->count == 0 && (st = grow(p)) != FL_OK) return st;
            if (p->count < p->dim) p->out->px[p->out->rows * p->dim + p->count] = (uint8_t)(c - '0');
            p->count++;
            i += 2;
            continue;
        }
        i++;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (p->tok_len && (st = end_token(p)) != FL_OK) return st;
            if (c == '\n') {
                if ((st = end_line(p)) != FL_OK) return st;
                p->line++;
                p->slow_line = 0;
            }
            continue;
        }
        if (p->tok_len == 0 && p->count == 0 && (st = grow(p)) != FL_OK) return st;
        if (p->tok_len < sizeof p->tok) p->tok[p->tok_len] = c;
        if (p->tok_len < UINT32_MAX) p->tok_len++;
    }
    return FL_OK;
}

/* Loads `path` (plain or gzip) into *out; every line must hold `dim` values
 * 0 or 1. A missing file's message ends with `hint`. */
static fl_status load_amat(const fl_host *h, fl_ctx *cx, const char *path, uint32_t dim,
                           const char *hint, amat_split *out)
{
    memset(out, 0, sizeof *out);
    gzFile g;
    fl_status ost = fl_gz_open(h, cx, path, hint, &g);
    if (ost != FL_OK) return ost;
    size_t cap = 1u << 20;
    char *buf = malloc(cap);
    parser p = { .h = h, .cx = cx, .path = path, .dim = dim, .out = out, .line = 1 };
    fl_status st = FL_OK;
    if (!buf) {
        h->error(cx, "%s: out of memory", path);
        st = FL_ERR_NOMEM;
    }
    uint64_t total = 0;
    while (st == FL_OK) {
        int got = gzread(g, buf, (unsigned)cap);
        if (got < 0) break;
        if (got == 0) break;
        total += (uint64_t)got;
        st = parse_chunk(&p, buf, (size_t)got);
    }
    if (st == FL_OK) {
        int is_errno = 0;
        const char *zmsg = fl_gz_note(g, path, &is_errno);
        if (is_errno) {
            h->error(cx, "cannot read %s: %s", path, strerror(errno));
            st = FL_ERR_IO;
        } else if (zmsg[0]) {
            /* Z_BUF_ERROR here is a gzip stream cut short. */
            h->error(cx, "%s: line %llu: the compressed file is truncated or corrupt (zlib: %s)",
                     path, (unsigned long long)p.line, zmsg);
            st = FL_ERR_FORMAT;
        }
    }
    if (st == FL_OK && !gzdirect(g)) st = fl_gz_check_end(h, cx, path, total);
    /* A last line without a newline still counts. */
    if (st == FL_OK && p.tok_len) st = end_token(&p);
    if (st == FL_OK && p.count) st = end_line(&p);
    if (st == FL_OK && out->rows == 0) {
        h->error(cx, "%s: no images (expected lines of %u values 0 or 1)", path, dim);
        st = FL_ERR_FORMAT;
    }
    gzclose(g);
    free(buf);
    if (st != FL_OK) {
        free(out->px);
        memset(out, 0, sizeof *out);
    }
    return st;
}

static void destroy(void *self)
{
    amat *a = self;
    if (!a) return;
    for (int s = 0; s < 3; s++) free(a->split[s].px);
    free(a);
}

/* Loads the files of the splits (NULL or "" = absent) and fills *info. */
static fl_status finish_create(const fl_host *h, fl_ctx *cx, const char *const paths[3],
                               uint32_t height, uint32_t width, const char *hint,
                               fl_dataset_info *info, amat **out)
{
    amat *a = calloc(1, sizeof *a);
    if (!a) return FL_ERR_NOMEM;
    a->dim = height * width;
    double t0 = fl_gz_seconds();
    for (int s = 0; s < 3; s++) {
        if (!paths[s] || !paths[s][0]) continue;
        fl_status st = load_amat(h, cx, paths[s], a->dim, hint, &a->split[s]);
        if (st != FL_OK) {
            destroy(a);
            return st;
        }
    }
    h->log(cx, FL_LOG_INFO, "read %llu/%llu/%llu train/valid/test images of %ux%u in %.2f s",
           (unsigned long long)a->split[0].rows, (unsigned long long)a->split[1].rows,
           (unsigned long long)a->split[2].rows, height, width, fl_gz_seconds() - t0);
    info->dim = a->dim;
    info->drawn = 0;
    for (int s = 0; s < 3; s++) info->n[s] = a->split[s].rows;
    info->image_h = height;
    info->image_w = width;
    info->flags = 0;
    if (FL_ABI_AT_LEAST(h, 1, 4)) info->image_c = 1; /* grey */
    *out = a;
    return FL_OK;
}

static fl_status amat_create(const fl_host *h, fl_ctx *cx, fl_dataset_info *info, void **self)
{
    const char *paths[3] = { h->cfg_str(cx, "train"), h->cfg_str(cx, "valid"),
                             h->cfg_str(cx, "test") };
    uint32_t height = (uint32_t)h->cfg_int(cx, "height"), width = (uint32_t)h->cfg_int(cx, "width");
    amat *a = NULL;
    fl_status st = finish_create(h, cx, paths, height, width,
                                 " (check the [data] train, valid and test paths; they are "
                                 "relative to the experiment file's folder)",
                                 info, &a);
    if (st == FL_OK) *self = a;
    return st;
}

static fl_status mnist_create(const fl_host *h, fl_ctx *cx, fl_dataset_info *info, void **self)
{
    const char *dir = h->cfg_str(cx, "dir");
    char *paths[3] = { NULL, NULL, NULL };
    fl_status st = FL_OK;
    for (int s = 0; s < 3 && st == FL_OK; s++)
    {
        char name[64];
        snprintf(name, sizeof name, "binarized_mnist_%s.amat", split_names[s]);
        if (!(paths[s] = fl_gz_path(dir, name))) st = FL_ERR_NOMEM;
    }
    char hint[1024];
    snprintf(hint, sizeof hint,
             " (nor the uncompressed .amat): [data] dir = %s must hold binarized_mnist_{train,valid,test}.amat[.gz]; the files "
             "are at " MNIST_SOURCE,
             dir);
    amat *a = NULL;
    if (st == FL_OK)
        st = finish_create(h, cx, (const char *const *)paths, MNIST_SIDE, MNIST_SIDE, hint, info,
                           &a);
    if (st == FL_OK)
        for (int s = 0; s < 3; s++)
            if (a->split[s].rows != mnist_rows[s])
                h->log(cx, FL_LOG_WARN,
                       "%s has %llu images, the standard %s split %llu: results are not "
                       "comparable with published ones",
                       paths[s], (unsigned long long)a->split[s].rows, split_names[s],
                       (unsigned long long)mnist_rows[s]);
    for (int s = 0; s < 3; s++) free(paths[s]);
    if (st == FL_OK) *self = a;
    return st;
}

static fl_status read_rows(void *self, fl_split split, const uint64_t *rows, uint32_t n,
                           fl_real *out)
{
    const amat *a = self;
    if ((unsigned)split > FL_SPLIT_TEST) return FL_ERR_INVALID;
    const amat_split *t = &a->split[split];
    for (uint32_t i = 0; i < n; i++)
        if (rows[i] >= t->rows) return FL_ERR_INVALID;
    /* A shuffled batch reads rows scattered over the set: ask for them a
     * few rows ahead, so their cache misses overlap (measured 75-110 ->
     * 40-65 us per batch of 100 rows in a VAE training step). */
    enum { AHEAD = 6 };
    for (uint32_t i = 0; i < n && i < AHEAD; i++)
        for (uint32_t j = 0; j < a->dim; j += 64) __builtin_prefetch(t->px + rows[i] * a->dim + j);
    for (uint32_t i = 0; i < n; i++) {
        if (i + AHEAD < n)
            for (uint32_t j = 0; j < a->dim; j += 64)
                __builtin_prefetch(t->px + rows[i + AHEAD] * a->dim + j);
        const uint8_t *src = t->px + rows[i] * a->dim;
        fl_real *dst = out + (size_t)i * a->dim;
        for (uint32_t j = 0; j < a->dim; j++) dst[j] = (fl_real)src[j];
    }
    return FL_OK;
}

static const fl_dataset_class amat_class = {
    .base = { sizeof(fl_dataset_class), "amat",
              "binary images from .amat[.gz] files, one image of 0/1 values per line", amat_keys,
              sizeof amat_keys / sizeof amat_keys[0] },
    .create = amat_create,
    .destroy = destroy,
    .read = read_rows,
};

static const fl_dataset_class mnist_class = {
    .base = { sizeof(fl_dataset_class), "binarized-mnist",
              "binarized MNIST, 28x28, the standard fixed binarization (50k/10k/10k)", mnist_keys,
              sizeof mnist_keys / sizeof mnist_keys[0] },
    .create = mnist_create,
    .destroy = destroy,
    .read = read_rows,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_DATASET, &amat_class.base);
    if (st == FL_OK) st = r->add(r, FL_KIND_DATASET, &mnist_class.base);
    return st;
}

FL_PLUGIN("datasets-amat", "1.0.0", init)
