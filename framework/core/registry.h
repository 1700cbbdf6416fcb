/* registry.h - loading plugins and looking up their components.
 *
 * A registry owns the dlopen handles of every accepted plugin and a host
 * copy of every component class. Plugins stay loaded until the registry is
 * freed, which must happen after every component instance is destroyed. */
#ifndef FL_REGISTRY_H
#define FL_REGISTRY_H

#include <flowlab/flowlab.h>

typedef struct fl_plugin_rec {
    char *path;              /* resolved (realpath) */
    void *handle;
    char *name, *version;    /* of its entry point */
    char sha256[65];         /* of the file as loaded (hex), "" when unreadable;
                                provenance.json records it */
} fl_plugin_rec;

typedef struct fl_comp_rec {
    fl_kind kind;
    size_t plugin;           /* index into plugins */
    union {                  /* host copy, min(struct_size, sizeof) bytes */
        fl_component base;
        fl_flow_class flow;
        fl_dataset_class dataset;
        fl_posterior_class posterior;
        fl_estimator_class estimator;
        fl_likelihood_class likelihood;
        fl_prior_class prior;
        fl_target_class target;
    } cls;
} fl_comp_rec;

typedef struct fl_registry {
    fl_plugin_rec *plugins;
    size_t n_plugins, cap_plugins;
    fl_comp_rec *comps;
    size_t n_comps, cap_comps;
    char **refused;          /* one message per refused plugin */
    size_t n_refused;
} fl_registry;

fl_registry *fl_registry_new(void);
void fl_registry_free(fl_registry *r);

/* How long a plugin's probe may take before it is killed and refused. */
#define FL_PLUGIN_PROBE_TIMEOUT_MS 10000

/* Loads one plugin file. On refusal returns non-OK (FL_ERR_ABI) with fl_err
 * set to "plugin PATH refused: reason" and records the message in
 * r->refused; the registry is unchanged. Loading the same file twice is a
 * no-op. Each file is first loaded in a forked child (dlopen and the entry
 * point, then _exit): one that crashes, calls exit() or abort(), or hangs
 * there for FL_PLUGIN_PROBE_TIMEOUT_MS is refused with the signal or exit
 * status, and the caller carries on. Its entry point therefore runs twice
 * and must have no effect beyond registering. Call it before any OpenMP
 * parallel region has run (at start-up, as the commands do): a forked
 * child cannot use OpenMP's thread pool. */
fl_status fl_registry_load(fl_registry *r, const char *path);

/* Loads every *.so under `dir` (two levels deep, sorted). Refusals are
 * logged as warnings and recorded; returns the number refused. A missing
 * directory is not an error. The files are probed as fl_registry_load
 * says, all in one child process (a new one after each culprit). */
size_t fl_registry_load_dir(fl_registry *r, const char *dir);

/* The built-in plugins' folder into buf (cap bytes): the build tree's
 * plugins/ when the program runs from the build tree, else the install
 * folder found relative to the program's own location (bin/../lib/...,
 * so a DESTDIR or moved install works), else the configured install
 * folder. Returns 0 when it does not fit. Any time; no allocation. */
int fl_registry_default_dir(char *buf, size_t cap);

/* The default search: fl_registry_default_dir; then every file or
 * directory of FLOWLAB_PLUGIN_PATH (colon-separated). Refusals are logged
 * as warnings and recorded; all the files are probed in one child process
 * (a new one after each culprit), as fl_registry_load says. */
void fl_registry_load_defaults(fl_registry *r);
/* The same, with `image` (a file path; NULL = the running program) deciding
 * build tree or install: libflowlab.so passes its own path, so a program
 * outside the build tree that loads the build's library finds the build's
 * plugins. */
void fl_registry_load_defaults_for(fl_registry *r, const char *image);

const fl_comp_rec *fl_registry_find(const fl_registry *r, fl_kind kind, const char *name);
const char *fl_kind_name(fl_kind kind);

/* A "did you mean" for an unknown component name of `kind`, or NULL. */
const char *fl_registry_suggest(const fl_registry *r, fl_kind kind, const char *name);

/* Keys that the host itself reads in the section of a component of `kind`;
 * a component may not declare them. NULL-terminated. */
const char *const *fl_reserved_keys(fl_kind kind);

/* Checks a key table; on error returns non-OK with fl_err set. */
fl_status fl_schema_check(fl_kind kind, const fl_key *keys, uint32_t n);

#endif
