/* pngfile.h - writing 8-bit RGB or greyscale images as PNG files. */
#ifndef FL_PNG_H
#define FL_PNG_H

#include <stdint.h>

#include "core/util.h"

/* The pixel layout of an image: the value is the bytes per pixel. */
typedef enum fl_png_format {
    FL_PNG_GREY = 1, /* one byte per pixel */
    FL_PNG_RGB = 3,  /* red, green, blue */
} fl_png_format;

/* Writes the w x h image `px` (w*h*fmt bytes, rows top to bottom, borrowed)
 * to `path` as an 8-bit PNG of that format, atomically (a temporary file in
 * the same folder, then rename): readers never see a half-written image.
 * Returns FL_ERR_INVALID for an empty or oversized image or an unknown
 * format, FL_ERR_NOMEM, or FL_ERR_IO; fl_err names the file. */
fl_status fl_png_write_as(const char *path, const uint8_t *px, uint32_t w, uint32_t h,
                          fl_png_format fmt);

/* fl_png_write_as(path, rgb, w, h, FL_PNG_RGB). */
fl_status fl_png_write(const char *path, const uint8_t *rgb, uint32_t w, uint32_t h);

#endif
