/*
 * flowlab/dataset.h - the data-set component.
 *
 * A data set has up to three splits (train, valid, test) of rows of `dim`
 * numbers. A split is either finite (a fixed number of rows, read by index)
 * or drawn: an endless stream of fresh examples generated from a random
 * key, row i of the stream being a pure function of (key, i). The 2D toy
 * sets draw (their training split is finite when given a train_size);
 * files are finite. A drawn test split is made finite by the host: it
 * draws `info.n[FL_SPLIT_TEST]` rows once from a fixed key.
 *
 *   static fl_status moons_draw(void *self, fl_split s, fl_rng_key k,
 *                               uint64_t first, uint32_t n, fl_real *out);
 *
 * Thread-safety: draw and read may be called concurrently on one instance
 * with disjoint `out` buffers ([concurrent]; tags in host.h).
 */
#ifndef FLOWLAB_DATASET_H
#define FLOWLAB_DATASET_H

#include "component.h"
#include "host.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fl_split { FL_SPLIT_TRAIN = 0, FL_SPLIT_VALID = 1, FL_SPLIT_TEST = 2 } fl_split;

enum {
    /* since 1.1. Rows are grey levels in [0, 1] to be binarized by the host: every
     * training batch with a fresh Bernoulli draw (dynamic binarization),
     * the validation and test splits once, with a fixed key. */
    FL_DATA_BINARIZE_DYNAMIC = 1u << 0
};

typedef struct fl_dataset_info {
    uint32_t dim;           /* row width */
    uint32_t drawn;         /* bit s set: split s is drawn, not read */
    uint64_t n[3];          /* finite split: its rows (0 = absent); drawn
                               valid/test split: the size of the host's fixed
                               evaluation draw; a drawn train split is
                               endless and its n is ignored */
    uint32_t image_h, image_w; /* > 0 when rows are images (for pictures) */
    uint32_t flags;         /* since 1.1: FL_DATA_*. The host allocates this
                               struct: a plugin that may run on a 1.0 host
                               writes flags only if FL_ABI_AT_LEAST(host, 1, 1) */
    uint32_t image_c;       /* since 1.4: channels of an image row (stored
                               NHWC, dim = image_c * image_h * image_w);
                               0 (what an older plugin leaves) means 1 */
} fl_dataset_info;

typedef struct fl_dataset_class {
    fl_component base;
    uint32_t flags;         /* reserved, 0 */

    /* [once] Reads config, loads or prepares the data, fills *info. */
    fl_status (*create)(const fl_host *host, fl_ctx *cx, fl_dataset_info *info, void **self);
    void (*destroy)(void *self);  /* [once] */

    /* [concurrent] Drawn splits: rows first .. first+n-1 of the stream keyed by `key`. */
    fl_status (*draw)(void *self, fl_split split, fl_rng_key key, uint64_t first, uint32_t n,
                      fl_real *out);
    /* [concurrent] Finite splits: rows rows[0..n-1]. NULL if no split is
     * finite. */
    fl_status (*read)(void *self, fl_split split, const uint64_t *rows, uint32_t n,
                      fl_real *out);
} fl_dataset_class;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_DATASET_H */
