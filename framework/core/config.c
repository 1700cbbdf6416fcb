/* config.c - INI loading (inih), --set overrides, schema validation. */
#define _POSIX_C_SOURCE 200809L
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

fl_config *fl_config_new(const char *path)
{
    fl_config *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->path = fl_strdup(path ? path : "");
    if (!c->path) {
        free(c);
        return NULL;
    }
    return c;
}

void fl_config_free(fl_config *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        fl_cfg_section *s = &c->s[i];
        for (size_t j = 0; j < s->n; j++) {
            free(s->e[j].key);
            free(s->e[j].value);
        }
        free(s->e);
        free(s->name);
    }
    free(c->s);
    free(c->path);
    free(c);
}

fl_cfg_section *fl_config_section(const fl_config *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->s[i].name, name) == 0) return &c->s[i];
    return NULL;
}

fl_cfg_entry *fl_config_entry(const fl_cfg_section *s, const char *key)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (strcmp(s->e[i].key, key) == 0) return &s->e[i];
    return NULL;
}

static fl_cfg_section *add_section(fl_config *c, const char *name, int line)
{
    fl_cfg_section *s = fl_config_section(c, name);
    if (s) return s;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 8;
        fl_cfg_section *ns = realloc(c->s, cap * sizeof *ns);
        if (!ns) return NULL;
        c->s = ns;
        c->cap = cap;
    }
    s = &c->s[c->n];
    memset(s, 0, sizeof *s);
    s->name = fl_strdup(name);
    if (!s->name) return NULL;
    s->line = line;
    c->n++;
    return s;
}

int fl_config_valid_section(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_' || *s == '.' ||
              *s == '-'))
            return 0;
    return 1;
}

int fl_config_valid_key(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_')) return 0;
    return 1;
}

fl_status fl_config_put(fl_config *c, const char *section, const char *key, const char *value,
                        int line)
{
    fl_cfg_section *s = add_section(c, section, line);
    if (!s) return FL_ERR_NOMEM;
    fl_cfg_entry *e = fl_config_entry(s, key);
    if (e) {
        char *v = fl_strdup(value);
        if (!v) return FL_ERR_NOMEM;
        free(e->value);
        e->value = v;
        e->line = line;
        return FL_OK;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 8;
        fl_cfg_entry *ne = realloc(s->e, cap * sizeof *ne);
        if (!ne) return FL_ERR_NOMEM;
        s->e = ne;
        s->cap = cap;
    }
    e = &s->e[s->n];
    e->key = fl_strdup(key);
    e->value = fl_strdup(value);
    e->line = line;
    e->used = 0;
    if (!e->key || !e->value) {
        free(e->key);
        free(e->value);
        return FL_ERR_NOMEM;
    }
    s->n++;
    return FL_OK;
}

/* inih gives no line numbers to the handler in Debian's build, so the
 * reader counts lines as it hands them over. */
typedef struct parse_state {
    fl_config *c;
    const char *text;   /* remaining input */
    int line;
    fl_status st;
    int st_line;       /* line of the handler's or reader's error */
    char section[256];
    int section_line;
} parse_state;

/* inih reads a line into a fixed buffer of INI_MAX_LINE bytes, fixed when
 * the library was built (200 in Debian's), and cuts what does not fit
 * without a word. It passes that size to the reader, which is how the
 * limit is learnt here rather than trusted from the header. */
static char *limit_reader(char *str, int num, void *stream)
{
    (void)str;
    *(int *)stream = num;
    return NULL;
}

static int limit_handler(void *u, const char *s, const char *n, const char *v)
{
    (void)u, (void)s, (void)n, (void)v;
    return 1;
}

size_t fl_config_max_line(void)
{
    static int num;
    if (!num) {
        int got = 0;
        ini_parse_stream(limit_reader, &got, limit_handler, NULL);
        num = got > 1 ? got : INI_MAX_LINE;
    }
    return (size_t)num - 1; /* one byte is the terminating NUL */
}

/* inih also keeps the current section's name in a fixed buffer
 * (MAX_SECTION, 50 in Debian's build) and cuts a longer name without a
 * word, so [flow.1<60 more characters>] would silently become another
 * section. The limit is learnt the same way: parse a header longer than
 * any such buffer and see how much of it arrives. */
static int section_handler(void *u, const char *s, const char *n, const char *v)
{
    (void)n, (void)v;
    *(size_t *)u = strlen(s);
    return 1;
}

