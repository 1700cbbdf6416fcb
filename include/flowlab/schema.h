/*
 * flowlab/schema.h - how a component declares its INI keys.
 *
 * Every component lists the keys its INI section accepts. The host checks a
 * section against the list before it calls the component's create: unknown
 * keys, wrong types, out-of-range values and missing required keys are
 * reported with file, line and key, so create only ever sees valid values.
 * `flowlab plugins NAME` prints the same table as documentation.
 *
 *   static const fl_key coupling_keys[] = {
 *       { "hidden", FL_KEY_INT_LIST, "64,64", 1, 65536, NULL,
 *         "hidden layer widths of the s and t networks" },
 *       { "activation", FL_KEY_ENUM, "relu", 0, 0, "relu|tanh|elu|softplus",
 *         "hidden activation" },
 *       { "scale_bound", FL_KEY_REAL, "1", 0, 100, NULL,
 *         "s = scale_bound * tanh(raw); 0 leaves s unbounded" },
 *   };
 *
 * Lifetime: the table must stay valid while the plugin is loaded (use static
 * storage). Thread-safety: read-only after registration.
 */
#ifndef FLOWLAB_SCHEMA_H
#define FLOWLAB_SCHEMA_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fl_key_type {
    FL_KEY_INT = 1,      /* 64-bit signed integer, range [min, max] */
    FL_KEY_REAL = 2,     /* double, range [min, max] */
    FL_KEY_BOOL = 3,     /* true/false, yes/no, on/off, 1/0 */
    FL_KEY_STRING = 4,   /* any text */
    FL_KEY_ENUM = 5,     /* one of `choices`, "a|b|c" */
    FL_KEY_INT_LIST = 6  /* comma-separated integers, each in [min, max] */
} fl_key_type;

/* One INI key. min > max means "no range". A NULL default makes the key
 * required. The host refuses a plugin whose table is malformed: a NULL or
 * non-identifier name ([a-z0-9_]{1,63}), a duplicate name, a name the host
 * reserves for the section ("type"; for flows also "repeat", "permute"), an
 * unknown type, an enum without choices, a NULL help, or a default that
 * does not parse or is out of range. */
typedef struct fl_key {
    const char *name;      /* [a-z0-9_]+ */
    fl_key_type type;
    const char *def;       /* default as INI text; NULL = required */
    double min, max;       /* inclusive range for INT, REAL, INT_LIST */
    const char *choices;   /* "a|b|c" for ENUM, else NULL */
    const char *help;      /* one line for `flowlab plugins` */
} fl_key;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_SCHEMA_H */
