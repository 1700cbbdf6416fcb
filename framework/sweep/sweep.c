/* sweep.c - parsing the [sweep] section and expanding its cells. */
#define _POSIX_C_SOURCE 200809L
#include "sweep/sweep.h"
#include "core/config.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- small string helpers ------------------------------------------------ */

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static char *trim_n(const char *s, size_t n)
{
    while (n && is_blank(*s)) s++, n--;
    while (n && is_blank(s[n - 1])) n--;
    return fl_strndup(s, n);
}

/* "name" or "name.N" (N digits). */
static int is_directive(const char *key, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(key, name, n) != 0) return 0;
    if (!key[n]) return 1;
    if (key[n] != '.' || !key[n + 1]) return 0;
    for (const char *p = key + n + 1; *p; p++)
        if (!isdigit((unsigned char)*p)) return 0;
    return 1;
}

/* A list of owned strings. */
typedef struct strlist {
    char **s;
    size_t n, cap;
} strlist;

static int strlist_add(strlist *l, char *s)
{
    if (!s) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        char **ns = realloc(l->s, cap * sizeof *ns);
        if (!ns) {
            free(s);
            return 0;
        }
        l->s = ns;
        l->cap = cap;
    }
    l->s[l->n++] = s;
    return 1;
}

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

/* Splits `s` at any character of `seps`, trimming each piece; empty pieces
 * are kept when `keep_empty`, else dropped. Returns 0 on allocation failure. */
static int split(const char *s, const char *seps, int keep_empty, strlist *out)
{
    for (;;) {
        size_t n = strcspn(s, seps);
        char *piece = trim_n(s, n);
        if (!piece) return 0;
        if (*piece || keep_empty) {
            if (!strlist_add(out, piece)) return 0;
        } else {
            free(piece);
        }
        if (!s[n]) return 1;
        s += n + 1;
    }
}

/* ---- the [sweep] section's lines ------------------------------------------ */

typedef struct raw_entry {
    char *key, *value;
    char *comment;        /* text after an inline ' ;' comment, or NULL */
    int line;
} raw_entry;

typedef struct raw_section {
    raw_entry *e;
    size_t n, cap;
    int header_line;      /* first [sweep] header, 0 = none */
    char *base;           /* text with [sweep] lines commented out */
} raw_section;

static void raw_free(raw_section *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->e[i].key);
        free(r->e[i].value);
        free(r->e[i].comment);
    }
    free(r->e);
    free(r->base);
}

/* If the trimmed line is a section header, returns 1 with its trimmed name
 * in *name, *n (a pointer into `line`: nothing is copied, so no name is
 * ever cut) and in *raw the length inih sees, everything between '[' and
 * ']' (inih does not trim a section name). */
static int header_name(const char *line, size_t len, const char **name, size_t *n, size_t *raw)
{
    while (len && is_blank(*line)) line++, len--;
    if (!len || *line != '[') return 0;
    const char *end = memchr(line, ']', len);
    if (!end) return 0;
    const char *a = line + 1;
    size_t k = (size_t)(end - a);
    if (raw) *raw = k;
    while (k && is_blank(*a)) a++, k--;
    while (k && is_blank(a[k - 1])) k--;
    *name = a;
    *n = k;
    return 1;
}

static int is_sweep_header(const char *line, size_t len)
{
    const char *name;
    size_t n;
    return header_name(line, len, &name, &n, NULL) && n == 5 && memcmp(name, "sweep", 5) == 0;
}

/* The base text goes to inih (fl_config_parse) for every cell, and inih
 * cuts a line longer than its buffer, or a section name longer than its
 * own, without a word: such lines are refused here, when the sweep is
 * read (`--dry-run` included), with the messages fl_config_parse gives
 * for an experiment file. [sweep] lines reach inih commented out, and a
 * comment loses nothing when cut: both may be of any length. */
static fl_status check_line(const char *path, int line, const char *p, size_t len, int in_sweep)
{
    while (len && (*p == ' ' || *p == '\t')) p++, len--; /* inih strips these first */
    if (len && p[len - 1] == '\r') len--;
    size_t raw = 0;
    const char *name;
    size_t n;
    if (header_name(p, len, &name, &n, &raw) && raw > fl_config_max_section()) {
        fl_err("%s:%d: section name is %zu characters long; flowlab's INI parser (inih) keeps "
               "at most %zu",
               path, line, raw, fl_config_max_section());
        return FL_ERR_INVALID;
    }
    if (!in_sweep && len > fl_config_max_line() && *p != ';' && *p != '#') {
        fl_err("%s:%d: line is %zu bytes long; flowlab's INI parser (inih) reads at most %zu "
               "(shorten the value, or set it with --set)",
               path, line, len, fl_config_max_line());
        return FL_ERR_INVALID;
    }
    return FL_OK;
}

