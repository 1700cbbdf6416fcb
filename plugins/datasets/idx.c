/* idx.c - grey-level images from idx files (MNIST's format; Fashion-MNIST).
 *
 * An idx3 image file is a 16-byte big-endian header (magic 0x00000803:
 * unsigned bytes, 3 dimensions; then the image count, rows and columns)
 * followed by count*rows*cols pixels, 0 (background) .. 255. Files may be
 * gzip-compressed (zlib's gzread reads plain files as well). Pixels stay
 * bytes in memory and become fl_real only in `read`.
 *
 * The last valid_size training images form the validation split. Grey
 * levels g/255 are binarized according to `binarize`:
 *   dynamic  rows are grey levels and info.flags has FL_DATA_BINARIZE_DYNAMIC:
 *            the host draws the Bernoulli pixels itself (fresh every batch)
 *   fixed    one Bernoulli draw at create, from the key
 *            fl_rng_key_make(0, "idx.binarize"), the same for every
 *            experiment seed: pixel j of image i of the training file is
 *            number i*dim+j of sub-stream 0, of the test file sub-stream 1
 *            (so valid_size does not change any image); pixel = u < g/255
 *   none     rows are grey levels and stay so
 *
 * Two data sets:
 *   idx            any image files (keys train_images, test_images)
 *   fashion-mnist  Fashion-MNIST from one folder (key dir; Debian's
 *                  dataset-fashion-mnist package installs it in the default) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include <flowlab/flowlab.h>

#include "gzfile.h"

enum { BIN_DYNAMIC = 0, BIN_FIXED = 1, BIN_NONE = 2 }; /* order of the enum choices */

typedef struct idx_file {
    uint8_t *px;      /* n x dim pixels */
    uint64_t n;
    uint32_t h, w;
} idx_file;

typedef struct idx_set {
    idx_file file[2];    /* training file, test file */
    uint64_t first[3];   /* split s is rows first[s] .. first[s]+n[s]-1 ... */
    uint64_t n[3];
    int src[3];          /* ... of file[src[s]] */
    uint32_t dim;
    fl_real lut[256];    /* byte -> row value */
} idx_set;

#define BINARIZE_KEYS                                                                          \
    { "binarize", FL_KEY_ENUM, "dynamic", 0, 0, "dynamic|fixed|none",                          \
      "dynamic: grey levels the host binarizes afresh every batch; fixed: one seeded "         \
      "Bernoulli draw at load; none: grey levels in [0, 1]" },                                 \
    { "valid_size", FL_KEY_INT, "10000", 0, 1e9, NULL,                                         \
      "the last valid_size training images form the validation split" }

static const fl_key idx_keys[] = {
    { "train_images", FL_KEY_STRING, NULL, 0, 0, NULL,
      "idx3-ubyte[.gz] file of training images (relative to the experiment file's folder)" },
    { "test_images", FL_KEY_STRING, "", 0, 0, NULL,
      "idx3-ubyte[.gz] file of test images; empty = no test split" },
    BINARIZE_KEYS,
};

static const fl_key fashion_keys[] = {
    { "dir", FL_KEY_STRING, "/usr/share/datasets/fashion-mnist", 0, 0, NULL,
      "folder of {train,t10k}-images-idx3-ubyte[.gz]" },
    BINARIZE_KEYS,
};

#define IDX_MAGIC 0x00000803u
/* Large enough for any image set in use, small enough that n*dim cannot
 * overflow and a corrupt header cannot make us allocate absurd amounts
 * before the data runs out. */
