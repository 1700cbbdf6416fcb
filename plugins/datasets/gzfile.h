/* gzfile.h - what the gzip-reading data sets (amat.c, idx.c) share: opening
 * a file with one clear message, zlib's complaint without its path prefix,
 * the "plain file, else .gz" lookup, and a clock for their load messages.
 * Private to plugins/datasets (header-only: each plugin is its own .so). */
#ifndef FL_PLUGINS_GZFILE_H
#define FL_PLUGINS_GZFILE_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zlib.h>

#include <flowlab/flowlab.h>

static inline double fl_gz_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Opens `path` (plain or gzip) for reading into *g. On failure reports
 * "PATH: no such file" + hint, or why it cannot be opened, and returns
 * FL_ERR_IO (FL_ERR_NOMEM when only zlib's own allocation failed); a file
 * named .gz that is not gzip is FL_ERR_FORMAT. */
static inline fl_status fl_gz_open(const fl_host *h, fl_ctx *cx, const char *path,
                                   const char *hint, gzFile *g)
{
    errno = 0;
    *g = gzopen(path, "rb");
    if (*g) {
        gzbuffer(*g, 1u << 18);
        /* zlib reads a plain file as it is: a .gz name on one is a mistake */
        size_t n = strlen(path);
        if (n > 3 && strcmp(path + n - 3, ".gz") == 0 && gzdirect(*g)) {
            h->error(cx, "%s: not a gzip file (the name ends in .gz)", path);
            gzclose(*g);
            *g = NULL;
            return FL_ERR_FORMAT;
        }
        return FL_OK;
    }
    int e = errno; /* gzopen leaves errno 0 when only its own allocation failed */
    if (e == ENOENT)
        h->error(cx, "%s: no such file%s", path, hint);
    else
        h->error(cx, "cannot open %s: %s", path, e ? strerror(e) : "out of memory");
    return e ? FL_ERR_IO : FL_ERR_NOMEM;
}

/* zlib's complaint about g ("" when there is none), without the "path: "
 * zlib puts in front (our messages name the file); *is_errno says it is a
 * system error (then strerror(errno) tells more). */
static inline const char *fl_gz_note(gzFile g, const char *path, int *is_errno)
{
    int zerr = Z_OK;
    const char *m = gzerror(g, &zerr);
    *is_errno = zerr == Z_ERRNO;
    if (zerr == Z_OK) return "";
    size_t n = strlen(path);
    return strncmp(m, path, n) == 0 && m[n] == ':' && m[n + 1] == ' ' ? m + n + 2 : m;
}

/* dir/name, or dir/name.gz when the uncompressed file is absent; malloc'd
 * (the caller frees it), NULL when out of memory. */
static inline char *fl_gz_path(const char *dir, const char *name)
{
    const char *sep = dir[0] && dir[strlen(dir) - 1] != '/' ? "/" : "";
    size_t n = strlen(dir) + strlen(name) + 8;
    char *p = malloc(n);
    if (!p) return NULL;
    snprintf(p, n, "%s%s%s", dir, sep, name);
    FILE *f = fopen(p, "rb");
    if (f) {
        fclose(f);
        return p;
    }
    snprintf(p, n, "%s%s%s.gz", dir, sep, name);
    return p;
}

#endif
