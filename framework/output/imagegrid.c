/* imagegrid.c - grids of greyscale (and RGB) images as PNG files. */
#include "output/imagegrid.h"

#include <stdlib.h>
#include <string.h>

#include "output/chart.h"
#include "output/pngfile.h"
#include "core/util.h"

#define MAX_SIDE 65535u

/* A picture of W x H grey bytes, filled with the separator grey. */
typedef struct grey {
    uint8_t *px;
    uint32_t w, h;
} grey;

static fl_status check_args(const char *path, const void *a, const void *b, uint32_t n,
                            uint32_t h, uint32_t w, uint32_t cols)
{
    if (!path || !a || !b || n == 0 || h == 0 || w == 0 || cols == 0) {
        fl_err("cannot write %s: no images or a zero size (n = %u, %ux%u, %u columns)",
               path ? path : "(null)", n, h, w, cols);
        return FL_ERR_INVALID;
    }
    return FL_OK;
}

/* Allocates the picture, checking the size in 64 bits first. */
static fl_status grey_new(grey *g, const char *path, uint64_t w, uint64_t h)
{
    if (w > MAX_SIDE || h > MAX_SIDE) {
        fl_err("cannot write %s: a %llux%llu picture is larger than %u a side", path,
               (unsigned long long)w, (unsigned long long)h, MAX_SIDE);
        return FL_ERR_INVALID;
    }
    g->w = (uint32_t)w;
    g->h = (uint32_t)h;
    g->px = malloc((size_t)w * h);
    if (!g->px) {
        fl_err("cannot write %s: out of memory", path);
        return FL_ERR_NOMEM;
    }
    memset(g->px, FL_IMAGE_PAD_GREY, (size_t)w * h);
    return FL_OK;
}

static uint8_t to_byte(fl_real v)
{
    if (!(v > 0)) return 0; /* also NaN */
    if (v >= 1) return 255;
    return (uint8_t)((double)v * 255.0 + 0.5);
}

/* Copies one h x w image with its top-left corner at (x, y). */
static void blit(grey *g, const fl_real *img, uint32_t h, uint32_t w, uint32_t x, uint32_t y)
{
    for (uint32_t r = 0; r < h; r++) {
        uint8_t *dst = g->px + (size_t)(y + r) * g->w + x;
        const fl_real *src = img + (size_t)r * w;
        for (uint32_t c = 0; c < w; c++) dst[c] = to_byte(src[c]);
    }
}

fl_status fl_image_grid_png(const char *path, const fl_real *images, uint32_t n, uint32_t h,
                            uint32_t w, uint32_t cols, uint32_t pad)
{
    fl_status st = check_args(path, images, images, n, h, w, cols);
    if (st != FL_OK) return st;
    if (cols > n) cols = n;
    uint64_t rows = (n + (uint64_t)cols - 1) / cols;
    grey g;
    st = grey_new(&g, path, pad + cols * ((uint64_t)w + pad), pad + rows * ((uint64_t)h + pad));
    if (st != FL_OK) return st;
    size_t dim = (size_t)h * w;
    for (uint32_t i = 0; i < n; i++)
        blit(&g, images + i * dim, h, w, pad + (i % cols) * (w + pad),
             pad + (i / cols) * (h + pad));
    st = fl_png_write_as(path, g.px, g.w, g.h, FL_PNG_GREY);
    free(g.px);
    return st;
}

fl_status fl_image_pairs_png(const char *path, const fl_real *orig, const fl_real *recon,
                             uint32_t n, uint32_t h, uint32_t w, uint32_t cols, uint32_t pad)
{
    fl_status st = check_args(path, orig, recon, n, h, w, cols);
    if (st != FL_OK) return st;
    if (cols > n) cols = n;
    uint64_t groups = (n + (uint64_t)cols - 1) / cols;
    uint64_t group_h = 2 * (uint64_t)h + 3 * (uint64_t)pad;
    grey g;
    st = grey_new(&g, path, pad + cols * ((uint64_t)w + pad), groups * group_h);
    if (st != FL_OK) return st;
    size_t dim = (size_t)h * w;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t x = pad + (i % cols) * (w + pad);
        uint32_t y = pad + (uint32_t)((i / cols) * group_h);
        blit(&g, orig + i * dim, h, w, x, y);
        blit(&g, recon + i * dim, h, w, x, y + h + pad);
    }
    st = fl_png_write_as(path, g.px, g.w, g.h, FL_PNG_GREY);
    free(g.px);
    return st;
}

/* The raster of fl_image_blocks_png: *out gets W x H pixels of c
 * interleaved channels (malloc'ed, the caller frees). */
