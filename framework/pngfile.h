/* pngfile.h - writing 8-bit RGB images as PNG files. */
#ifndef FL_PNG_H
#define FL_PNG_H

#include <stdint.h>

#include "util.h"

/* Writes the w x h image `rgb` (w*h*3 bytes, rows top to bottom, borrowed)
 * to `path` as an 8-bit RGB PNG, atomically (a temporary file in the same
 * folder, then rename): readers never see a half-written image. Returns
 * FL_ERR_INVALID for an empty or oversized image, FL_ERR_NOMEM, or
 * FL_ERR_IO; fl_err names the file. */
fl_status fl_png_write(const char *path, const uint8_t *rgb, uint32_t w, uint32_t h);

#endif
