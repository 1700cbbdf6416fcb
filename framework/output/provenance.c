/* provenance.c - provenance.json for run directories. */
#define _POSIX_C_SOURCE 200809L
#include "output/provenance.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fl_vcs.h"
#include "output/rundir.h"

#ifndef FL_VERSION
#define FL_VERSION "unknown"
#endif

double fl_provenance_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "2024-05-01T12:34:56.789Z" */
static void iso8601(double t, char *buf, size_t cap)
{
    if (!isfinite(t) || t < 0) {
        snprintf(buf, cap, "unknown");
        return;
    }
    time_t sec = (time_t)t;
    int ms = (int)((t - (double)sec) * 1000.0);
    if (ms > 999) ms = 999;
    struct tm tm;
    gmtime_r(&sec, &tm);
    char day[40];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%03dZ", day, ms);
}

fl_status fl_provenance_write(const char *dir, const fl_registry *reg, uint64_t seed,
                              double t_start, double t_end, int exit_status)
{
    char host[256] = "unknown", start[48], end[48];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = 0;
    iso8601(t_start, start, sizeof start);
    iso8601(t_end, end, sizeof end);

    fl_buf b = { 0 };
    fl_buf_printf(&b, "{\n  \"flowlab_version\": ");
    fl_buf_json_str(&b, FL_VERSION);
    fl_buf_printf(&b, ",\n  \"git_revision\": ");
    fl_buf_json_str(&b, FL_GIT_REVISION[0] ? FL_GIT_REVISION : "unknown");
    fl_buf_printf(&b, ",\n  \"abi\": \"%d.%d\",\n  \"fl_real\": \"%s\",\n  \"plugins\": [",
                  FL_ABI_MAJOR, FL_ABI_MINOR, FL_REAL_NAME);
    for (size_t i = 0; reg && i < reg->n_plugins; i++) {
        const fl_plugin_rec *p = &reg->plugins[i];
        fl_buf_printf(&b, "%s\n    { \"name\": ", i ? "," : "");
        fl_buf_json_str(&b, p->name);
        fl_buf_printf(&b, ", \"version\": ");
        fl_buf_json_str(&b, p->version);
        fl_buf_printf(&b, ", \"path\": ");
        fl_buf_json_str(&b, p->path);
        fl_buf_printf(&b, " }");
    }
    fl_buf_printf(&b, "%s],\n  \"seed\": %llu,\n  \"hostname\": ", reg && reg->n_plugins ? "\n  " : "",
                  (unsigned long long)seed);
    fl_buf_json_str(&b, host);
    fl_buf_printf(&b, ",\n  \"start\": \"%s\",\n  \"end\": \"%s\",\n  \"seconds\": %.3f,\n"
                      "  \"exit_status\": %d\n}\n",
                  start, end, t_end - t_start, exit_status);
    fl_status st = b.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "provenance.json", b.data, b.len);
    fl_buf_free(&b);
    return st;
}
