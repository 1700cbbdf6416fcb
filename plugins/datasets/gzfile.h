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

/* Checks, once gzread has returned 0 (the end) on gzip file `path`
 * after `total` uncompressed bytes, that nothing but gzip members follows:
 * zlib ignores bytes after a member that do not start another one, so
 * images glued on, or a second file appended, would be lost unseen.
 * Cheap when the file ends with its only member (its trailer's ISIZE is
 * `total` mod 2^32); else the members are walked with inflate to find
 * where they end. Reports "PATH: N bytes after the end of the compressed
 * data" and returns FL_ERR_FORMAT; FL_OK otherwise, and when the file
 * cannot be read again (the caller has just read it). */
static inline fl_status fl_gz_check_end(const fl_host *h, fl_ctx *cx, const char *path,
                                        uint64_t total)
{
    FILE *f = fopen(path, "rb");
    if (!f) return FL_OK;
    unsigned char t[4];
    if (fseek(f, -4, SEEK_END) == 0 && fread(t, 1, 4, f) == 4 &&
        ((uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24) ==
            (uint32_t)total) {
        fclose(f);
        return FL_OK;
    }
    /* Several members, or bytes after the last: walk them. */
    enum { IN = 1 << 16 };
    unsigned char *in = malloc(IN), *out = malloc(IN);
    z_stream z;
    memset(&z, 0, sizeof z);
    fl_status st = FL_OK;
    long end = 0;  /* raw offset just past the last whole member */
    int ok = in && out && inflateInit2(&z, 15 + 16) == Z_OK;
    while (ok) {
        /* at `end`: the file's end, another member, or stray bytes */
        unsigned char m[2];
        size_t k = fseek(f, end, SEEK_SET) == 0 ? fread(m, 1, 2, f) : 0;
        if (k == 0) break;
        if (k < 2 || m[0] != 0x1f || m[1] != 0x8b) {
            fseek(f, 0, SEEK_END);
            h->error(cx, "%s: %ld bytes after the end of the compressed data (not another gzip "
                     "member): a damaged file, or two files glued together",
                     path, ftell(f) - end);
            st = FL_ERR_FORMAT;
            break;
        }
        fseek(f, end, SEEK_SET);
        inflateReset(&z);
        int r = Z_OK;
        long fed = end;
        while (r != Z_STREAM_END) {
            z.avail_in = (uInt)fread(in, 1, IN, f);
            z.next_in = in;
            fed += (long)z.avail_in;
            if (z.avail_in == 0) break;
            do {
                z.next_out = out;
                z.avail_out = IN;
                r = inflate(&z, Z_NO_FLUSH);
            } while (r == Z_OK && z.avail_in > 0);
            if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) break;
        }
        if (r != Z_STREAM_END) break; /* gzread has said what is wrong, if anything */
        end = fed - (long)z.avail_in;
    }
    if (ok) inflateEnd(&z);
    free(in);
    free(out);
    fclose(f);
    return st;
}

#endif
