/* json.c - the JSON writer (every JSON file flowlab writes) and the reader
 * of one object's numeric fields (what `flowlab report` reads). */
#include "output/json.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- writer ------------------------------------------------------------ */

static void indent(fl_buf *b, int spaces)
{
    static const char sp[] = "                                ";
    for (; spaces > 0; spaces -= (int)(sizeof sp - 1))
        fl_buf_write(b, sp, spaces < (int)(sizeof sp - 1) ? (size_t)spaces : sizeof sp - 1);
}

/* The separator and layout before the next member, then its key. Returns 0
 * (writing nothing) on a misuse. */
static int member(fl_json *w, const char *key)
{
    if (w->depth <= 0) {
        w->misuse = 1;
        return 0;
    }
    int in_object = w->open[w->depth - 1].close == '}';
    if (in_object != (key != NULL)) {
        w->misuse = 1;
        return 0;
    }
    size_t *n = &w->open[w->depth - 1].n;
    if (*n) fl_buf_write(w->out, ",", 1);
    if (w->open[w->depth - 1].style == FL_JSON_BLOCK || w->brk) {
        fl_buf_write(w->out, "\n", 1);
        indent(w->out, 2 * w->depth);
    } else {
        fl_buf_write(w->out, " ", 1);
    }
    w->brk = 0;
    (*n)++;
    if (key) {
        fl_buf_json_str(w->out, key);
        fl_buf_write(w->out, ": ", 2);
    }
    return 1;
}

static void open_container(fl_json *w, char open, char close, fl_json_style style)
{
    if (w->depth >= FL_JSON_MAX_DEPTH) {
        w->misuse = 1;
        return;
    }
    fl_buf_write(w->out, &open, 1);
    w->open[w->depth].close = close;
    w->open[w->depth].style = style;
    w->open[w->depth].n = 0;
    w->depth++;
}

void fl_json_begin(fl_json *w, fl_buf *out)
{
    memset(w, 0, sizeof *w);
    w->out = out;
    open_container(w, '{', '}', FL_JSON_BLOCK);
}

void fl_json_key_str(fl_json *w, const char *key, const char *s)
{
    if (member(w, key)) fl_buf_json_str(w->out, s);
}

void fl_json_key_num(fl_json *w, const char *key, double v, const char *fmt)
{
    if (!member(w, key)) return;
    if (!isfinite(v)) {
        fl_buf_write(w->out, "null", 4);
        return;
    }
    /* one conversion of a double; its longest form (%f of 1e308) fits */
    char s[512];
    int n = snprintf(s, sizeof s, fmt ? fmt : "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof s) {
        w->misuse = 1;
        return;
    }
    fl_buf_write(w->out, s, (size_t)n);
}

void fl_json_key_int(fl_json *w, const char *key, long long v)
{
    if (member(w, key)) fl_buf_printf(w->out, "%lld", v);
}

void fl_json_key_uint(fl_json *w, const char *key, unsigned long long v)
{
    if (member(w, key)) fl_buf_printf(w->out, "%llu", v);
}

void fl_json_key_bool(fl_json *w, const char *key, int v)
{
    if (member(w, key)) fl_buf_printf(w->out, "%s", v ? "true" : "false");
}

void fl_json_key_null(fl_json *w, const char *key)
{
    if (member(w, key)) fl_buf_write(w->out, "null", 4);
}

void fl_json_key_object(fl_json *w, const char *key, fl_json_style style)
{
    if (member(w, key)) open_container(w, '{', '}', style);
}

void fl_json_key_array(fl_json *w, const char *key, fl_json_style style)
{
    if (member(w, key)) open_container(w, '[', ']', style);
}

/* Closes the innermost container, the top-level object included. */
static void close_container(fl_json *w)
{
    int d = --w->depth;
    char c = w->open[d].close;
    if (w->open[d].style == FL_JSON_INLINE) {
        fl_buf_write(w->out, " ", 1);
    } else if (w->open[d].n) {
        fl_buf_write(w->out, "\n", 1);
        indent(w->out, 2 * d);
    }
    fl_buf_write(w->out, &c, 1);
    w->brk = 0;
}

void fl_json_close(fl_json *w)
{
    if (w->depth <= 1) {
        w->misuse = 1;
        return;
    }
    close_container(w);
}

void fl_json_break(fl_json *w)
{
    w->brk = 1;
}

fl_status fl_json_end(fl_json *w)
{
    if (w->depth <= 0) w->misuse = 1;
    while (w->depth > 0) close_container(w);
    fl_buf_write(w->out, "\n", 1);
    if (w->misuse) {
        fl_err("JSON writer misused (a key in an array, a member without a key, nesting "
               "deeper than %d, or a close too many)",
               FL_JSON_MAX_DEPTH);
        return FL_ERR_INVALID;
    }
    if (w->out->failed) {
        fl_err("out of memory writing JSON");
        return FL_ERR_NOMEM;
    }
    return FL_OK;
}