/* Cuts an inline comment: ';' or '#' preceded by a blank. */
static size_t strip_comment(const char *s, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if ((s[i] == ';' || s[i] == '#') && (s[i - 1] == ' ' || s[i - 1] == '\t')) return i;
    return n;
}

/* Collects the [sweep] entries of `text` with their lines, and builds the
 * base text. Syntax errors name PATH:LINE. */
static fl_status read_section(const char *path, const char *text, raw_section *r)
{
    memset(r, 0, sizeof *r);
    fl_buf base = { 0 };
    int in_sweep = 0, line = 0;
    fl_status st = FL_OK;
    for (const char *p = text; *p && st == FL_OK;) {
        line++;
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *hname;
        size_t hn;
        if (header_name(p, len, &hname, &hn, NULL)) {
            in_sweep = is_sweep_header(p, len);
            if (in_sweep && !r->header_line) r->header_line = line;
        }
        st = check_line(path, line, p, len, in_sweep);
        if (st != FL_OK) break;
        if (in_sweep) {
            fl_buf_write(&base, "; ", 2);
            const char *q = p;
            size_t m = len;
            while (m && is_blank(*q)) q++, m--;
            if (m && *q != '[' && *q != ';' && *q != '#') {
                size_t full = m;
                m = strip_comment(q, m);
                const char *eq = memchr(q, '=', m);
                if (!eq) {
                    fl_err("%s:%d: [sweep] expected 'SECTION.KEY = VALUE, VALUE, ...', "
                           "'zip = ...' or 'exclude = ...'", path, line);
                    st = FL_ERR_INVALID;
                    break;
                }
                if (r->n == r->cap) {
                    size_t cap = r->cap ? 2 * r->cap : 16;
                    raw_entry *ne = realloc(r->e, cap * sizeof *ne);
                    if (!ne) {
                        st = FL_ERR_NOMEM;
                        break;
                    }
                    r->e = ne;
                    r->cap = cap;
                }
                raw_entry *e = &r->e[r->n];
                e->key = trim_n(q, (size_t)(eq - q));
                e->value = trim_n(eq + 1, (size_t)(q + m - eq - 1));
                e->comment = m < full && q[m] == ';' ? trim_n(q + m + 1, full - m - 1) : NULL;
                e->line = line;
                if (!e->key || !e->value || (m < full && q[m] == ';' && !e->comment)) {
                    free(e->key);
                    free(e->value);
                    free(e->comment);
                    st = FL_ERR_NOMEM;
                    break;
                }
                r->n++;
            }
        }
        fl_buf_write(&base, p, len);
        if (nl) fl_buf_write(&base, "\n", 1);
        p = nl ? nl + 1 : p + len;
    }
    if (st == FL_OK && base.failed) st = FL_ERR_NOMEM;
    if (st == FL_OK && !r->header_line) {
        fl_err("%s: no [sweep] section (it lists SECTION.KEY = VALUE, VALUE, ... to vary; "
               "use `flowlab run` for a single experiment)", path);
        st = FL_ERR_INVALID;
    }
    if (st == FL_OK) {
        r->base = base.data ? base.data : fl_strdup("");
        if (!r->base) st = FL_ERR_NOMEM;
    } else {
        fl_buf_free(&base);
    }
    return st;
}

/* ---- building the sweep ------------------------------------------------- */

void fl_sweep_free(fl_sweep *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_axes; i++) {
        for (size_t j = 0; j < s->axes[i].n; j++) free(s->axes[i].values[j]);
        free(s->axes[i].values);
        free(s->axes[i].key);
    }
    free(s->axes);
    for (size_t i = 0; i < s->n_rules; i++) {
        free(s->rules[i].axis);
        free(s->rules[i].value);
    }
    free(s->rules);
    for (size_t i = 0; i < s->n_cells; i++) {
        free(s->cells[i].choice);
        free(s->cells[i].name);
    }
    free(s->cells);
    free(s->metric);
    free(s->gv_estimators);
    free(s->gv_k);
    free(s->gv_draws);
    free(s->gv_n);
    free(s->base);
    free(s->path);
    free(s);
}

