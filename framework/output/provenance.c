/* provenance.c - provenance.json for run directories. */
#define _POSIX_C_SOURCE 200809L
#include "output/provenance.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sha256.h"
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
    const int running = exit_status == FL_PROVENANCE_RUNNING;

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
        fl_json_key_str(&w, "sha256", p->sha256);
        fl_json_close(&w);
    }
    fl_json_close(&w);
    fl_json_key_uint(&w, "seed", (unsigned long long)seed);
    fl_json_key_str(&w, "hostname", host);
    fl_json_key_str(&w, "start", start);
    if (running) {
        fl_json_key_null(&w, "end");
        fl_json_key_null(&w, "seconds");
    } else {
        fl_json_key_str(&w, "end", end);
        fl_json_key_num(&w, "seconds", t_end - t_start, "%.3f");
    }
    if (flush_denormals < 0) fl_json_key_null(&w, "flush_denormals");
    else fl_json_key_bool(&w, "flush_denormals", flush_denormals);
    if (running) fl_json_key_null(&w, "exit_status");
    else fl_json_key_int(&w, "exit_status", exit_status);
    fl_status st = fl_json_end(&w);
    if (st == FL_OK) st = fl_rundir_write(dir, "provenance.json", b.data, b.len);
    fl_buf_free(&b);
    return st;
}

/* ---- reading the plugins back ------------------------------------------- */

/* The JSON string at *p (just past its opening quote) unescaped into a new
 * string; *p moves past the closing quote. NULL on a malformed string or
 * out of memory. Escapes: \" \\ \/ \b \f \n \r \t and \u00XX (what
 * fl_json writes for a path). */
static char *json_string(const char **p)
{
    fl_buf b = { 0 };
    const char *s = *p;
    for (; *s && *s != '"'; s++) {
        char c = *s;
        if (c == '\\') {
            c = *++s;
            switch (c) {
            case '"': case '\\': case '/': break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                unsigned v;
                if (sscanf(s + 1, "%4x", &v) != 1 || v > 0xff) {
                    fl_buf_free(&b);
                    return NULL;
                }
                c = (char)v;
                s += 4;
                break;
            }
            default: fl_buf_free(&b); return NULL;
            }
        }
        fl_buf_printf(&b, "%c", c);
    }
    if (*s != '"' || b.failed) {
        fl_buf_free(&b);
        return NULL;
    }
    *p = s + 1;
    if (!b.data) return fl_strdup("");
    return b.data;
}

void fl_provenance_plugins_free(fl_prov_plugin *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].path);
        free(v[i].sha256);
    }
    free(v);
}

fl_status fl_provenance_plugins(const char *dir, fl_prov_plugin **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char *path = fl_strfmt("%s/provenance.json", dir);
    if (!path) return FL_ERR_NOMEM;
    size_t len = 0;
    char *text = NULL;
    fl_status st = fl_read_file(path, &text, &len);
    if (st != FL_OK) {
        free(path);
        return st;
    }
    /* "plugins": [ {"name": ..., "version": ..., "path": ..., "sha256": ...}, ... ] */
    const char *p = strstr(text, "\"plugins\"");
    p = p ? strchr(p, '[') : NULL;
    fl_prov_plugin *v = NULL;
    size_t cnt = 0;
    st = p ? FL_OK : FL_ERR_FORMAT;
    if (p) p++; /* past '[' */
    while (st == FL_OK && *p && *p != ']') {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',') p++;
        if (*p == ']') break;
        if (*p != '{') {
            st = FL_ERR_FORMAT;
            break;
        }
        fl_prov_plugin rec = { 0 };
        p++;
        while (st == FL_OK && *p && *p != '}') {
            while (*p == ' ' || *p == ',' || *p == '\n') p++;
            if (*p == '}') break;
            if (*p != '"') {
                st = FL_ERR_FORMAT;
                break;
            }
            p++;
            char *key = json_string(&p);
            while (key && (*p == ' ' || *p == ':')) p++;
            char *val = key && *p == '"' ? (p++, json_string(&p)) : NULL;
            if (!key || !val) st = FL_ERR_FORMAT;
            else if (strcmp(key, "name") == 0 && !rec.name) rec.name = val, val = NULL;
            else if (strcmp(key, "path") == 0 && !rec.path) rec.path = val, val = NULL;
            else if (strcmp(key, "sha256") == 0 && !rec.sha256) rec.sha256 = val, val = NULL;
            free(key);
            free(val);
        }
        if (st == FL_OK && (*p != '}' || !rec.name || !rec.path)) st = FL_ERR_FORMAT;
        fl_prov_plugin *nv = st == FL_OK ? realloc(v, (cnt + 1) * sizeof *nv) : NULL;
        if (st == FL_OK && !nv) st = FL_ERR_NOMEM;
        if (st != FL_OK) {
            free(rec.name);
            free(rec.path);
            free(rec.sha256);
            break;
        }
        v = nv;
        v[cnt++] = rec;
        p++;
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',') p++;
    }
    if (st == FL_OK && *p != ']') st = FL_ERR_FORMAT;
    if (st == FL_ERR_FORMAT) fl_err("%s: cannot read its \"plugins\" list", path);
    free(text);
    free(path);
    if (st != FL_OK) {
        fl_provenance_plugins_free(v, cnt);
        return st;
    }
    *out = v;
    *n = cnt;
    return FL_OK;
}

