/* log.c - the host's messages on stderr. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>

static fl_log_level level = FL_LOG_INFO;
static int progress_on;

void fl_log_set_level(fl_log_level lvl) { level = lvl; }
fl_log_level fl_log_get_level(void) { return level; }
void fl_log_progress_active(int on) { progress_on = on; }

void fl_log_v(fl_log_level lvl, const char *prefix, const char *fmt, va_list ap)
{
    if (lvl < level) return;
    if (lvl > FL_LOG_ERROR) lvl = FL_LOG_ERROR;
    static const char *tag[] = { "debug: ", "", "warning: ", "error: " };
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* One fprintf per message keeps lines from interleaving across threads. */
    fprintf(stderr, "%sflowlab: %s%s%s%s\n", progress_on ? "\r\033[K" : "", tag[lvl],
            prefix ? prefix : "", prefix ? ": " : "", msg);
}

void fl_log(fl_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fl_log_v(lvl, NULL, fmt, ap);
    va_end(ap);
}