/* ---- reader: the numeric fields of one object -------------------------- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Appends code point u as UTF-8. */
static void put_utf8(fl_buf *b, uint32_t u)
{
    char s[4];
    size_t n;
    if (u < 0x80) s[0] = (char)u, n = 1;
    else if (u < 0x800) s[0] = (char)(0xC0 | u >> 6), s[1] = (char)(0x80 | (u & 0x3F)), n = 2;
    else if (u < 0x10000)
        s[0] = (char)(0xE0 | u >> 12), s[1] = (char)(0x80 | ((u >> 6) & 0x3F)),
        s[2] = (char)(0x80 | (u & 0x3F)), n = 3;
    else
        s[0] = (char)(0xF0 | u >> 18), s[1] = (char)(0x80 | ((u >> 12) & 0x3F)),
        s[2] = (char)(0x80 | ((u >> 6) & 0x3F)), s[3] = (char)(0x80 | (u & 0x3F)), n = 4;
    fl_buf_write(b, s, n);
}

/* The 4 hex digits at p as a number, or -1. */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Parses a string literal at p (at the quote); returns the char after it,
 * or NULL (also for a malformed escape). With `out`, stores the unescaped
 * text, a \u escape (four hex digits; surrogate pairs joined) as UTF-8. */
static const char *json_string(const char *p, char **out)
{
    if (*p != '"') return NULL;
    fl_buf b = { 0 };
    for (p++; *p && *p != '"'; p++) {
        char c = *p;
        if (c == '\\') {
            p++;
            if (!*p) break;
            if (*p == 'u') {
                long u = hex4(p + 1);
                if (u < 0) break;
                p += 4;
                if (u >= 0xD800 && u < 0xDC00 && p[1] == '\\' && p[2] == 'u') {
                    long lo = hex4(p + 3);
                    if (lo >= 0xDC00 && lo < 0xE000) {
                        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                        p += 6;
                    }
                }
                if (out) put_utf8(&b, (uint32_t)u);
                continue;
            }
            c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'r' ? '\r' : *p == 'b' ? '\b'
              : *p == 'f' ? '\f' : *p;
        }
        if (out) fl_buf_write(&b, &c, 1);
    }
    if (*p != '"' || b.failed) {
        fl_buf_free(&b);
        return NULL;
    }
    if (out) {
        *out = b.data ? b.data : fl_strdup("");
        if (!*out) return NULL;
    }
    return p + 1;
}

/* Skips one value of any kind; NULL when malformed. */
static const char *json_skip(const char *p)
{
    p = skip_ws(p);
    if (*p == '"') return json_string(p, NULL);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; *p; p++) {
            if (*p == '"') {
                p = json_string(p, NULL);
                if (!p) return NULL;
                p--;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
        }
        return NULL;
    }
    const char *q = p;
    while (*q && *q != ',' && *q != '}' && *q != ']' && !isspace((unsigned char)*q)) q++;
    return q > p ? q : NULL;
}

void fl_json_numbers_free(fl_json_num *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) free(v[i].name);
    free(v);
}

fl_status fl_json_numbers(const char *text, fl_json_num **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    fl_json_num *v = NULL;
    size_t cnt = 0;
    const char *p = skip_ws(text);
    fl_status st = *p == '{' ? FL_OK : FL_ERR_FORMAT;
    if (st == FL_OK) p = skip_ws(p + 1);
    while (st == FL_OK && *p != '}') {
        char *name = NULL;
        p = json_string(p, &name);
        if (p) p = skip_ws(p);
        if (!p || *p != ':') {
            free(name);
            st = FL_ERR_FORMAT;
            break;
        }
        p = skip_ws(p + 1);
        const char *end = json_skip(p);
        if (!end) {
            free(name);
            st = FL_ERR_FORMAT;
            break;
        }
        char *num_end = NULL;
        double x = (*p == '-' || isdigit((unsigned char)*p)) ? strtod(p, &num_end) : NAN;
        if (num_end == end && isfinite(x)) {
            fl_json_num *nv = realloc(v, (cnt + 1) * sizeof *nv);
            if (!nv) {
                free(name);
                st = FL_ERR_NOMEM;
                break;
            }
            v = nv;
            v[cnt].name = name;
            v[cnt].v = x;
            cnt++;
        } else {
            free(name);
        }
        p = skip_ws(end);
        if (*p == ',') p = skip_ws(p + 1);
        else if (*p != '}') st = FL_ERR_FORMAT;
    }
    if (st != FL_OK) {
        fl_json_numbers_free(v, cnt);
        if (st == FL_ERR_FORMAT) fl_err("malformed JSON object");
        else fl_err("out of memory reading a JSON object");
        return st;
    }
    *out = v;
    *n = cnt;
    return FL_OK;
}