long fl_sweep_axis_find(const fl_sweep *s, const char *key)
{
    for (size_t i = 0; i < s->n_axes; i++)
        if (strcmp(s->axes[i].key, key) == 0) return (long)i;
    return -1;
}

const char *fl_sweep_value(const fl_sweep *s, size_t cell, size_t axis)
{
    return s->axes[axis].values[s->cells[cell].choice[axis]];
}

/* "a, b, c" of the swept keys, for messages. */
static void swept_keys(const fl_sweep *s, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < s->n_axes && used + 1 < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", s->axes[i].key);
}

static fl_status add_axis(fl_sweep *s, const raw_entry *e)
{
    const char *dot = strrchr(e->key, '.');
    char *section = dot ? fl_strndup(e->key, (size_t)(dot - e->key)) : NULL;
    if (dot && !section) return FL_ERR_NOMEM;
    int valid = dot && fl_config_valid_section(section) && fl_config_valid_key(dot + 1);
    free(section);
    if (!valid) {
        fl_err("%s:%d: [sweep] '%s' is not SECTION.KEY (lower-case names, e.g. train.lr or "
               "flow.1.repeat) nor zip, exclude, metric, direction or gradvar[_estimators, _k, "
               "_draws, _n]",
               s->path, e->line, e->key);
        return FL_ERR_INVALID;
    }
    if ((size_t)(dot - e->key) == 5 && strncmp(e->key, "sweep", 5) == 0) {
        fl_err("%s:%d: [sweep] '%s': a sweep cannot vary its own section", s->path, e->line,
               e->key);
        return FL_ERR_INVALID;
    }
    for (size_t i = 0; i < s->n_axes; i++)
        if (strcmp(s->axes[i].key, e->key) == 0) {
            fl_err("%s:%d: [sweep] key '%s' is set twice (first on line %d)", s->path, e->line,
                   e->key, s->axes[i].line);
            return FL_ERR_INVALID;
        }
    strlist vals = { 0 };
    if (!split(e->value, strchr(e->value, '|') ? "|" : ",", 1, &vals)) {
        strlist_free(&vals);
        return FL_ERR_NOMEM;
    }
    for (size_t i = 0; i < vals.n; i++) {
        const char *why = !vals.s[i][0] ? "an empty value" : NULL;
        for (size_t j = 0; j < i && !why; j++)
            if (strcmp(vals.s[i], vals.s[j]) == 0) why = "a value listed twice";
        if (why) {
            fl_err("%s:%d: [sweep] %s = '%s': %s (separate values with ',', or with '|' when "
                   "a value contains ',')",
                   s->path, e->line, e->key, e->value, why);
            strlist_free(&vals);
            return FL_ERR_INVALID;
        }
    }
    fl_sweep_axis *na = realloc(s->axes, (s->n_axes + 1) * sizeof *na);
    if (!na) {
        strlist_free(&vals);
        return FL_ERR_NOMEM;
    }
    s->axes = na;
    fl_sweep_axis *a = &s->axes[s->n_axes];
    a->key = fl_strdup(e->key);
    if (!a->key) {
        strlist_free(&vals);
        return FL_ERR_NOMEM;
    }
    a->values = vals.s;
    a->n = vals.n;
    a->line = e->line;
    a->zip = -1;
    s->n_axes++;
    return FL_OK;
}

/* The axis named `key` or an error naming the directive's line. */
static fl_status need_axis(const fl_sweep *s, const raw_entry *e, const char *key, size_t *out)
{
    long k = fl_sweep_axis_find(s, key);
    if (k < 0) {
        char list[512];
        swept_keys(s, list, sizeof list);
        fl_err("%s:%d: [sweep] %s: '%s' is not a swept key (swept: %s)", s->path, e->line,
               e->key, key, list);
        return FL_ERR_INVALID;
    }
    *out = (size_t)k;
    return FL_OK;
}

/* ';' separates zip groups and exclude rules, but ' ;' (after a blank)
 * starts a comment: "exclude = a.x=1 ; b.y=2" would silently drop the second
 * rule. An inline comment on such a line whose first word reads as another
 * group or rule (a swept key, or KEY=VALUE of one) is an error. */