#define MAX_DIM (1u << 24)
#define MAX_IMAGES (1ull << 32)
#define CHUNK (1u << 24)

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads up to n bytes; returns how many, or -1 on a read error. */
static int64_t read_full(gzFile g, uint8_t *dst, uint64_t n)
{
    uint64_t got = 0;
    while (got < n) {
        uint64_t want = n - got < CHUNK ? n - got : CHUNK;
        int r = gzread(g, dst + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (uint64_t)r;
    }
    return (int64_t)got;
}

/* Loads an idx3 unsigned-byte image file (plain or gzip). A missing file's
 * message ends with `hint`. */
static fl_status load_idx(const fl_host *h, fl_ctx *cx, const char *path, const char *hint,
                          idx_file *out)
{
    memset(out, 0, sizeof *out);
    gzFile g;
    fl_status st = fl_gz_open(h, cx, path, hint, &g);
    if (st != FL_OK) return st;
    int is_errno = 0;
    unsigned char hd[16];
    int64_t got = read_full(g, hd, sizeof hd);
    const char *note = got == (int64_t)sizeof hd ? "" : fl_gz_note(g, path, &is_errno);
    uint64_t n = 0, dim = 0;
    /* The magic first: a short label file is "not images" before "short". */
    uint32_t magic = got >= 4 ? be32(hd) : IDX_MAGIC;
    if (magic != IDX_MAGIC) {
        h->error(cx, "%s: magic number 0x%08x, expected 0x%08x (idx3-ubyte images)%s", path,
                 magic, IDX_MAGIC,
                 magic == 0x00000801u ? ": this looks like a label file (idx1-ubyte)" : "");
        st = FL_ERR_FORMAT;
    } else if (got != (int64_t)sizeof hd) {
        if (is_errno) {
            h->error(cx, "cannot read %s: %s", path, strerror(errno));
            st = FL_ERR_IO;
        } else {
            h->error(cx, "%s: %lld bytes, too short for an idx header (16 bytes)%s%s", path,
                     (long long)(got < 0 ? 0 : got), note[0] ? "; zlib: " : "", note);
            st = FL_ERR_FORMAT;
        }
    } else {
        out->n = be32(hd + 4);
        out->h = be32(hd + 8);
        out->w = be32(hd + 12);
        n = out->n;
        dim = (uint64_t)out->h * out->w;
        if (n == 0 || out->h == 0 || out->w == 0 || dim > MAX_DIM || n >= MAX_IMAGES) {
            h->error(cx, "%s: header declares %llu images of %ux%u, expected at least one image "
                     "of at most %u pixels",
                     path, (unsigned long long)n, out->h, out->w, MAX_DIM);
            st = FL_ERR_FORMAT;
        }
    }
    /* Grow the buffer as data arrives rather than trusting the header's
     * size: a corrupt count then fails as "truncated", not as an enormous
     * allocation. */
    uint64_t want = n * dim, have = 0, cap = 0;
    while (st == FL_OK && have < want) {
        uint64_t ncap = cap ? 2 * cap : CHUNK;
        if (ncap > want) ncap = want;
        uint8_t *px = realloc(out->px, ncap);
        if (!px) {
            h->error(cx, "%s: out of memory for %llu images of %ux%u", path,
                     (unsigned long long)n, out->h, out->w);
            st = FL_ERR_NOMEM;
            break;
        }
        out->px = px;
        cap = ncap;
        int64_t r = read_full(g, out->px + have, cap - have);
        if (r > 0) have += (uint64_t)r;
        if (r < 0 || have < cap) break;
    }
    if (st == FL_OK && have < want) {
        note = fl_gz_note(g, path, &is_errno);
        if (is_errno) {
            h->error(cx, "cannot read %s: %s", path, strerror(errno));
            st = FL_ERR_IO;
        } else {
            h->error(cx, "%s: truncated: %llu bytes of pixels, expected %llu (header: %llu "
                     "images of %ux%u)%s%s",
                     path, (unsigned long long)have, (unsigned long long)want,
                     (unsigned long long)n, out->h, out->w, note[0] ? "; zlib: " : "", note);
            st = FL_ERR_FORMAT;
        }
    }
    if (st == FL_OK) {
        /* Bytes after the last image mean the header and the file disagree. */
        uint64_t extra = 0;
        unsigned char tail[4096];
        int r;
        while ((r = gzread(g, tail, sizeof tail)) > 0) extra += (uint64_t)r;
        note = fl_gz_note(g, path, &is_errno);
        if (extra) {
            h->error(cx, "%s: %llu bytes of pixels, expected %llu (header: %llu images of "
                     "%ux%u)",
                     path, (unsigned long long)(want + extra), (unsigned long long)want,
                     (unsigned long long)n, out->h, out->w);
            st = FL_ERR_FORMAT;
        } else if (note[0]) {
            h->error(cx, "%s: the compressed file is corrupt (zlib: %s)", path, note);
            st = is_errno ? FL_ERR_IO : FL_ERR_FORMAT;
        } else if (!gzdirect(g)) {
            st = fl_gz_check_end(h, cx, path, sizeof hd + want);
        }
    }
    gzclose(g);
    if (st != FL_OK) {
        free(out->px);
        memset(out, 0, sizeof *out);
    }
    return st;
}

/* Replaces grey levels by one Bernoulli draw each (see the top comment).
 * Counter-based numbers make the result independent of the thread count. */
static void binarize_fixed(idx_file *f, uint32_t dim, fl_rng_key key, uint64_t sub)
{
    int64_t n = (int64_t)f->n;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint8_t *p = f->px + (uint64_t)i * dim;
        fl_real u[64];
        for (uint32_t j0 = 0; j0 < dim; j0 += 64) {
            uint32_t m = dim - j0 < 64 ? dim - j0 : 64;
            fl_rng_uniform(key, sub, (uint64_t)i * dim + j0, m, u);
            /* u < g/255, without the division's rounding */
            for (uint32_t k = 0; k < m; k++) p[j0 + k] = (double)u[k] * 255.0 < p[j0 + k];
        }
    }
}

