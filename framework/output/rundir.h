/* rundir.h - run directories and progress display. */
#ifndef FL_RUNDIR_H
#define FL_RUNDIR_H

#include <stdint.h>

#include "core/util.h"

/* Creates the run directory. With `dir` NULL, picks runs/NAME-YYYYmmdd-HHMMSS
 * (suffixed -2, -3, ... if taken). An existing non-empty `dir` is refused
 * (FL_ERR_EXISTS): a run never overwrites another. *out is owned by the
 * caller. */
fl_status fl_rundir_create(const char *dir, const char *name, char **out);

/* Writes `text` to DIR/FILE atomically. */
fl_status fl_rundir_write(const char *dir, const char *file, const char *text, size_t n);

/* A progress line on a terminal (rate, ETA, a status text), redrawn at most
 * ten times a second; plain log lines every `log_every` steps otherwise
 * (log_every = 0: nothing but on a terminal, so an evaluation's progress
 * never fills a log file). */
typedef struct fl_progress {
    int tty;
    double t0, last_draw;
    uint64_t total, log_every, done;
    char label[64];
} fl_progress;

void fl_progress_start(fl_progress *p, const char *label, uint64_t total, uint64_t log_every);
void fl_progress_update(fl_progress *p, uint64_t done, const char *status);
/* Erases the line (terminal) so the next message starts clean. */
void fl_progress_end(fl_progress *p);

#endif
