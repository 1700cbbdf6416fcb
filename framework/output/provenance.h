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
/* flush_denormals: 1 or 0 as the run computed, -1 for unknown (null). */
fl_status fl_provenance_write(const char *dir, const fl_registry *reg, uint64_t seed,
                              double t_start, double t_end, int flush_denormals,
                              int exit_status);

#endif