static fl_status check_comment(const fl_sweep *s, const raw_entry *e, int is_rule)
{
    if (!e->comment) return FL_OK;
    size_t n = strcspn(e->comment, is_rule ? " \t" : " \t,");
    char *word = fl_strndup(e->comment, n);
    if (!word) return FL_ERR_NOMEM;
    char *eq = strchr(word, '=');
    if (is_rule && eq) *eq = 0;
    int looks = (!is_rule || eq) && fl_sweep_axis_find(s, word) >= 0;
    free(word);
    if (!looks) return FL_OK;
    const char *base = is_rule ? "exclude" : "zip";
    fl_err("%s:%d: [sweep] %s: ' ; %s' is read as a comment, which would drop that %s; write "
           "';' right after the %s ('%s') or put it on its own %s.2, %s.3, ... line",
           s->path, e->line, e->key, e->comment, is_rule ? "rule" : "group",
           is_rule ? "rule" : "group", is_rule ? "a.x=1; b.y=2" : "a.x b.y; c.z d.w", base, base);
    return FL_ERR_INVALID;
}

static fl_status add_zips(fl_sweep *s, const raw_entry *e)
{
    fl_status st = check_comment(s, e, 0);
    if (st != FL_OK) return st;
    strlist groups = { 0 };
    st = split(e->value, ";", 0, &groups) ? FL_OK : FL_ERR_NOMEM;
    for (size_t g = 0; st == FL_OK && g < groups.n; g++) {
        strlist keys = { 0 };
        if (!split(groups.s[g], " \t,", 0, &keys)) st = FL_ERR_NOMEM;
        if (st == FL_OK && keys.n < 2) {
            fl_err("%s:%d: [sweep] %s = '%s': a zip group needs two or more keys separated by "
                   "blanks ('zip = a.x b.y'; ';' starts another group)",
                   s->path, e->line, e->key, e->value);
            st = FL_ERR_INVALID;
        }
        size_t first = 0;
        for (size_t k = 0; st == FL_OK && k < keys.n; k++) {
            size_t ax;
            st = need_axis(s, e, keys.s[k], &ax);
            if (st != FL_OK) break;
            if (s->axes[ax].zip >= 0) {
                fl_err("%s:%d: [sweep] %s: '%s' is already in a zip group (a key varies with "
                       "one group only)",
                       s->path, e->line, e->key, keys.s[k]);
                st = FL_ERR_INVALID;
                break;
            }
            if (k == 0) first = ax;
            else if (s->axes[ax].n != s->axes[first].n) {
                fl_err("%s:%d: [sweep] %s: %s has %zu values but %s has %zu; zipped keys need "
                       "lists of equal length",
                       s->path, e->line, e->key, s->axes[first].key, s->axes[first].n,
                       s->axes[ax].key, s->axes[ax].n);
                st = FL_ERR_INVALID;
                break;
            }
            s->axes[ax].zip = (int)s->n_zips;
        }
        if (st == FL_OK) s->n_zips++;
        strlist_free(&keys);
    }
    strlist_free(&groups);
    return st;
}