size_t fl_config_max_section(void)
{
    static size_t max;
    if (!max) {
        char text[160];
        memset(text, 'a', sizeof text);
        text[0] = '[';
        memcpy(text + sizeof text - 8, "]\nk=v\n", 7);
        text[sizeof text - 1] = 0;
        size_t got = 0;
        ini_parse_string(text, section_handler, &got);
        max = got ? got : sizeof text - 9;
    }
    return max;
}

static char *reader(char *str, int num, void *stream)
{
    parse_state *ps = stream;
    if (!*ps->text) return NULL;
    const char *nl = strchr(ps->text, '\n');
    size_t len = nl ? (size_t)(nl - ps->text) + 1 : strlen(ps->text);
    /* Indented lines are ordinary lines here: inih would glue them to the
     * previous key as a continuation, which nobody means in an experiment
     * file. */
    const char *line = ps->text;
    while (len > 1 && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    ps->text = line;
    /* inih would cut a line longer than its buffer and parse the rest as
     * if it were all: refuse it (the line's end, "\r\n", does not count;
     * inih strips it). Parsing stops here; an earlier error wins. */
    size_t content = len;
    if (content && ps->text[content - 1] == '\n') content--;
    if (content && ps->text[content - 1] == '\r') content--;
    /* A comment loses nothing when cut (the rest of the line is skipped
     * below); sweeps hand over their [sweep] lines commented out, of any
     * length. */
    int comment = *ps->text == ';' || *ps->text == '#';
    if (content > (size_t)num - 1 && !comment) {
        if (ps->st == FL_OK) {
            fl_err("%s:%d: line is %zu bytes long; flowlab's INI parser (inih) reads at most %d "
                   "(shorten the value, or set it with --set)",
                   ps->c->path, ps->line + 1, content, num - 1);
            ps->st = FL_ERR_INVALID;
            ps->st_line = ps->line + 1;
        }
        return NULL;
    }
    /* a "[name]" header whose name inih would cut */
    if (*ps->text == '[') {
        const char *end = memchr(ps->text, ']', content);
        size_t n = end ? (size_t)(end - ps->text - 1) : 0;
        if (n > fl_config_max_section()) {
            if (ps->st == FL_OK) {
                fl_err("%s:%d: section name is %zu characters long; flowlab's INI parser "
                       "(inih) keeps at most %zu",
                       ps->c->path, ps->line + 1, n, fl_config_max_section());
                ps->st = FL_ERR_INVALID;
                ps->st_line = ps->line + 1;
            }
            return NULL;
        }
    }
    size_t take = len < (size_t)num - 1 ? len : (size_t)num - 1;
    memcpy(str, ps->text, take);
    str[take] = 0;
    ps->text += len;
    ps->line++;
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    if (ps->st != FL_OK) return 0;
    const char *path = ps->c->path;
    if (!*section) {
        fl_err("%s:%d: key '%s' appears before any [section]", path, ps->line, name);
        ps->st = FL_ERR_INVALID;
        ps->st_line = ps->line;
        return 0;
    }
    if (!fl_config_valid_section(section)) {
        fl_err("%s:%d: bad section name [%s]: use lower-case letters, digits, '_', '-', '.'", path,
               ps->line, section);
        ps->st = FL_ERR_INVALID;
        ps->st_line = ps->line;
        return 0;
    }
    if (!fl_config_valid_key(name)) {
        fl_err("%s:%d: [%s] bad key name '%s': use lower-case letters, digits and '_'", path,
               ps->line, section, name);
        ps->st = FL_ERR_INVALID;
        ps->st_line = ps->line;
        return 0;
    }
    fl_cfg_section *s = fl_config_section(ps->c, section);
    fl_cfg_entry *e = s ? fl_config_entry(s, name) : NULL;
    if (e) {
        fl_err("%s:%d: [%s] key '%s' is set twice (first on line %d)", path, ps->line, section,
               name, e->line);
        ps->st = FL_ERR_INVALID;
        ps->st_line = ps->line;
        return 0;
    }
    if (!s) {
        /* A section header line precedes its first key; find it for messages. */
        s = add_section(ps->c, section, ps->line);
        if (!s) {
            ps->st = FL_ERR_NOMEM;
            ps->st_line = ps->line;
            return 0;
        }
    }
    fl_status st = fl_config_put(ps->c, section, name, value, ps->line);
    if (st != FL_OK) {
        ps->st = st;
        ps->st_line = ps->line;
        return 0;
    }
    return 1;
}

/* Finds the line of each "[name]" header so an empty or misnamed section
 * can be reported where it is written. */
static void find_section_lines(fl_config *c, const char *text)
{
    int line = 1;
    for (const char *p = text; *p; line++) {
        const char *q = p;
        while (*q == ' ' || *q == '\t') q++;
        if (*q == '[') {
            const char *end = strchr(q, ']');
            const char *nl = strchr(q, '\n');
            if (end && (!nl || end < nl)) {
                char name[256];
                size_t n = (size_t)(end - q - 1);
                if (n < sizeof name) {
                    memcpy(name, q + 1, n);
                    name[n] = 0;
                    char *t = fl_strtrim(name);
                    if (t) {
                        fl_cfg_section *s = fl_config_section(c, t);
                        if (s) s->line = line;
                        else if (fl_config_valid_section(t)) {
                            s = add_section(c, t, line);
                        }
                        free(t);
                    }
                }
            }
        }
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        p = nl + 1;
    }
}

fl_status fl_config_parse(const char *name, const char *text, fl_config **out)
{
    fl_config *c = fl_config_new(name);
    if (!c) return FL_ERR_NOMEM;
    parse_state ps = { .c = c, .text = text, .line = 0, .st = FL_OK };
    int r = ini_parse_stream(reader, &ps, handler, &ps);
    /* inih keeps going after a syntax error; an earlier one wins. */
    if (ps.st != FL_OK && r > 0 && r < ps.st_line) ps.st = FL_OK;
    if (ps.st != FL_OK) {
        fl_config_free(c);
        return ps.st;
    }
    if (r > 0) {
        fl_err("%s:%d: syntax error: expected '[section]', 'key = value' or a comment", name, r);
        fl_config_free(c);
        return FL_ERR_INVALID;
    }
    if (r < 0) {
        fl_err("%s: cannot parse (out of memory)", name);
        fl_config_free(c);
        return FL_ERR_NOMEM;
    }
    find_section_lines(c, text);
    *out = c;
    return FL_OK;
}

fl_status fl_config_load(const char *path, fl_config **out)
{
    char *text;
    size_t len;
    fl_status st = fl_read_file(path, &text, &len);
    if (st != FL_OK) return st;
    /* A NUL would end the text early: whatever follows it would be lost. */
    const char *nul = memchr(text, 0, len);
    if (nul) {
        int line = 1;
        for (const char *p = text; p < nul; p++) line += *p == '\n';
        fl_err("%s:%d: contains a NUL byte (not a text file, or a damaged one)", path, line);
        free(text);
        return FL_ERR_INVALID;
    }
    st = fl_config_parse(path, text, out);
    free(text);
    return st;
}

/* Drops the blanks inih drops around a value (isspace: also '\f', '\v',
 * '\r'), which fl_strtrim keeps: a --set value written to config.ini must
 * read back as it was set. In place. */
static void trim_like_inih(char *s)
{
    size_t n = strlen(s), a = 0;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    while (a < n && isspace((unsigned char)s[a])) a++;
    memmove(s, s + a, n - a);
    s[n - a] = 0;
}

fl_status fl_config_set(fl_config *c, const char *assignment)
{
    const char *eq = strchr(assignment, '=');
    if (!eq) {
        fl_err("--set %s: expected SECTION.KEY=VALUE", assignment);
        return FL_ERR_INVALID;
    }
    char *lhs = fl_strndup(assignment, (size_t)(eq - assignment));
    char *path = lhs ? fl_strtrim(lhs) : NULL;
    char *value = fl_strtrim(eq + 1);
    if (value) trim_like_inih(value);
    free(lhs);
    fl_status st = FL_OK;
    char *dot = path ? strrchr(path, '.') : NULL;
    if (!path || !value) st = FL_ERR_NOMEM;
    else if (!dot || dot == path || !dot[1]) {
        fl_err("--set %s: expected SECTION.KEY=VALUE", assignment);
        st = FL_ERR_INVALID;
    } else {
        *dot = 0;
        if (!fl_config_valid_section(path) || !fl_config_valid_key(dot + 1)) {
            fl_err("--set %s: bad section or key name", assignment);
            st = FL_ERR_INVALID;
        } else if (strlen(path) > fl_config_max_section()) {
            /* config.ini could not be read back: inih would cut the name */
            fl_err("--set %s: section name is %zu characters long; flowlab's INI parser (inih) "
                   "keeps at most %zu",
                   assignment, strlen(path), fl_config_max_section());
            st = FL_ERR_INVALID;
        } else {
            st = fl_config_put(c, path, dot + 1, value, 0);
        }
    }
    free(path);
    free(value);
    return st;
}

fl_status fl_config_unset(fl_config *c, const char *name)
{
    fl_cfg_section *sec = fl_config_section(c, name);
    if (sec) { /* a whole section */
        for (size_t j = 0; j < sec->n; j++) {
            free(sec->e[j].key);
            free(sec->e[j].value);
        }
        free(sec->e);
        free(sec->name);
        const size_t i = (size_t)(sec - c->s);
        memmove(c->s + i, c->s + i + 1, (c->n - i - 1) * sizeof *c->s);
        c->n--;
        return FL_OK;
    }
    const char *dot = strrchr(name, '.');
    char *sname = dot && dot != name && dot[1] ? fl_strndup(name, (size_t)(dot - name)) : NULL;
    if (!sname) {
        fl_err("--unset %s: %s has no section [%s] (expected SECTION.KEY or SECTION)", name,
               c->path, name);
        return FL_ERR_INVALID;
    }
    sec = fl_config_section(c, sname);
    fl_cfg_entry *e = sec ? fl_config_entry(sec, dot + 1) : NULL;
    if (!e) {
        if (sec)
            fl_err("--unset %s: [%s] of %s has no key %s", name, sname, c->path, dot + 1);
        else
            fl_err("--unset %s: %s has no section [%s] (nor [%s])", name, c->path, sname, name);
        free(sname);
        return FL_ERR_INVALID;
    }
    free(sname);
    free(e->key);
    free(e->value);
    const size_t j = (size_t)(e - sec->e);
    memmove(sec->e + j, sec->e + j + 1, (sec->n - j - 1) * sizeof *sec->e);
    sec->n--;
    return FL_OK;
}

const char *fl_config_where(const fl_config *c, const fl_cfg_section *s, const fl_cfg_entry *e,
                            char *buf, size_t cap)
{
    if (e && e->line > 0) snprintf(buf, cap, "%s:%d", c->path, e->line);
    else if (e) snprintf(buf, cap, "--set %s.%s", s->name, e->key);
    else if (s && s->line > 0) snprintf(buf, cap, "%s:%d", c->path, s->line);
    else if (s && s->n && s->e[0].line == 0) snprintf(buf, cap, "--set %s.%s", s->name, s->e[0].key);
    else snprintf(buf, cap, "%s", c->path);
    return buf;
}

const char *fl_closest(const char *word, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t bd = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        size_t d = fl_edit_distance(word, names[i]);
        if (d < bd) {
            bd = d;
            best = names[i];
        }
    }
    size_t len = strlen(word);
    size_t limit = len < 4 ? 1 : len < 9 ? 2 : 3;
    if (bd <= limit) return best;
    /* a name written out longer or cut short: gaussian-diagonal, gauss */
    for (size_t i = 0; i < n && len >= 4; i++) {
        size_t ln = strlen(names[i]), m = len < ln ? len : ln;
        if (ln >= 4 && strncasecmp(word, names[i], m) == 0) return names[i];
    }
    return NULL;
}

