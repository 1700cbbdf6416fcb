/* rows.h - a user's own points for `flowlab logprob`: a CSV file or a
 * NumPy .npy array, read into rows of fl_real. */
#ifndef FL_TASKS_ROWS_H
#define FL_TASKS_ROWS_H

#include <stdint.h>

#include <flowlab/core.h>

/* An array read from a file: n rows of dim values, row-major. */
typedef struct fl_rows {
    fl_real *x;      /* n x dim, fl_alloc'ed; free with fl_rows_free */
    uint64_t n;      /* rows */
    uint32_t dim;    /* values per row */
    int bytes;       /* .npy with dtype u1 (the values are the bytes 0..255) */
} fl_rows;

/* Reads a NumPy .npy file: format versions 1.0, 2.0 and 3.0, dtype
 * little-endian float32 ('<f4'), float64 ('<f8') or uint8 ('|u1', '<u1',
 * '>u1'), C order, shape (n, dim) or (n,) (then dim = 1). Every other
 * dtype, Fortran order, or a file shorter or longer than its header says
 * is refused with FL_ERR_FORMAT and one fl_err line naming the file and
 * what is wrong; a missing file is FL_ERR_IO. On success the caller owns
 * out->x (fl_rows_free). Any thread. */
fl_status fl_rows_read_npy(const char *path, fl_rows *out);

/* Reads a CSV file of numbers: one row per line, values separated by
 * commas (blanks around them allowed), an optional first line of column
 * names (a first line that is not all numbers), blank lines skipped. Rows
 * of differing widths or a field that is not a number are FL_ERR_FORMAT,
 * named by file, line and column. Ownership as fl_rows_read_npy. */
fl_status fl_rows_read_csv(const char *path, fl_rows *out);

/* By the name's ending: .npy, else CSV. */
fl_status fl_rows_read(const char *path, fl_rows *out);

void fl_rows_free(fl_rows *r);

#endif