static void destroy(void *self)
{
    idx_set *d = self;
    if (!d) return;
    for (int f = 0; f < 2; f++) free(d->file[f].px);
    free(d);
}

/* Loads the files (test "" = no test split), splits and binarizes them and
 * fills *info. */
static fl_status finish_create(const fl_host *h, fl_ctx *cx, const char *train_path,
                               const char *test_path, const char *hint, fl_dataset_info *info,
                               idx_set **out)
{
    idx_set *d = calloc(1, sizeof *d);
    if (!d) return FL_ERR_NOMEM;
    int mode = (int)h->cfg_int(cx, "binarize");
    uint64_t valid = (uint64_t)h->cfg_int(cx, "valid_size");
    double t0 = fl_gz_seconds();
    fl_status st = load_idx(h, cx, train_path, hint, &d->file[0]);
    if (st == FL_OK && test_path[0]) st = load_idx(h, cx, test_path, hint, &d->file[1]);
    idx_file *tr = &d->file[0], *te = &d->file[1];
    if (st == FL_OK && te->px && (te->h != tr->h || te->w != tr->w)) {
        h->error(cx, "%s has images of %ux%u, the training file %s %ux%u", test_path, te->h,
                 te->w, train_path, tr->h, tr->w);
        st = FL_ERR_FORMAT;
    }
    if (st == FL_OK && valid >= tr->n) {
        h->error(cx, "valid_size = %llu leaves no training images: %s has %llu",
                 (unsigned long long)valid, train_path, (unsigned long long)tr->n);
        st = FL_ERR_INVALID;
    }
    if (st != FL_OK) {
        destroy(d);
        return st;
    }
    d->dim = tr->h * tr->w;
    double t_load = fl_gz_seconds() - t0;
    double t_bin = fl_gz_seconds();
    if (mode == BIN_FIXED) {
        /* Independent of the experiment seed: every seed of a sweep sees
         * the same binary images (as with the static binarized MNIST). */
        fl_rng_key key = fl_rng_key_make(0, "idx.binarize");
        for (int f = 0; f < 2; f++)
            if (d->file[f].px) binarize_fixed(&d->file[f], d->dim, key, (uint64_t)f);
    }
    for (int v = 0; v < 256; v++)
        d->lut[v] = mode == BIN_FIXED ? (fl_real)v : (fl_real)((double)v / 255.0);
    d->src[FL_SPLIT_TRAIN] = 0;
    d->first[FL_SPLIT_TRAIN] = 0;
    d->n[FL_SPLIT_TRAIN] = tr->n - valid;
    d->src[FL_SPLIT_VALID] = 0;
    d->first[FL_SPLIT_VALID] = tr->n - valid;
    d->n[FL_SPLIT_VALID] = valid;
    d->src[FL_SPLIT_TEST] = 1;
    d->first[FL_SPLIT_TEST] = 0;
    d->n[FL_SPLIT_TEST] = te->n;
    char how[64];
    if (mode == BIN_FIXED)
        snprintf(how, sizeof how, "fixed binarization, drawn in %.2f s", fl_gz_seconds() - t_bin);
    else
        snprintf(how, sizeof how, "%s binarization", h->cfg_str(cx, "binarize"));
    h->log(cx, FL_LOG_INFO, "read %llu/%llu/%llu train/valid/test images of %ux%u in %.2f s (%s)",
           (unsigned long long)d->n[0], (unsigned long long)d->n[1], (unsigned long long)d->n[2],
           tr->h, tr->w, t_load, how);
    info->dim = d->dim;
    info->drawn = 0;
    for (int s = 0; s < 3; s++) info->n[s] = d->n[s];
    info->image_h = tr->h;
    info->image_w = tr->w;
    info->flags = mode == BIN_DYNAMIC ? FL_DATA_BINARIZE_DYNAMIC : 0;
    if (FL_ABI_AT_LEAST(h, 1, 4)) info->image_c = 1; /* grey */
    *out = d;
    return FL_OK;
}

