/* provenance.h - provenance.json: what produced a run directory.
 *
 * Written at the end of `flowlab run`, successful or not, next to
 * result.json: the flowlab version and git revision it was built from, the
 * scalar type, every loaded plugin (name, version, path), the seed, the
 * host name, the start and end times (ISO-8601, UTC), whether denormal
 * floats were flushed (compute/fpenv.h) and the exit status. */
#ifndef FL_PROVENANCE_H
#define FL_PROVENANCE_H

#include <stdint.h>

#include "core/registry.h"
#include "core/util.h"

/* Wall-clock time in seconds since the Unix epoch (for t_start, t_end). */
double fl_provenance_now(void);

/* Writes DIR/provenance.json atomically. `reg` (borrowed, may be NULL for
 * "no plugins loaded") lists the plugins; t_start and t_end are
 * fl_provenance_now() values; exit_status is the command's exit code.
 * Returns FL_ERR_NOMEM or FL_ERR_IO (fl_err names the file); nothing is
 * left to free. */
/* flush_denormals: 1 or 0 as the run computed, -1 for unknown (null).
 * exit_status FL_PROVENANCE_RUNNING writes a run in progress (end, seconds
 * and exit_status null): `flowlab run` writes one as it starts, so that a
 * killed run's plugins are known to --resume. Each plugin has name,
 * version, path (resolved) and sha256 (of its file as loaded). */
#define FL_PROVENANCE_RUNNING (-1)
fl_status fl_provenance_write(const char *dir, const fl_registry *reg, uint64_t seed,
                              double t_start, double t_end, int flush_denormals,
                              int exit_status);

/* One plugin of provenance.json's list (all owned by the array). */
typedef struct fl_prov_plugin {
    char *name;      /* its entry's name, e.g. "flows-coupling" */
    char *path;      /* the file the run loaded */
    char *sha256;    /* its hash then; NULL in files from before hashes */
} fl_prov_plugin;

/* The plugins DIR/provenance.json lists, in load order. FL_ERR_IO when
 * there is no readable provenance.json, FL_ERR_FORMAT when its list cannot
 * be read, FL_ERR_NOMEM (fl_err set); on FL_OK the caller frees *out with
 * fl_provenance_plugins_free. Any time. */
fl_status fl_provenance_plugins(const char *dir, fl_prov_plugin **out, size_t *n);
void fl_provenance_plugins_free(fl_prov_plugin *v, size_t n);

/* Gives registry `r` (its default plugins already loaded) the plugins the
 * run in DIR used: each one of provenance.json whose name is not loaded
 * yet is loaded from its recorded path; a warning names each one that
 * changed (another sha256) and each one that is gone, and the gone ones
 * are listed in `missing` ("NAME (PATH), ...", cut to cap bytes; "" when
 * none) for the caller's message should the experiment then not build.
 * A DIR without provenance.json reloads nothing. Returns FL_OK (problems
 * are warnings), or FL_ERR_NOMEM. Call before building the experiment. */
fl_status fl_provenance_reload(const char *dir, fl_registry *r, char *missing, size_t cap);

#endif
