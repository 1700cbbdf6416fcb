/* cifar.c - CIFAR-10 from its binary batches (the "binary version" of
 * https://www.cs.toronto.edu/~kriz/cifar.html).
 *
 * A batch file is records of 3073 bytes: 1 label byte (0..9), then the
 * 32x32 image as three planes of 1024 bytes, red, green, blue, each row
 * major. The data set reads data_batch_1.bin .. data_batch_5.bin (training,
 * in that order) and test_batch.bin from one folder, plain or gzip
 * (name.bin.gz when name.bin is absent), and stores the pixels as bytes in
 * NHWC order (pixel (y, x) of channel c at (y*32 + x)*3 + c), so a row is
 * image_c x image_h x image_w = 3 x 32 x 32 and dim = 3072. Labels are
 * checked (a byte above 9 means another format, e.g. CIFAR-100's two label
 * bytes) and then dropped. Values are the levels k/255, k = 0..255 (as the
 * idx set's grey levels with binarize = none).
 *
 * The last valid_size training images form the validation split. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include <flowlab/flowlab.h>

#include "gzfile.h"

enum { SIDE = 32, PLANE = SIDE * SIDE, DIM = 3 * PLANE, RECORD = 1 + DIM, N_TRAIN_FILES = 5 };

typedef struct cifar {
    uint8_t *px[2];      /* training images (5 files, in order), test images: n x DIM, NHWC */
    uint64_t count[2];
    uint64_t first[3];   /* split s is images first[s] .. first[s]+n[s]-1 of px[src[s]] */
    uint64_t n[3];
    int src[3];
    fl_real lut[256];    /* byte -> row value k/255 */
} cifar;

static const fl_key cifar_keys[] = {
    { "dir", FL_KEY_STRING, "cifar-10-batches-bin", 0, 0, NULL,
      "folder of data_batch_1..5.bin and test_batch.bin (CIFAR-10's binary version; "
      "name.bin.gz is read when name.bin is absent), relative to the experiment file's folder" },
    { "valid_size", FL_KEY_INT, "5000", 0, 1e9, NULL,
      "the last valid_size training images form the validation split" },
};

/* Reads up to n bytes; returns how many, or -1 on a read error. */
static int64_t read_full(gzFile g, uint8_t *dst, uint64_t n)
{
    uint64_t got = 0;
    while (got < n) {
        uint64_t want = n - got < (1u << 24) ? n - got : (1u << 24);
        int r = gzread(g, dst + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (uint64_t)r;
    }
    return (int64_t)got;
}

/* Appends the records of one batch file to *px (*count images so far). */
static fl_status load_batch(const fl_host *h, fl_ctx *cx, const char *path, const char *hint,
                            uint8_t **px, uint64_t *count)
{
    gzFile g;
    fl_status st = fl_gz_open(h, cx, path, hint, &g);
    if (st != FL_OK) return st;
    uint8_t *rec = malloc(RECORD);
    uint64_t cap = *count, nrec = 0;
    int is_errno = 0;
    while (rec && st == FL_OK) {
        int64_t got = read_full(g, rec, RECORD);
        if (got < 0) {
            const char *note = fl_gz_note(g, path, &is_errno);
            if (is_errno) h->error(cx, "cannot read %s: %s", path, strerror(errno));
            else h->error(cx, "%s: the compressed file is corrupt (zlib: %s)", path, note);
            st = is_errno ? FL_ERR_IO : FL_ERR_FORMAT;
            break;
        }
        if (got == 0) break;
        if (got < RECORD) {
            const char *note = fl_gz_note(g, path, &is_errno);
            h->error(cx, "%s: truncated: %llu records of %d bytes and %lld bytes more (a CIFAR-10 "
                     "record is 1 label byte + 3x32x32 pixels)%s%s",
                     path, (unsigned long long)nrec, RECORD, (long long)got,
                     note[0] ? "; zlib: " : "", note);
            st = FL_ERR_FORMAT;
            break;
        }
        if (rec[0] > 9) {
            h->error(cx, "%s: record %llu has label %u, expected 0..9: not a CIFAR-10 binary batch "
                     "(CIFAR-100's records have two label bytes)",
                     path, (unsigned long long)nrec + 1, rec[0]);
            st = FL_ERR_FORMAT;
            break;
        }
        if (*count == cap) {
            cap = cap ? 2 * cap : 1024;
            uint8_t *p = realloc(*px, cap * DIM);
            if (!p) {
                st = FL_ERR_NOMEM;
                break;
            }
            *px = p;
        }
        /* planes R, G, B -> NHWC */
        uint8_t *dst = *px + *count * DIM;
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < PLANE; k++) dst[k * 3 + c] = rec[1 + c * PLANE + k];
        (*count)++;
        nrec++;
    }
    if (!rec) st = FL_ERR_NOMEM;
    if (st == FL_OK && nrec == 0) {
        h->error(cx, "%s: no records (an empty file)", path);
        st = FL_ERR_FORMAT;
    }
    if (st == FL_OK && !gzdirect(g)) {
        const char *note = fl_gz_note(g, path, &is_errno);
        if (note[0]) {
            h->error(cx, "%s: the compressed file is corrupt (zlib: %s)", path, note);
            st = is_errno ? FL_ERR_IO : FL_ERR_FORMAT;
        } else {
            st = fl_gz_check_end(h, cx, path, nrec * RECORD);
        }
    }
    free(rec);
    gzclose(g);
    return st;
}