static fl_status add_rules(fl_sweep *s, const raw_entry *e)
{
    fl_status st = check_comment(s, e, 1);
    if (st != FL_OK) return st;
    strlist rules = { 0 };
    st = split(e->value, ";", 0, &rules) ? FL_OK : FL_ERR_NOMEM;
    for (size_t r = 0; st == FL_OK && r < rules.n; r++) {
        strlist conds = { 0 };
        if (!split(rules.s[r], " \t", 0, &conds)) st = FL_ERR_NOMEM;
        fl_sweep_rule rule = { 0 };
        rule.line = e->line;
        rule.axis = calloc(conds.n + 1, sizeof *rule.axis);
        rule.value = calloc(conds.n + 1, sizeof *rule.value);
        if (st == FL_OK && (!rule.axis || !rule.value)) st = FL_ERR_NOMEM;
        for (size_t c = 0; st == FL_OK && c < conds.n; c++) {
            char *eq = strchr(conds.s[c], '=');
            if (!eq || eq == conds.s[c] || !eq[1]) {
                fl_err("%s:%d: [sweep] %s: '%s' is not KEY=VALUE (a rule is blank-separated "
                       "KEY=VALUE conditions, e.g. 'train.lr=1e-3 flow.1.repeat=8'; ';' "
                       "separates rules)",
                       s->path, e->line, e->key, conds.s[c]);
                st = FL_ERR_INVALID;
                break;
            }
            *eq = 0;
            size_t ax;
            st = need_axis(s, e, conds.s[c], &ax);
            if (st != FL_OK) break;
            for (size_t k = 0; k < rule.n; k++)
                if (rule.axis[k] == ax) {
                    fl_err("%s:%d: [sweep] %s: '%s' appears twice in one rule (one value "
                           "each; write two rules)",
                           s->path, e->line, e->key, conds.s[c]);
                    st = FL_ERR_INVALID;
                }
            if (st != FL_OK) break;
            const fl_sweep_axis *a = &s->axes[ax];
            size_t v = a->n;
            for (size_t k = 0; k < a->n; k++)
                if (strcmp(a->values[k], eq + 1) == 0) v = k;
            if (v == a->n) {
                char list[512];
                size_t used = 0;
                list[0] = 0;
                for (size_t k = 0; k < a->n && used + 1 < sizeof list; k++)
                    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s",
                                             k ? (strchr(a->values[k], ',') ? " | " : ", ") : "",
                                             a->values[k]);
                fl_err("%s:%d: [sweep] %s: %s=%s matches no cell (%s takes %s)", s->path,
                       e->line, e->key, conds.s[c], eq + 1, a->key, list);
                st = FL_ERR_INVALID;
                break;
            }
            rule.axis[rule.n] = ax;
            rule.value[rule.n] = v;
            rule.n++;
        }
        if (st == FL_OK && rule.n == 0) {
            fl_err("%s:%d: [sweep] %s: an empty rule", s->path, e->line, e->key);
            st = FL_ERR_INVALID;
        }
        fl_sweep_rule *nr = st == FL_OK ? realloc(s->rules, (s->n_rules + 1) * sizeof *nr) : NULL;
        if (st == FL_OK && !nr) st = FL_ERR_NOMEM;
        if (st == FL_OK) {
            s->rules = nr;
            s->rules[s->n_rules++] = rule;
        } else {
            free(rule.axis);
            free(rule.value);
        }
        strlist_free(&conds);
    }
    strlist_free(&rules);
    return st;
}

/* The gradvar options: `gradvar = yes|no`; `gradvar_k`, `gradvar_estimators`
 * (comma lists of positive integers, of estimator names), `gradvar_draws`
 * and `gradvar_n` (one positive integer) are passed on to `flowlab
 * gradvar`, which checks the names against the registry in the cell. */
static int is_gradvar_key(const char *key)
{
    return !strcmp(key, "gradvar") || !strcmp(key, "gradvar_estimators") ||
           !strcmp(key, "gradvar_k") || !strcmp(key, "gradvar_draws") || !strcmp(key, "gradvar_n");
}

static fl_status set_gradvar(fl_sweep *s, const raw_entry *e)
{
    const char *v = e->value;
    if (!strcmp(e->key, "gradvar")) {
        if (strcmp(v, "yes") && strcmp(v, "no")) {
            fl_err("%s:%d: [sweep] gradvar = '%s': expected yes or no", s->path, e->line, v);
            return FL_ERR_INVALID;
        }
        s->gradvar = strcmp(v, "yes") == 0;
        return FL_OK;
    }
    const int names = !strcmp(e->key, "gradvar_estimators");
    const int list = names || !strcmp(e->key, "gradvar_k");
    /* items: [a-z0-9-]+ (names) or digits, ',' between them only in a list */
    int ok = v[0] != 0 && v[0] != ',' && v[0] != ' ';
    for (const char *p = v; ok && *p; p++) {
        if (*p == ',') ok = list && p[1] && p[1] != ',';
        else if (*p == ' ') ok = list && (p[-1] == ',' || p[1] == ',');
        else ok = (*p >= '0' && *p <= '9') || (names && ((*p >= 'a' && *p <= 'z') || *p == '-'));
    }
    for (const char *p = v; ok && !names && *p; p++) /* no zero: k, draws, n >= 1 */
        if (*p == '0' && (p == v || p[-1] == ',' || p[-1] == ' ')) ok = 0;
    if (!ok) {
        fl_err("%s:%d: [sweep] %s = '%s': expected %s", s->path, e->line, e->key, v,
               names ? "estimator names separated by ',' (e.g. iwae,dreg)"
               : list ? "positive integers separated by ',' (e.g. 1,8,64)"
                      : "a positive integer");
        return FL_ERR_INVALID;
    }
    char **dst = names ? &s->gv_estimators : list ? &s->gv_k
                 : !strcmp(e->key, "gradvar_draws") ? &s->gv_draws : &s->gv_n;
    *dst = fl_strdup(v);
    return *dst ? FL_OK : FL_ERR_NOMEM;
}

