/* json.h - the one JSON module: a writer for every JSON file flowlab
 * writes (result.json, eval*.json, provenance.json, gradvar.json) and a
 * reader for the numeric fields of one object (what `flowlab report`
 * needs of result.json, eval.json and gradvar.json).
 *
 * The writer appends to an fl_buf and lays each object or array out in one
 * of two styles, chosen when it is opened:
 *   FL_JSON_BLOCK   one member per line, indented two spaces a level:
 *                     {
 *                       "a": 1,
 *                       "b": [1, ...]
 *                     }
 *                   (an empty one is {} or [])
 *   FL_JSON_INLINE  on the parent's line: { "a": 1, "b": 2 } ([ ] when
 *                   empty); fl_json_break starts the next member on a new
 *                   line, indented two spaces a level
 * Numbers take a printf conversion per field ("%.6f", "%.9g", "%g"), so a
 * file's bytes are the writer's choice, field by field; a non-finite
 * number is written as null.
 *
 * A result file, then its atomic write:
 *
 *   fl_buf js = { 0 };
 *   fl_json w;
 *   fl_json_begin(&w, &js);
 *   fl_json_key_str(&w, "task", "density");
 *   fl_json_key_num(&w, "test_nll", nll, "%.6f");
 *   fl_json_key_uint(&w, "steps", steps);
 *   fl_status st = fl_json_end(&w);
 *   if (st == FL_OK) st = fl_rundir_write(dir, "result.json", js.data, js.len);
 *   fl_buf_free(&js);
 */
#ifndef FL_JSON_H
#define FL_JSON_H

#include <stddef.h>

#include "core/util.h"

/* ---- writer ------------------------------------------------------------ */

/* How an object or array is laid out (see the top of this file). */
typedef enum fl_json_style { FL_JSON_BLOCK, FL_JSON_INLINE } fl_json_style;

/* Objects and arrays open at once, the top-level object included. */
#define FL_JSON_MAX_DEPTH 16

/* A writer. Its fields are the writer's own: initialise with fl_json_begin,
 * use only through the functions below. */
typedef struct fl_json {
    fl_buf *out;   /* the text so far (the caller's buffer, appended to) */
    int depth;     /* open objects and arrays, the top-level object included */
    struct {
        char close;          /* '}' or ']' */
        fl_json_style style; /* layout of its members */
        size_t n;            /* members written so far */
    } open[FL_JSON_MAX_DEPTH];
    int brk;       /* fl_json_break was called: the next inline member starts a line */
    int misuse;    /* a call out of place (a key inside an array, no key inside
                      an object, too deep, closing what is not open, a
                      member after the end): fl_json_end reports it */
} fl_json;

/* Starts a JSON document in `out` (appending to what it holds) with the
 * top-level object open, in block style. `out` stays the caller's and must
 * live until fl_json_end. Any time. */
void fl_json_begin(fl_json *w, fl_buf *out);

/* Members. `key` is the member's name inside an object (escaped as a JSON
 * string) and must be NULL inside an array. Like fl_buf calls they never
 * fail on their own: an allocation failure shows in out->failed, a misuse
 * in w->misuse, and fl_json_end reports both. Between fl_json_begin and
 * fl_json_end only. */
/* `s` as a JSON string (fl_buf_json_str's escaping); NULL is "". */
void fl_json_key_str(fl_json *w, const char *key, const char *s);
/* `v` printed with `fmt`, one printf conversion of a double ("%.6f",
 * "%.9g", "%g"; NULL: "%.17g", which reads back exactly); null when `v` is
 * not finite (NaN, +-inf are not JSON). */
void fl_json_key_num(fl_json *w, const char *key, double v, const char *fmt);
/* Integers, in decimal. */
void fl_json_key_int(fl_json *w, const char *key, long long v);
void fl_json_key_uint(fl_json *w, const char *key, unsigned long long v);
/* true (v != 0) or false. */
void fl_json_key_bool(fl_json *w, const char *key, int v);
void fl_json_key_null(fl_json *w, const char *key);

/* Opens an object or array as the next member; its members follow, then
 * fl_json_close. */
void fl_json_key_object(fl_json *w, const char *key, fl_json_style style);
void fl_json_key_array(fl_json *w, const char *key, fl_json_style style);
/* Closes the innermost open object or array (never the top-level object:
 * fl_json_end does). */
void fl_json_close(fl_json *w);

/* The next member of the open inline object or array starts on a new line,
 * indented two spaces per open level (no effect in block style, where
 * every member does). */
void fl_json_break(fl_json *w);

/* Closes whatever is still open, the top-level object last, and ends the
 * text with a newline. FL_OK; FL_ERR_NOMEM when the buffer lost text
 * (out->failed); FL_ERR_INVALID after a misuse (a bug of the caller), with
 * fl_err set in both cases. The text is in the caller's buffer either way;
 * write it only on FL_OK. */
fl_status fl_json_end(fl_json *w);

/* ---- reader ------------------------------------------------------------ */

/* One numeric field of a JSON object. */
typedef struct fl_json_num {
    char *name;   /* the member's name, unescaped (UTF-8); owned by the array */
    double v;     /* its value (always finite) */
} fl_json_num;

/* The numeric top-level fields of the JSON object `text` (NUL-terminated),
 * in order; strings, booleans, null, non-finite numbers, nested objects and
 * arrays are skipped. On FL_OK the caller owns *out: free it with
 * fl_json_numbers_free. Malformed text (not an object, a bad string escape,
 * a missing ':' or ',', unbalanced brackets, text cut short) is
 * FL_ERR_FORMAT, out of memory FL_ERR_NOMEM, with fl_err set and *out NULL,
 * *n 0. Any time, any thread. */
fl_status fl_json_numbers(const char *text, fl_json_num **out, size_t *n);

/* Frees what fl_json_numbers returned (NULL is fine). */
void fl_json_numbers_free(fl_json_num *v, size_t n);

#endif