/* 1 when integer `v` lies outside [k->min, k->max]. Compared in long
 * double, which holds every int64 exactly where it has a 64-bit mantissa
 * (x86-64; a 113-bit one on aarch64): through double, 2^62 + 1 rounded to
 * 2^62 and passed a maximum of 2^62. */
static int int_outside(int64_t v, const fl_key *k)
{
    long double x = (long double)v;
    return x < (long double)k->min || x > (long double)k->max;
}

static int parse_int(const char *t, int64_t *v)
{
    errno = 0;
    char *end;
    long long x = strtoll(t, &end, 10);
    if (end == t || *end || errno) return 0;
    *v = x;
    return 1;
}

const char *fl_value_parse(const fl_key *k, const char *text, fl_value *out, char *msg, size_t cap)
{
    int ranged = k->min <= k->max;
    out->key = k;
    out->list = NULL;
    out->nlist = 0;
    switch (k->type) {
    case FL_KEY_INT:
        if (!parse_int(text, &out->i)) {
            /* digits too many for an integer: say which are allowed */
            size_t sg = text[0] == '-' || text[0] == '+', nd = strspn(text + sg, "0123456789");
            if (!ranged || !nd || text[sg + nd]) return "expected an integer";
            snprintf(msg, cap, "expected an integer in [%.15g, %.15g]", k->min, k->max);
            return msg;
        }
        if (ranged && int_outside(out->i, k)) {
            snprintf(msg, cap, "expected an integer in [%.15g, %.15g]", k->min, k->max);
            return msg;
        }
        out->r = (double)out->i;
        return NULL;
    case FL_KEY_REAL: {
        errno = 0;
        char *end;
        out->r = strtod(text, &end);
        if (end == text || *end || !isfinite(out->r)) return "expected a finite number";
        /* Models compute in fl_real: a value it cannot hold would become
         * infinite, or 0 or imprecise (subnormal), without a word. strtod's
         * ERANGE is an underflow here (an overflow is not finite). */
        const double big = sizeof(fl_real) == sizeof(float) ? FLT_MAX : DBL_MAX;
        const double tiny = sizeof(fl_real) == sizeof(float) ? FLT_MIN : DBL_MIN;
        if (fabs(out->r) > big) {
            snprintf(msg, cap, "too large for fl_real (%s, at most %.9g)", FL_REAL_NAME, big);
            return msg;
        }
        if (errno == ERANGE || (out->r != 0 && fabs(out->r) < tiny)) {
            snprintf(msg, cap, "too small for fl_real (%s): use 0 or a magnitude of at least %.9g",
                     FL_REAL_NAME, tiny);
            return msg;
        }
        if (ranged && (out->r < k->min || out->r > k->max)) {
            snprintf(msg, cap, "expected a number in [%.15g, %.15g]", k->min, k->max);
            return msg;
        }
        return NULL;
    }
    case FL_KEY_BOOL: {
        static const char *yes[] = { "true", "yes", "on", "1" }, *no[] = { "false", "no", "off", "0" };
        for (int i = 0; i < 4; i++) {
            if (strcmp(text, yes[i]) == 0) { out->i = 1; return NULL; }
            if (strcmp(text, no[i]) == 0) { out->i = 0; return NULL; }
        }
        return "expected true or false";
    }
    case FL_KEY_STRING:
        return NULL;
    case FL_KEY_ENUM: {
        size_t len = strlen(text);
        int idx = 0;
        for (const char *p = k->choices; p && *p; idx++) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            if (n == len && strncmp(p, text, n) == 0) {
                out->i = idx;
                return NULL;
            }
            p = bar ? bar + 1 : p + n;
        }
        snprintf(msg, cap, "expected one of %s", k->choices ? k->choices : "(none)");
        for (char *q = msg; *q; q++)
            if (*q == '|') *q = ',';
        return msg;
    }
    case FL_KEY_INT_LIST: {
        size_t cnt = 1;
        for (const char *p = text; *p; p++) cnt += *p == ',';
        if (!*text) cnt = 0;
        out->list = calloc(cnt ? cnt : 1, sizeof *out->list);
        if (!out->list) return "out of memory";
        const char *p = text;
        for (size_t i = 0; i < cnt; i++) {
            const char *comma = strchr(p, ',');
            char *item = fl_strndup(p, comma ? (size_t)(comma - p) : strlen(p));
            char *t = item ? fl_strtrim(item) : NULL;
            int ok = t && parse_int(t, &out->list[i]);
            free(item);
            free(t);
            if (!ok || (ranged && int_outside(out->list[i], k))) {
                free(out->list);
                out->list = NULL;
                if (ranged)
                    snprintf(msg, cap, "expected comma-separated integers in [%.17g, %.17g]",
                             k->min, k->max);
                else snprintf(msg, cap, "expected comma-separated integers");
                return msg;
            }
            p = comma ? comma + 1 : p;
        }
        out->nlist = cnt;
        out->i = cnt ? out->list[0] : 0;
        return NULL;
    }
    }
    return "unknown key type";
}