static fl_status blocks_raster(const char *path, const fl_real *images, uint32_t n_blocks,
                               uint32_t per_block, uint32_t c, uint32_t h, uint32_t w,
                               uint32_t cols, uint32_t pad, uint8_t **out, uint32_t *W,
                               uint32_t *H)
{
    *out = NULL;
    fl_status st = check_args(path, images, images, n_blocks * per_block, h, w, cols);
    if (st != FL_OK) return st;
    if (c != 1 && c != 3) {
        fl_err("cannot write %s: images of %u channels (1 or 3 can be drawn)", path, c);
        return FL_ERR_INVALID;
    }
    if (cols > per_block) cols = per_block;
    const uint64_t rows = (per_block + (uint64_t)cols - 1) / cols;
    const uint64_t block_h = rows * ((uint64_t)h + pad) + 2 * (uint64_t)pad;
    /* one grey plane per channel: the grey code checks sizes and pads */
    grey g[3] = { { 0 }, { 0 }, { 0 } };
    for (uint32_t ch = 0; ch < c && st == FL_OK; ch++)
        st = grey_new(&g[ch], path, pad + cols * ((uint64_t)w + pad),
                      pad + n_blocks * block_h - 2 * (uint64_t)pad);
    const size_t dim = (size_t)h * w * c;
    fl_real *plane = st == FL_OK ? malloc((size_t)h * w * sizeof *plane) : NULL;
    if (st == FL_OK && !plane) {
        fl_err("cannot write %s: out of memory", path);
        st = FL_ERR_NOMEM;
    }
    for (uint32_t b = 0; st == FL_OK && b < n_blocks; b++)
        for (uint32_t i = 0; i < per_block; i++) {
            const fl_real *img = images + ((size_t)b * per_block + i) * dim;
            uint32_t x = pad + (i % cols) * (w + pad);
            uint32_t y = pad + (uint32_t)(b * block_h) + (i / cols) * (h + pad);
            for (uint32_t ch = 0; ch < c; ch++) {
                for (size_t k = 0; k < (size_t)h * w; k++) plane[k] = img[k * c + ch];
                blit(&g[ch], plane, h, w, x, y);
            }
        }
    free(plane);
    if (st == FL_OK && c == 1) {
        *out = g[0].px;
        g[0].px = NULL;
    } else if (st == FL_OK) {
        size_t np = (size_t)g[0].w * g[0].h;
        uint8_t *rgb = malloc(np * 3);
        if (!rgb) {
            fl_err("cannot write %s: out of memory", path);
            st = FL_ERR_NOMEM;
        }
        for (size_t k = 0; rgb && k < np; k++)
            for (int ch = 0; ch < 3; ch++) rgb[3 * k + ch] = g[ch].px[k];
        *out = rgb;
    }
    if (st == FL_OK) *W = g[0].w, *H = g[0].h;
    for (int ch = 0; ch < 3; ch++) free(g[ch].px);
    return st;
}

fl_status fl_image_blocks_png(const char *path, const fl_real *images, uint32_t n_blocks,
                              uint32_t per_block, uint32_t c, uint32_t h, uint32_t w,
                              uint32_t cols, uint32_t pad)
{
    uint8_t *px;
    uint32_t W = 0, H = 0;
    fl_status st = blocks_raster(path, images, n_blocks, per_block, c, h, w, cols, pad, &px, &W, &H);
    if (st == FL_OK) st = fl_png_write_as(path, px, W, H, c == 1 ? FL_PNG_GREY : FL_PNG_RGB);
    free(px);
    return st;
}

fl_status fl_image_blocks_captioned_png(const char *path, const fl_real *images,
                                        uint32_t n_blocks, uint32_t per_block, uint32_t c,
                                        uint32_t h, uint32_t w, uint32_t cols, uint32_t pad,
                                        const char *title, const char *const *labels,
                                        uint32_t *x_off, uint32_t *y_off)
{
    uint8_t *px;
    uint32_t W = 0, H = 0;
    fl_status st = blocks_raster(path, images, n_blocks, per_block, c, h, w, cols, pad, &px, &W, &H);
    uint32_t *mid = st == FL_OK ? malloc(((size_t)n_blocks + 1) * sizeof *mid) : NULL;
    if (st == FL_OK && !mid) {
        fl_err("cannot write %s: out of memory", path);
        st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) {
        if (cols > per_block) cols = per_block;
        const uint64_t rows = (per_block + (uint64_t)cols - 1) / cols;
        const uint64_t block_h = rows * ((uint64_t)h + pad) + 2 * (uint64_t)pad;
        for (uint32_t b = 0; b < n_blocks; b++)
            mid[b] = (uint32_t)(pad + b * block_h + (rows * ((uint64_t)h + pad) - pad) / 2);
        st = fl_chart_image(path, px, W, H, (int)c, title, labels, mid, labels ? n_blocks : 0,
                            x_off, y_off);
    }
    free(mid);
    free(px);
    return st;
}
