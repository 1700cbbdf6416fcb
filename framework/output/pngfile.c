/* pngfile.c - PNG output (RGB or grey) through libpng's simplified API. */
#include "output/pngfile.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

fl_status fl_png_write_as(const char *path, const uint8_t *px, uint32_t w, uint32_t h,
                          fl_png_format fmt)
{
    if (fmt != FL_PNG_GREY && fmt != FL_PNG_RGB) {
        fl_err("cannot write %s: unknown pixel format %d", path, (int)fmt);
        return FL_ERR_INVALID;
    }
    /* libpng limits each side to 2^31-1; far smaller keeps w*h*3 in range. */
    if (!px || w == 0 || h == 0 || w > 65535 || h > 65535) {
        fl_err("cannot write %s: bad image size %ux%u", path, w, h);
        return FL_ERR_INVALID;
    }
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = w;
    img.height = h;
    img.format = fmt == FL_PNG_RGB ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    /* Encode into memory first (size query, then the real pass) so the file
     * itself is written by fl_write_atomic in one go. */
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&img, NULL, &size, 0, px, 0, NULL) || size == 0) {
        fl_err("cannot encode %s: %s", path, img.message);
        png_image_free(&img);
        return FL_ERR_INTERNAL;
    }
    void *mem = malloc(size);
    if (!mem) {
        fl_err("cannot encode %s: out of memory", path);
        return FL_ERR_NOMEM;
    }
    if (!png_image_write_to_memory(&img, mem, &size, 0, px, 0, NULL)) {
        fl_err("cannot encode %s: %s", path, img.message);
        png_image_free(&img);
        free(mem);
        return FL_ERR_INTERNAL;
    }
    fl_status st = fl_write_atomic(path, mem, size);
    free(mem);
    return st;
}

fl_status fl_png_write(const char *path, const uint8_t *rgb, uint32_t w, uint32_t h)
{
    return fl_png_write_as(path, rgb, w, h, FL_PNG_RGB);
}
