/* util.c - errors, strings, files. */
#define _POSIX_C_SOURCE 200809L
#include "core/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char err_msg[2048];

void fl_err_v(const char *fmt, va_list ap)
{
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
}

void fl_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fl_err_v(fmt, ap);
    va_end(ap);
}

void fl_err_prefix(const char *fmt, ...)
{
    char pre[1024], old[sizeof err_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    snprintf(err_msg, sizeof err_msg, "%s: %s", pre, old);
}

const char *fl_err_msg(void) { return err_msg[0] ? err_msg : "unknown error"; }
void fl_err_clear(void) { err_msg[0] = 0; }

int fl_exit_code(fl_status st)
{
    switch (st) {
    case FL_OK: return FL_EXIT_OK;
    case FL_ERR_INVALID: return FL_EXIT_CONFIG;
    case FL_ERR_IO: case FL_ERR_EXISTS: case FL_ERR_FORMAT: return FL_EXIT_IO;
    case FL_ERR_ABI: case FL_ERR_NOT_FOUND: return FL_EXIT_PLUGIN;
    default: return FL_EXIT_FAILURE;
    }
}

void *fl_alloc(size_t bytes)
{
    size_t sz = (bytes + 63) & ~(size_t)63;
    if (sz == 0) sz = 64;
    void *p = aligned_alloc(64, sz);
    if (p) memset(p, 0, sz);
    return p;
}

void fl_free(void *p) { free(p); }

char *fl_strdup(const char *s) { return s ? fl_strndup(s, strlen(s)) : NULL; }

char *fl_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *fl_strtrim(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) n--;
    return fl_strndup(s, n);
}

char *fl_strfmt(const char *fmt, ...)
{
    va_list ap, aq;
    va_start(ap, fmt);
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) vsnprintf(s, (size_t)n + 1, fmt, aq);
    va_end(aq);
    return s;
}

size_t fl_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return (size_t)-1;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

fl_status fl_mkdirs(const char *path)
{
    char *p = fl_strdup(path);
    if (!p) return FL_ERR_NOMEM;
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                fl_err("cannot create directory %s: %s", p, strerror(errno));
                free(p);
                return FL_ERR_IO;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return FL_OK;
}

fl_status fl_write_atomic(const char *path, const void *data, size_t n)
{
    char *tmp = fl_strfmt("%s.tmp.%ld", path, (long)getpid());
    if (!tmp) return FL_ERR_NOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        fl_err("cannot write %s: %s", path, strerror(errno));
        free(tmp);
        return FL_ERR_IO;
    }
    const char *p = data;
    size_t left = n;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            fl_err("cannot write %s: %s", path, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return FL_ERR_IO;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fl_err("cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return FL_ERR_IO;
    }
    if (rename(tmp, path) != 0) {
        fl_err("cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return FL_ERR_IO;
    }
    free(tmp);
    return FL_OK;
}

static void buf_reserve(fl_buf *b, size_t extra)
{
    if (b->failed || b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return;
    }
    b->data = d;
    b->cap = cap;
}

void fl_buf_write(fl_buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (b->failed) return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void fl_buf_printf(fl_buf *b, const char *fmt, ...)
{
    va_list ap, aq;
    va_start(ap, fmt);
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0) {
        buf_reserve(b, (size_t)n);
        if (!b->failed) {
            vsnprintf(b->data + b->len, (size_t)n + 1, fmt, aq);
            b->len += (size_t)n;
        }
    }
    va_end(aq);
}

void fl_buf_csv(fl_buf *b, const char *s)
{
    if (!s) s = "";
    if (!strpbrk(s, ",\"\r\n")) {
        fl_buf_write(b, s, strlen(s));
        return;
    }
    fl_buf_write(b, "\"", 1);
    for (const char *q; (q = strchr(s, '"')); s = q + 1) {
        fl_buf_write(b, s, (size_t)(q - s) + 1);
        fl_buf_write(b, "\"", 1);
    }
    fl_buf_write(b, s, strlen(s));
    fl_buf_write(b, "\"", 1);
}

void fl_buf_json_str(fl_buf *b, const char *s)
{
    fl_buf_write(b, "\"", 1);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fl_buf_printf(b, "\\%c", c);
        else if (c == '\n') fl_buf_write(b, "\\n", 2);
        else if (c == '\r') fl_buf_write(b, "\\r", 2);
        else if (c == '\t') fl_buf_write(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f) fl_buf_printf(b, "\\u%04x", c);
        else fl_buf_write(b, s, 1);
    }
    fl_buf_write(b, "\"", 1);
}

void fl_buf_free(fl_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

fl_status fl_read_file(const char *path, char **data, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fl_err("cannot open %s: %s", path, strerror(errno));
        return FL_ERR_IO;
    }
    fl_buf b = { 0 };
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) fl_buf_write(&b, chunk, r);
    int bad = ferror(f);
    fclose(f);
    if (bad || b.failed) {
        /* fopen succeeds on a directory; reading it fails with EISDIR */
        fl_err("cannot read %s: %s", path, bad ? strerror(errno) : "out of memory");
        fl_buf_free(&b);
        return bad ? FL_ERR_IO : FL_ERR_NOMEM;
    }
    if (!b.data) fl_buf_write(&b, "", 0);
    if (!b.data) {
        b.data = calloc(1, 1);
        if (!b.data) return FL_ERR_NOMEM;
    }
    *data = b.data;
    if (n) *n = b.len;
    return FL_OK;
}

double fl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