static fl_status set_option(fl_sweep *s, const raw_entry *e, int is_metric)
{
    if (is_metric) {
        if (s->metric || !e->value[0] || strpbrk(e->value, " \t,")) {
            fl_err("%s:%d: [sweep] metric = '%s': expected one result.json field name, once",
                   s->path, e->line, e->value);
            return FL_ERR_INVALID;
        }
        s->metric = fl_strdup(e->value);
        return s->metric ? FL_OK : FL_ERR_NOMEM;
    }
    if (s->direction || (strcmp(e->value, "min") && strcmp(e->value, "max"))) {
        fl_err("%s:%d: [sweep] direction = '%s': expected min or max, once", s->path, e->line,
               e->value);
        return FL_ERR_INVALID;
    }
    s->direction = strcmp(e->value, "min") == 0 ? -1 : 1;
    return FL_OK;
}

/* ---- cells -------------------------------------------------------------- */

static int excluded(const fl_sweep *s, const size_t *choice)
{
    for (size_t r = 0; r < s->n_rules; r++) {
        const fl_sweep_rule *rule = &s->rules[r];
        size_t k = 0;
        while (k < rule->n && choice[rule->axis[k]] == rule->value[k]) k++;
        if (k == rule->n) return 1;
    }
    return 0;
}

/* A value made safe inside a file name: letters, digits and . _ + - stay;
 * ',' becomes '-' (an int list "32,32" reads "32-32"); anything else '_'. */
static void append_safe(fl_buf *b, const char *v)
{
    for (; *v; v++) {
        char c = *v;
        if (!(isalnum((unsigned char)c) || c == '.' || c == '_' || c == '+' || c == '-'))
            c = c == ',' ? '-' : '_';
        fl_buf_write(b, &c, 1);
    }
}

static uint64_t fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Longest run directory name before a hash suffix replaces the tail. */
#define NAME_MAX_LEN 200

static char *cell_name(const fl_sweep *s, const size_t *choice, int force_hash)
{
    fl_buf b = { 0 };
    uint64_t h = 1469598103934665603ull;
    for (size_t a = 0; a < s->n_axes; a++) {
        if (a) fl_buf_write(&b, ",", 1);
        fl_buf_printf(&b, "%s=", s->axes[a].key);
        append_safe(&b, s->axes[a].values[choice[a]]);
        h = fnv1a(s->axes[a].key, h);
        h = fnv1a("=", h);
        h = fnv1a(s->axes[a].values[choice[a]], h);
        h = fnv1a("\n", h);
    }
    if (b.failed) {
        fl_buf_free(&b);
        return NULL;
    }
    /* A dot-only name cannot happen: every name starts with a section name. */
    if (force_hash || b.len > NAME_MAX_LEN) {
        size_t keep = b.len > NAME_MAX_LEN - 9 ? NAME_MAX_LEN - 9 : b.len;
        char *out = fl_strfmt("%.*s~%08x", (int)keep, b.data, (unsigned)(h ^ (h >> 32)));
        fl_buf_free(&b);
        return out;
    }
    return b.data;
}

static const fl_sweep *sort_ctx;
static int by_name(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int c = strcmp(sort_ctx->cells[i].name, sort_ctx->cells[j].name);
    return c ? c : (i > j) - (i < j);
}