void fl_values_free(fl_values *v)
{
    for (size_t i = 0; i < v->n; i++) {
        free(v->v[i].text);
        free(v->v[i].list);
    }
    free(v->v);
    free(v->section);
    memset(v, 0, sizeof *v);
}

const fl_value *fl_values_get(const fl_values *v, const char *key)
{
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->v[i].key->name, key) == 0) return &v->v[i];
    return NULL;
}

/* Why "key = value" would not read back as the same value from the
 * config.ini a run writes (fl_values_write), or NULL: a line inih would
 * cut, a line break, or a ';' that inih would take for a comment. Values
 * from --set and sweeps get here unchecked by inih. */
static const char *unwritable(const char *key, const char *value, char *msg, size_t cap)
{
    size_t len = strlen(key) + 3 + strlen(value), max = fl_config_max_line();
    if (len > max) {
        snprintf(msg, cap,
                 "value is %zu bytes; as the line '%s = ...' of a run's config.ini it would take "
                 "%zu, more than the %zu flowlab's INI parser (inih) reads",
                 strlen(value), key, len, max);
        return msg;
    }
    if (strpbrk(value, "\r\n")) return "value contains a line break";
    for (const char *p = value; (p = strchr(p, ';')); p++)
        if (p == value || isspace((unsigned char)p[-1]))
            return "value has a ';' at its start or after a space, which the INI format reads as "
                   "the start of a comment";
    return NULL;
}

