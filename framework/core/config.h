/* config.h - experiment files: raw INI text, overrides, typed validation.
 *
 * Loading keeps every value as text with its origin (file and line, or the
 * --set that produced it). Validation resolves one section against the key
 * tables that apply to it (the host's own keys plus the component's) and
 * yields typed values with defaults filled in; every error names the file,
 * line, section and key, and suggests the closest known name. */
#ifndef FL_CONFIG_H
#define FL_CONFIG_H

#include <flowlab/schema.h>
#include "core/util.h"

typedef struct fl_cfg_entry {
    char *key, *value;
    int line;          /* 0 = from --set */
    int used;          /* consumed by validation */
} fl_cfg_entry;

typedef struct fl_cfg_section {
    char *name;
    int line;          /* 0 = created by --set */
    fl_cfg_entry *e;
    size_t n, cap;
} fl_cfg_section;

typedef struct fl_config {
    char *path;        /* file it came from ("" when built in memory) */
    fl_cfg_section *s;
    size_t n, cap;
} fl_config;

/* Parses `path`. On error returns non-OK with fl_err set to
 * "PATH:LINE: message" (among them a NUL byte, or a line longer than
 * fl_config_max_line()). The caller owns *out (fl_config_free). */
fl_status fl_config_load(const char *path, fl_config **out);
/* Parses INI text held in memory; `name` is used in messages. The text
 * ends at its NUL: a caller holding a buffer checks it has no other. */
fl_status fl_config_parse(const char *name, const char *text, fl_config **out);
/* The longest line, in bytes without its line break, that the linked
 * inih reads whole (INI_MAX_LINE - 1, as built; 199 in Debian's). Longer
 * lines are refused by the loaders (PATH:LINE: line is N bytes long), and
 * so are resolved values whose "key = value" line would be longer, since a
 * run's config.ini could not be read back. Any time; no errors. */
size_t fl_config_max_line(void);
/* The longest section name the linked inih keeps whole (MAX_SECTION - 1,
 * as built; 49 in Debian's). A longer [name] in a file, or in a --set, is
 * refused (PATH:LINE: section name is N characters long). Any time. */
size_t fl_config_max_section(void);
fl_config *fl_config_new(const char *path);
void fl_config_free(fl_config *c);

/* 1 when `s` may name a section: lower-case letters, digits, '_', '-', '.'
 * (e.g. flow.1), not empty; else 0. */
int fl_config_valid_section(const char *s);
/* 1 when `s` may name a key: lower-case letters, digits, '_', not empty. */
int fl_config_valid_key(const char *s);

/* Applies "section.key=value" (the section may contain dots: the key is
 * what follows the last dot before '='). */
fl_status fl_config_set(fl_config *c, const char *assignment);
/* Applies `--unset NAME`: removes key KEY of section SECTION when NAME is
 * "SECTION.KEY", or a whole section (its header and every key) when NAME
 * names a section (e.g. "flow.1"), so that a --set can then describe it
 * afresh (`--unset flow.1 --set flow.1.type=maf`). A name that matches
 * nothing is an error (FL_ERR_INVALID, one fl_err line naming the file
 * and NAME: a typo must not go unnoticed). Any time before validation. */
fl_status fl_config_unset(fl_config *c, const char *name);
/* Sets a value directly (line 0 = programmatic). */
fl_status fl_config_put(fl_config *c, const char *section, const char *key, const char *value,
                        int line);

fl_cfg_section *fl_config_section(const fl_config *c, const char *name);
fl_cfg_entry *fl_config_entry(const fl_cfg_section *s, const char *key);
/* "PATH:LINE" or "--set SECTION.KEY" describing where an entry came from. */
const char *fl_config_where(const fl_config *c, const fl_cfg_section *s, const fl_cfg_entry *e,
                            char *buf, size_t cap);

/* A validated, typed value. */
typedef struct fl_value {
    const fl_key *key;
    char *text;        /* normalised INI text */
    int64_t i;         /* INT, BOOL */
    double r;          /* REAL */
    int64_t *list;     /* INT_LIST */
    size_t nlist;
} fl_value;

typedef struct fl_values {
    char *section;
    fl_value *v;
    size_t n;
} fl_values;

/* Resolves section `name` (absent = all defaults) against the union of
 * `ntab` key tables. Unknown keys, bad values, missing required keys and
 * values that would not read back from a run's config.ini (too long a
 * line, a line break, a ';' starting a comment) are errors, fl_err naming
 * the file and line or the --set. The caller owns `out` (fl_values_free). */
fl_status fl_values_resolve(const fl_config *c, const char *name, const fl_key *const *tabs,
                            const uint32_t *ntabs, size_t ntab, fl_values *out);
void fl_values_free(fl_values *v);
const fl_value *fl_values_get(const fl_values *v, const char *key);

/* Parses `text` as a value of `k`. Returns a message (static or in `msg`)
 * describing what was expected, or NULL when it is valid. */
const char *fl_value_parse(const fl_key *k, const char *text, fl_value *out, char *msg,
                           size_t cap);

/* The closest of `n` names to `word` (ignoring case; or one that begins
 * the other, from 4 letters), or NULL when none is close. */
const char *fl_closest(const char *word, const char *const *names, size_t n);

/* Appends "[section]\nkey = value\n..." for resolved values. */
void fl_values_write(const fl_values *v, fl_buf *b);

#endif