static fl_status expand(fl_sweep *s)
{
    /* Dimensions: each unzipped axis, and each zip group at its first key. */
    size_t *dim_len = calloc(s->n_axes, sizeof *dim_len), *axis_dim = calloc(s->n_axes, sizeof *axis_dim);
    size_t *zip_dim = calloc(s->n_zips + 1, sizeof *zip_dim);
    size_t n_dims = 0;
    fl_status st = dim_len && axis_dim && zip_dim ? FL_OK : FL_ERR_NOMEM;
    for (size_t z = 0; st == FL_OK && z < s->n_zips; z++) zip_dim[z] = SIZE_MAX;
    for (size_t a = 0; st == FL_OK && a < s->n_axes; a++) {
        int z = s->axes[a].zip;
        if (z >= 0 && zip_dim[z] != SIZE_MAX) {
            axis_dim[a] = zip_dim[z];
            continue;
        }
        if (z >= 0) zip_dim[z] = n_dims;
        axis_dim[a] = n_dims;
        dim_len[n_dims++] = s->axes[a].n;
    }
    size_t total = 1;
    for (size_t d = 0; st == FL_OK && d < n_dims; d++) {
        if (total > (size_t)10 * FL_SWEEP_MAX_CELLS / dim_len[d]) {
            fl_err("%s:%d: [sweep] spans more than %d cells; split the sweep", s->path, s->line,
                   10 * FL_SWEEP_MAX_CELLS);
            st = FL_ERR_INVALID;
        }
        total *= dim_len[d];
    }
    s->n_product = total;
    size_t *idx = calloc(n_dims + 1, sizeof *idx), *choice = calloc(s->n_axes + 1, sizeof *choice);
    if (st == FL_OK && (!idx || !choice)) st = FL_ERR_NOMEM;
    size_t n_kept = 0;
    for (size_t c = 0; st == FL_OK && c < total; c++) {
        for (size_t a = 0; a < s->n_axes; a++) choice[a] = idx[axis_dim[a]];
        if (!excluded(s, choice)) n_kept++;
        for (size_t d = n_dims; d-- > 0;) { /* odometer, last dimension fastest */
            if (++idx[d] < dim_len[d]) break;
            idx[d] = 0;
        }
    }
    if (st == FL_OK && n_kept == 0) {
        fl_err("%s:%d: [sweep] every one of the %zu cells is excluded", s->path, s->line, total);
        st = FL_ERR_INVALID;
    }
    if (st == FL_OK && n_kept > FL_SWEEP_MAX_CELLS) {
        fl_err("%s:%d: [sweep] has %zu cells, more than %d; split the sweep", s->path, s->line,
               n_kept, FL_SWEEP_MAX_CELLS);
        st = FL_ERR_INVALID;
    }
    if (st == FL_OK) {
        s->cells = calloc(n_kept, sizeof *s->cells);
        if (!s->cells) st = FL_ERR_NOMEM;
        if (idx) memset(idx, 0, (n_dims + 1) * sizeof *idx);
    }
    for (size_t c = 0; st == FL_OK && c < total; c++) {
        for (size_t a = 0; a < s->n_axes; a++) choice[a] = idx[axis_dim[a]];
        if (!excluded(s, choice)) {
            fl_sweep_cell *cell = &s->cells[s->n_cells++];
            cell->choice = malloc(s->n_axes * sizeof *cell->choice);
            if (!cell->choice) st = FL_ERR_NOMEM;
            else memcpy(cell->choice, choice, s->n_axes * sizeof *choice);
            cell->name = st == FL_OK ? cell_name(s, choice, 0) : NULL;
            if (st == FL_OK && !cell->name) st = FL_ERR_NOMEM;
        }
        for (size_t d = n_dims; d-- > 0;) {
            if (++idx[d] < dim_len[d]) break;
            idx[d] = 0;
        }
    }
    /* Different values can sanitise to the same name ("a/b", "a_b"): such
     * cells get a hash of their exact settings appended. */
    size_t *order = st == FL_OK ? malloc(s->n_cells * sizeof *order) : NULL;
    if (st == FL_OK && !order) st = FL_ERR_NOMEM;
    if (st == FL_OK) {
        for (size_t i = 0; i < s->n_cells; i++) order[i] = i;
        sort_ctx = s;
        qsort(order, s->n_cells, sizeof *order, by_name);
        for (size_t i = 0; st == FL_OK && i + 1 < s->n_cells; i++) {
            size_t j = i + 1;
            while (j < s->n_cells &&
                   strcmp(s->cells[order[i]].name, s->cells[order[j]].name) == 0)
                j++;
            for (size_t k = i; j > i + 1 && k < j && st == FL_OK; k++) {
                fl_sweep_cell *cell = &s->cells[order[k]];
                free(cell->name);
                cell->name = cell_name(s, cell->choice, 1);
                if (!cell->name) st = FL_ERR_NOMEM;
            }
            i = j - 1;
        }
    }
    free(order);
    free(idx);
    free(choice);
    free(dim_len);
    free(axis_dim);
    free(zip_dim);
    return st;
}