fl_status fl_values_resolve(const fl_config *c, const char *name, const fl_key *const *tabs,
                            const uint32_t *ntabs, size_t ntab, fl_values *out)
{
    memset(out, 0, sizeof *out);
    fl_cfg_section *s = fl_config_section(c, name);
    size_t total = 0;
    for (size_t t = 0; t < ntab; t++) total += ntabs[t];
    const char **names = calloc(total ? total : 1, sizeof *names);
    out->v = calloc(total ? total : 1, sizeof *out->v);
    out->section = fl_strdup(name);
    if (!names || !out->v || !out->section) {
        free(names);
        fl_values_free(out);
        return FL_ERR_NOMEM;
    }
    size_t m = 0;
    for (size_t t = 0; t < ntab; t++)
        for (uint32_t j = 0; j < ntabs[t]; j++) names[m++] = tabs[t][j].name;

    char where[512], msg[256];
    /* Unknown keys first: a typo is the likeliest mistake. */
    for (size_t j = 0; s && j < s->n; j++) {
        fl_cfg_entry *e = &s->e[j];
        int known = 0;
        for (size_t i = 0; i < m && !known; i++) known = strcmp(names[i], e->key) == 0;
        if (!known) {
            const char *near = fl_closest(e->key, names, m);
            fl_config_where(c, s, e, where, sizeof where);
            if (near)
                fl_err("%s: [%s] unknown key '%s'; did you mean '%s'?", where, name, e->key, near);
            else {
                char list[400];
                size_t len = 0;
                list[0] = 0;
                for (size_t i = 0; i < m && len < sizeof list; i++)
                    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                            names[i]);
                fl_err("%s: [%s] unknown key '%s' (known keys: %s)", where, name, e->key, list);
            }
            free(names);
            fl_values_free(out);
            return FL_ERR_INVALID;
        }
    }
    free(names);

    for (size_t t = 0; t < ntab; t++) {
        for (uint32_t j = 0; j < ntabs[t]; j++) {
            const fl_key *k = &tabs[t][j];
            fl_cfg_entry *e = fl_config_entry(s, k->name);
            const char *text = e ? e->value : k->def;
            if (!text) {
                fl_config_where(c, s, NULL, where, sizeof where);
                fl_err("%s: [%s] missing required key '%s' (%s)", where, name, k->name,
                       k->help ? k->help : "no help");
                fl_values_free(out);
                return FL_ERR_INVALID;
            }
            fl_value *v = &out->v[out->n];
            const char *bad = fl_value_parse(k, text, v, msg, sizeof msg);
            if (bad) {
                if (e) fl_config_where(c, s, e, where, sizeof where);
                else snprintf(where, sizeof where, "default of '%s'", k->name);
                fl_err("%s: [%s] %s = '%s': %s", where, name, k->name, text, bad);
                fl_values_free(out);
                return FL_ERR_INVALID;
            }
            bad = unwritable(k->name, text, msg, sizeof msg);
            if (bad) {
                if (e) fl_config_where(c, s, e, where, sizeof where);
                else snprintf(where, sizeof where, "default of '%s'", k->name);
                fl_err("%s: [%s] %s: %s", where, name, k->name, bad);
                free(v->list);
                fl_values_free(out);
                return FL_ERR_INVALID;
            }
            v->text = fl_strdup(text);
            if (!v->text) {
                free(v->list);
                fl_values_free(out);
                return FL_ERR_NOMEM;
            }
            if (e) e->used = 1;
            out->n++;
        }
    }
    return FL_OK;
}

void fl_values_write(const fl_values *v, fl_buf *b)
{
    fl_buf_printf(b, "[%s]\n", v->section);
    for (size_t i = 0; i < v->n; i++) fl_buf_printf(b, "%s = %s\n", v->v[i].key->name, v->v[i].text);
    fl_buf_printf(b, "\n");
}
