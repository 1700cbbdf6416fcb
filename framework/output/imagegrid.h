/* imagegrid.h - pictures of image rows (data, samples, reconstructions).
 *
 * Images are rows of h*w fl_real values, row-major, 0 = black, 1 = white
 * (the convention of the image data sets, where the background is 0).
 * Values are clamped to [0, 1] and rounded to 8 bits; NaN becomes 0.
 * Separators and empty cells are mid grey (128), visible against both a
 * black and a white image. Output is an 8-bit greyscale PNG written
 * atomically (a temporary file in the same folder, then rename). */
#ifndef FL_IMAGEGRID_H
#define FL_IMAGEGRID_H

#include <stdint.h>

#include <flowlab/core.h>

/* Grey level of separators and empty cells. */
#define FL_IMAGE_PAD_GREY 128

/* Writes n images (`images`: n rows of h*w values, borrowed) as a grid of
 * `cols` columns (fewer when n < cols) and ceil(n/cols) rows, left to
 * right then top to bottom, with `pad` separator pixels around and between
 * the images. Image i's top-left pixel is at
 *   x = pad + (i % cols) * (w + pad),  y = pad + (i / cols) * (h + pad).
 * Returns FL_ERR_INVALID (NULL argument, n, h, w or cols zero, or a picture
 * wider or taller than 65535 pixels), FL_ERR_NOMEM, FL_ERR_INTERNAL (the
 * encoder failed) or FL_ERR_IO; fl_err names the file. */
fl_status fl_image_grid_png(const char *path, const fl_real *images, uint32_t n, uint32_t h,
                            uint32_t w, uint32_t cols, uint32_t pad);

/* Writes n originals next to their reconstructions (both n rows of h*w
 * values, borrowed): images are taken `cols` at a time (fewer when n <
 * cols), each group as a row of originals with the row of their
 * reconstructions just below, so each reconstruction sits under its
 * original. Rows of one pair are `pad` pixels apart and consecutive pairs
 * of rows 2*pad, so the pairing stays visible. Original i's top-left pixel
 * is at x = pad + (i % cols) * (w + pad), y = pad + (i / cols) * (2*h + 3*pad);
 * its reconstruction h + pad lower. Errors as fl_image_grid_png. */
fl_status fl_image_pairs_png(const char *path, const fl_real *orig, const fl_real *recon,
                             uint32_t n, uint32_t h, uint32_t w, uint32_t cols, uint32_t pad);

/* Writes n_blocks blocks of per_block images each (`images`: n_blocks *
 * per_block rows of h*w*c values, borrowed, NHWC: value (y*w + x)*c + ch;
 * c = 1 grey, c = 3 red, green, blue), every block laid out as
 * fl_image_grid_png lays out its images (`cols` columns), the blocks one
 * below the other with 3*pad pixels between them, as a grey (c = 1) or RGB
 * (c = 3) PNG. Block b's first image has its top-left pixel at
 *   x = pad, y = pad + b * (rows * (h + pad) + 2*pad),
 * rows = ceil(per_block / cols) (with cols <= per_block). Errors as
 * fl_image_grid_png, and FL_ERR_INVALID for another c. */
fl_status fl_image_blocks_png(const char *path, const fl_real *images, uint32_t n_blocks,
                              uint32_t per_block, uint32_t c, uint32_t h, uint32_t w,
                              uint32_t cols, uint32_t pad);

/* fl_image_blocks_png's picture, unscaled, with `title` (NULL: none) in a
 * strip above it and labels[b] (NULL: no labels; else n_blocks of them,
 * borrowed) left of the middle of block b, through fl_chart_image.
 * *x_off and *y_off (may be NULL) receive where the block picture's
 * top-left pixel lands. Errors as fl_image_blocks_png. */
fl_status fl_image_blocks_captioned_png(const char *path, const fl_real *images,
                                        uint32_t n_blocks, uint32_t per_block, uint32_t c,
                                        uint32_t h, uint32_t w, uint32_t cols, uint32_t pad,
                                        const char *title, const char *const *labels,
                                        uint32_t *x_off, uint32_t *y_off);

#endif