fl_status fl_sweep_parse(const char *path, const char *text, fl_sweep **out)
{
    *out = NULL;
    raw_section raw;
    fl_status st = read_section(path, text, &raw);
    fl_sweep *s = st == FL_OK ? calloc(1, sizeof *s) : NULL;
    if (st == FL_OK && !s) st = FL_ERR_NOMEM;
    if (st == FL_OK) {
        s->path = fl_strdup(path);
        s->line = raw.header_line;
        s->base = raw.base;
        raw.base = NULL;
        if (!s->path) st = FL_ERR_NOMEM;
    }
    /* Keys first, so zip and exclude may name keys listed after them. */
    for (size_t i = 0; st == FL_OK && i < raw.n; i++) {
        const raw_entry *e = &raw.e[i];
        int directive = is_directive(e->key, "zip") || is_directive(e->key, "exclude") ||
                        !strcmp(e->key, "metric") || !strcmp(e->key, "direction") ||
                        is_gradvar_key(e->key);
        for (size_t j = 0; directive && j < i && st == FL_OK; j++)
            if (strcmp(raw.e[j].key, e->key) == 0) {
                fl_err("%s:%d: [sweep] key '%s' is set twice (first on line %d; number more "
                       "rules %s.2, %s.3, ... or separate them with ';')",
                       path, e->line, e->key, raw.e[j].line, e->key, e->key);
                st = FL_ERR_INVALID;
            }
        if (st == FL_OK && !directive) st = add_axis(s, e);
    }
    if (st == FL_OK && s->n_axes == 0) {
        fl_err("%s:%d: [sweep] lists no keys to vary (SECTION.KEY = VALUE, VALUE, ...)", path,
               raw.header_line);
        st = FL_ERR_INVALID;
    }
    for (size_t i = 0; st == FL_OK && i < raw.n; i++) {
        const raw_entry *e = &raw.e[i];
        if (is_directive(e->key, "zip")) st = add_zips(s, e);
        else if (is_directive(e->key, "exclude")) st = add_rules(s, e);
        else if (!strcmp(e->key, "metric")) st = set_option(s, e, 1);
        else if (!strcmp(e->key, "direction")) st = set_option(s, e, 0);
        else if (is_gradvar_key(e->key)) st = set_gradvar(s, e);
    }
    if (st == FL_OK && !s->gradvar && (s->gv_estimators || s->gv_k || s->gv_draws || s->gv_n)) {
        fl_err("%s:%d: [sweep] gradvar_* options are set but gradvar is not: add 'gradvar = yes'",
               path, raw.header_line);
        st = FL_ERR_INVALID;
    }
    if (st == FL_OK) st = expand(s);
    raw_free(&raw);
    if (st != FL_OK) {
        fl_sweep_free(s);
        return st;
    }
    *out = s;
    return FL_OK;
}

fl_status fl_sweep_read(const char *path, char **text)
{
    size_t len = 0;
    *text = NULL;
    fl_status st = fl_read_file(path, text, &len);
    if (st != FL_OK) return st;
    /* A NUL would end the text early: the cells would silently lose what
     * follows it (fl_config_load refuses it for `flowlab run` alike). */
    const char *nul = memchr(*text, 0, len);
    if (nul) {
        int line = 1;
        for (const char *p = *text; p < nul; p++) line += *p == '\n';
        fl_err("%s:%d: contains a NUL byte (not a text file, or a damaged one)", path, line);
        free(*text);
        *text = NULL;
        return FL_ERR_INVALID;
    }
    return FL_OK;
}

fl_status fl_sweep_load(const char *path, fl_sweep **out)
{
    char *text = NULL;
    fl_status st = fl_sweep_read(path, &text);
    if (st == FL_OK) st = fl_sweep_parse(path, text, out);
    free(text);
    return st;
}

fl_status fl_sweep_refuse_run(const char *path)
{
    char *text = NULL;
    if (fl_read_file(path, &text, NULL) != FL_OK) {
        fl_err_clear();
        return FL_OK;
    }
    int line = 0, found = 0;
    for (const char *p = text; *p && !found;) {
        line++;
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        found = is_sweep_header(p, len);
        p = nl ? nl + 1 : p + len;
    }
    free(text);
    if (!found) return FL_OK;
    fl_err("%s:%d: [sweep]: this file describes a sweep; run its cells with `flowlab sweep %s` "
           "(add --dry-run to list them)",
           path, line, path);
    return FL_ERR_INVALID;
}