fl_status fl_provenance_reload(const char *dir, fl_registry *r, char *missing, size_t cap)
{
    if (cap) missing[0] = 0;
    fl_prov_plugin *v;
    size_t n;
    char *where = fl_strfmt("%s/provenance.json", dir);
    if (!where) return FL_ERR_NOMEM;
    fl_status st = fl_provenance_plugins(dir, &v, &n);
    if (st == FL_ERR_IO) { /* a run from before provenance.json, or killed early */
        free(where);
        fl_err_clear();
        return FL_OK;
    }
    if (st != FL_OK) {
        fl_log(FL_LOG_WARN, "%s; its plugins are not reloaded", fl_err_msg());
        free(where);
        return FL_OK;
    }
    size_t used = 0;
    for (size_t i = 0; i < n && st == FL_OK; i++) {
        const fl_prov_plugin *p = &v[i];
        const fl_plugin_rec *have = NULL;
        for (size_t j = 0; j < r->n_plugins && !have; j++)
            if (strcmp(r->plugins[j].name, p->name) == 0) have = &r->plugins[j];
        if (!have && access(p->path, R_OK) == 0) {
            /* not among the default plugins: the run's own file */
            if (fl_registry_load(r, p->path) != FL_OK) {
                fl_log(FL_LOG_WARN, "%s: the run's plugin %s: %s", where, p->name, fl_err_msg());
                continue;
            }
            have = &r->plugins[r->n_plugins - 1];
            fl_log(FL_LOG_INFO, "%s: reloaded the run's plugin %s from %s", where, p->name,
                   p->path);
        }
        if (!have) {
            fl_log(FL_LOG_WARN, "%s: the run loaded plugin %s from %s, which is gone", where,
                   p->name, p->path);
            if (used < cap) {
                int k = snprintf(missing + used, cap - used, "%s%s (%s)", used ? ", " : "",
                                 p->name, p->path);
                used = k > 0 && (size_t)k < cap - used ? used + (size_t)k : cap;
            }
            continue;
        }
        /* Same name: a changed file (same path, other hash) may change the
         * model; another path (another build or install of it) is fine
         * unless its content differs too. */
        if (p->sha256 && p->sha256[0] && have->sha256[0] && strcmp(p->sha256, have->sha256) != 0)
            fl_log(FL_LOG_WARN,
                   "%s: plugin %s has changed since the run (sha256 %.12s..., now %.12s... in %s%s)",
                   where, p->name, p->sha256, have->sha256, have->path,
                   strcmp(have->path, p->path) == 0 ? "" : "; the run's was elsewhere");
    }
    fl_provenance_plugins_free(v, n);
    free(where);
    return FL_OK;
}
