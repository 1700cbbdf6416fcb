/* util.h - small helpers shared by the host: errors, strings, files, and
 * two constants every layer uses. */
#ifndef FL_UTIL_H
#define FL_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <flowlab/core.h>

/* The host keeps one pending error message per thread: a failing function
 * sets it with fl_err() and returns a status; the caller that reports it to
 * the user reads it with fl_err_msg(). */
void fl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fl_err_v(const char *fmt, va_list ap);
const char *fl_err_msg(void);
void fl_err_clear(void);

/* Prefixes the pending message with "prefix: ". */
void fl_err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Exit codes of the flowlab command (documented in README and --help). */
enum {
    FL_EXIT_OK = 0,
    FL_EXIT_FAILURE = 1,  /* the run itself failed (NaN, numeric error) */
    FL_EXIT_USAGE = 2,    /* bad command line */
    FL_EXIT_CONFIG = 3,   /* bad experiment file or --set */
    FL_EXIT_PLUGIN = 4,   /* missing or refused plugin */
    FL_EXIT_IO = 5        /* missing input file, unwritable output */
};
int fl_exit_code(fl_status st);

/* Allocation that returns NULL on failure, aligned to 64 bytes, zeroed. */
void *fl_alloc(size_t bytes);
void fl_free(void *p);

char *fl_strdup(const char *s);
char *fl_strndup(const char *s, size_t n);
/* Copies s into a new string with leading and trailing blanks removed. */
char *fl_strtrim(const char *s);
/* printf into a newly allocated string. */
char *fl_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Levenshtein distance ignoring ASCII case, for "did you mean" suggestions. */
size_t fl_edit_distance(const char *a, const char *b);

/* Creates a directory and its parents (mode 0777 & umask). */
fl_status fl_mkdirs(const char *path);

/* Writes `n` bytes to `path` atomically: a temporary file in the same
 * directory, fsync, rename. Sets fl_err on failure. */
fl_status fl_write_atomic(const char *path, const void *data, size_t n);

/* An in-memory text buffer for building files before an atomic write. */
typedef struct fl_buf {
    char *data;
    size_t len, cap;
    int failed;  /* an allocation failed; contents are incomplete */
} fl_buf;
void fl_buf_printf(fl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fl_buf_write(fl_buf *b, const void *p, size_t n);
void fl_buf_free(fl_buf *b);
/* Appends `s` as one CSV field (RFC 4180): as is, or between double quotes
 * with inner quotes doubled when it holds ',', '"', '\r' or '\n' (line
 * breaks are kept inside the quotes). NULL is the empty field. `s` stays the
 * caller's. Like every fl_buf call it reports an allocation failure only
 * through b->failed; it never sets fl_err. */
void fl_buf_csv(fl_buf *b, const char *s);
/* Appends `s` as a JSON string literal, quotes included: '"' and '\\'
 * escaped, \n \r \t by name, other control characters (and DEL) as
 * \u00XX; other bytes are copied (UTF-8 passes through). NULL is "".
 * Ownership and errors as fl_buf_csv. */
void fl_buf_json_str(fl_buf *b, const char *s);

/* Reads a whole file into a new NUL-terminated buffer. */
fl_status fl_read_file(const char *path, char **data, size_t *n);

/* Wall-clock seconds from a monotonic clock. */
double fl_now(void);

/* log(2 pi) / 2, the normal density's constant per dimension: the literal
 * every file used to define for itself (same double). */
#define FL_HALF_LOG_2PI 0.91893853320467274178
/* Number of elements of array `t` (an array, never a pointer), as the
 * uint32_t counts of key tables. */
#define FL_NTAB(t) ((uint32_t)(sizeof(t) / sizeof((t)[0])))

#endif