static fl_status idx_create(const fl_host *h, fl_ctx *cx, fl_dataset_info *info, void **self)
{
    idx_set *d = NULL;
    fl_status st = finish_create(h, cx, h->cfg_str(cx, "train_images"),
                                 h->cfg_str(cx, "test_images"),
                                 " (check the [data] train_images and test_images paths; they "
                                 "are relative to the experiment file's folder)",
                                 info, &d);
    if (st == FL_OK) *self = d;
    return st;
}

static fl_status fashion_create(const fl_host *h, fl_ctx *cx, fl_dataset_info *info,
                                void **self)
{
    const char *dir = h->cfg_str(cx, "dir");
    char *train = fl_gz_path(dir, "train-images-idx3-ubyte");
    char *test = fl_gz_path(dir, "t10k-images-idx3-ubyte");
    char hint[1024];
    snprintf(hint, sizeof hint,
             " (nor the uncompressed file): install Debian's dataset-fashion-mnist package "
             "(apt-get install dataset-fashion-mnist, into /usr/share/datasets/fashion-mnist), or "
             "set [data] dir = %s to a folder holding {train,t10k}-images-idx3-ubyte[.gz] from "
             "https://github.com/zalandoresearch/fashion-mnist",
             dir);
    idx_set *d = NULL;
    fl_status st = train && test ? finish_create(h, cx, train, test, hint, info, &d)
                                 : FL_ERR_NOMEM;
    free(train);
    free(test);
    if (st == FL_OK) *self = d;
    return st;
}

static fl_status read_rows(void *self, fl_split split, const uint64_t *rows, uint32_t n,
                           fl_real *out)
{
    const idx_set *d = self;
    if ((unsigned)split > FL_SPLIT_TEST || (n && !d->n[split])) return FL_ERR_INVALID;
    if (!n) return FL_OK;
    const uint8_t *base = d->file[d->src[split]].px + d->first[split] * d->dim;
    for (uint32_t i = 0; i < n; i++) {
        if (rows[i] >= d->n[split]) return FL_ERR_INVALID;
        const uint8_t *src = base + rows[i] * d->dim;
        fl_real *dst = out + (size_t)i * d->dim;
        for (uint32_t j = 0; j < d->dim; j++) dst[j] = d->lut[src[j]];
    }
    return FL_OK;
}

static const fl_dataset_class idx_class = {
    .base = { sizeof(fl_dataset_class), "idx",
              "grey-level images from idx3-ubyte[.gz] files (MNIST's format), binarized or not",
              idx_keys, sizeof idx_keys / sizeof idx_keys[0] },
    .create = idx_create,
    .destroy = destroy,
    .read = read_rows,
};

static const fl_dataset_class fashion_class = {
    .base = { sizeof(fl_dataset_class), "fashion-mnist",
              "Fashion-MNIST, 28x28 grey levels (60k train incl. valid_size validation, 10k "
              "test), binarized or not",
              fashion_keys, sizeof fashion_keys / sizeof fashion_keys[0] },
    .create = fashion_create,
    .destroy = destroy,
    .read = read_rows,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_DATASET, &idx_class.base);
    if (st == FL_OK) st = r->add(r, FL_KIND_DATASET, &fashion_class.base);
    return st;
}

FL_PLUGIN("datasets-idx", "1.0.0", init)