static void destroy(void *self)
{
    cifar *d = self;
    if (!d) return;
    free(d->px[0]);
    free(d->px[1]);
    free(d);
}

static fl_status create(const fl_host *h, fl_ctx *cx, fl_dataset_info *info, void **self)
{
    cifar *d = calloc(1, sizeof *d);
    if (!d) return FL_ERR_NOMEM;
    const char *dir = h->cfg_str(cx, "dir");
    uint64_t valid = (uint64_t)h->cfg_int(cx, "valid_size");
    char hint[1024];
    snprintf(hint, sizeof hint,
             " (nor name.gz): set [data] dir to the folder cifar-10-binary.tar.gz unpacks to "
             "(https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz; now dir = %s)",
             dir);
    double t0 = fl_gz_seconds();
    fl_status st = FL_OK;
    for (int f = 0; f <= N_TRAIN_FILES && st == FL_OK; f++) {
        char name[32];
        if (f < N_TRAIN_FILES) snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
        else snprintf(name, sizeof name, "test_batch.bin");
        char *path = fl_gz_path(dir, name);
        int which = f < N_TRAIN_FILES ? 0 : 1;
        st = path ? load_batch(h, cx, path, hint, &d->px[which], &d->count[which])
                  : FL_ERR_NOMEM;
        free(path);
    }
    if (st == FL_OK && valid >= d->count[0]) {
        h->error(cx, "valid_size = %llu leaves no training images: %s has %llu",
                 (unsigned long long)valid, dir, (unsigned long long)d->count[0]);
        st = FL_ERR_INVALID;
    }
    if (st != FL_OK) {
        destroy(d);
        return st;
    }
    for (int v = 0; v < 256; v++) d->lut[v] = (fl_real)((double)v / 255.0);
    d->src[FL_SPLIT_TRAIN] = 0;
    d->n[FL_SPLIT_TRAIN] = d->count[0] - valid;
    d->src[FL_SPLIT_VALID] = 0;
    d->first[FL_SPLIT_VALID] = d->count[0] - valid;
    d->n[FL_SPLIT_VALID] = valid;
    d->src[FL_SPLIT_TEST] = 1;
    d->n[FL_SPLIT_TEST] = d->count[1];
    h->log(cx, FL_LOG_INFO, "read %llu/%llu/%llu train/valid/test images of 3x32x32 in %.2f s",
           (unsigned long long)d->n[0], (unsigned long long)d->n[1], (unsigned long long)d->n[2],
           fl_gz_seconds() - t0);
    info->dim = DIM;
    info->drawn = 0;
    for (int s = 0; s < 3; s++) info->n[s] = d->n[s];
    info->image_h = SIDE;
    info->image_w = SIDE;
    info->flags = 0;
    if (FL_ABI_AT_LEAST(h, 1, 4)) info->image_c = 3;
    *self = d;
    return FL_OK;
}

static fl_status read_rows(void *self, fl_split split, const uint64_t *rows, uint32_t n,
                           fl_real *out)
{
    const cifar *d = self;
    if ((unsigned)split > FL_SPLIT_TEST || (n && !d->n[split])) return FL_ERR_INVALID;
    const uint8_t *base = d->px[d->src[split]] + d->first[split] * DIM;
    for (uint32_t i = 0; i < n; i++) {
        if (rows[i] >= d->n[split]) return FL_ERR_INVALID;
        const uint8_t *src = base + rows[i] * DIM;
        fl_real *dst = out + (size_t)i * DIM;
        for (uint32_t j = 0; j < DIM; j++) dst[j] = d->lut[src[j]];
    }
    return FL_OK;
}

static const fl_dataset_class cifar_class = {
    .base = { sizeof(fl_dataset_class), "cifar10",
              "CIFAR-10 from its binary batches: 3x32x32 colour images (NHWC), levels k/255",
              cifar_keys, sizeof cifar_keys / sizeof cifar_keys[0] },
    .create = create,
    .destroy = destroy,
    .read = read_rows,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_DATASET, &cifar_class.base);
}

FL_PLUGIN("datasets-cifar", "1.0.0", init)
