/* provenance.c - provenance.json for run directories. */
#define _POSIX_C_SOURCE 200809L
#include "output/provenance.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fl_vcs.h"
#include "output/json.h"
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
                              double t_start, double t_end, int flush_denormals,
                              int exit_status)
{
    char host[256] = "unknown", start[48], end[48];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = 0;
    iso8601(t_start, start, sizeof start);
    iso8601(t_end, end, sizeof end);

    char abi[32];
    snprintf(abi, sizeof abi, "%d.%d", FL_ABI_MAJOR, FL_ABI_MINOR);
    fl_buf b = { 0 };
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_str(&w, "flowlab_version", FL_VERSION);
    fl_json_key_str(&w, "git_revision", FL_GIT_REVISION[0] ? FL_GIT_REVISION : "unknown");
    fl_json_key_str(&w, "abi", abi);
    fl_json_key_str(&w, "fl_real", FL_REAL_NAME);
    fl_json_key_array(&w, "plugins", FL_JSON_BLOCK);
    for (size_t i = 0; reg && i < reg->n_plugins; i++) {
        const fl_plugin_rec *p = &reg->plugins[i];
        fl_json_key_object(&w, NULL, FL_JSON_INLINE);
        fl_json_key_str(&w, "name", p->name);
        fl_json_key_str(&w, "version", p->version);
        fl_json_key_str(&w, "path", p->path);
        fl_json_close(&w);
    }
    fl_json_close(&w);
    fl_json_key_uint(&w, "seed", (unsigned long long)seed);
    fl_json_key_str(&w, "hostname", host);
    fl_json_key_str(&w, "start", start);
    fl_json_key_str(&w, "end", end);
    fl_json_key_num(&w, "seconds", t_end - t_start, "%.3f");
    if (flush_denormals < 0) fl_json_key_null(&w, "flush_denormals");
    else fl_json_key_bool(&w, "flush_denormals", flush_denormals);
    fl_json_key_int(&w, "exit_status", exit_status);
    fl_status st = fl_json_end(&w);
    if (st == FL_OK) st = fl_rundir_write(dir, "provenance.json", b.data, b.len);
    fl_buf_free(&b);
    return st;
}
