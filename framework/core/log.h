/* log.h - the host's messages on stderr. */
#ifndef FL_LOG_H
#define FL_LOG_H

#include <stdarg.h>

#include <flowlab/host.h>

/* Messages below `lvl` are dropped (default FL_LOG_INFO). */
void fl_log_set_level(fl_log_level lvl);
fl_log_level fl_log_get_level(void);
/* "flowlab: warning: ..." on stderr; clears a live progress line first. */
void fl_log(fl_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fl_log_v(fl_log_level lvl, const char *prefix, const char *fmt, va_list ap);
/* Tells the logger a progress line is on screen (it erases it first). */
void fl_log_progress_active(int on);

#endif
