/* rundir.c - run directories and the progress line. */
#define _POSIX_C_SOURCE 200809L
#include "output/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

static int dir_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *de;
    int empty = 1;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

fl_status fl_rundir_create(const char *dir, const char *name, char **out)
{
    char *path = NULL;
    if (dir) {
        struct stat sb;
        if (stat(dir, &sb) == 0) {
            if (!S_ISDIR(sb.st_mode)) {
                fl_err("%s: exists and is not a directory; choose another --out", dir);
                return FL_ERR_EXISTS;
            }
            if (!dir_empty(dir)) {
                fl_err("%s: run directory exists and is not empty; choose another --out or "
                       "remove it (runs are never overwritten)",
                       dir);
                return FL_ERR_EXISTS;
            }
        }
        path = fl_strdup(dir);
    } else {
        char stamp[32];
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
        for (int k = 1; k < 1000 && !path; k++) {
            char *p = k == 1 ? fl_strfmt("runs/%s-%s", name, stamp)
                             : fl_strfmt("runs/%s-%s-%d", name, stamp, k);
            if (!p) return FL_ERR_NOMEM;
            struct stat sb;
            if (stat(p, &sb) != 0) path = p;
            else free(p);
        }
    }
    if (!path) return FL_ERR_NOMEM;
    fl_status st = fl_mkdirs(path);
    if (st == FL_OK && access(path, W_OK) != 0) {
        fl_err("%s: run directory is not writable: %s", path, strerror(errno));
        st = FL_ERR_IO;
    }
    if (st != FL_OK) {
        free(path);
        return st;
    }
    *out = path;
    return FL_OK;
}

fl_status fl_rundir_write(const char *dir, const char *file, const char *text, size_t n)
{
    char *p = fl_strfmt("%s/%s", dir, file);
    if (!p) return FL_ERR_NOMEM;
    fl_status st = fl_write_atomic(p, text, n);
    free(p);
    return st;
}

void fl_progress_start(fl_progress *p, const char *label, uint64_t total, uint64_t log_every)
{
    memset(p, 0, sizeof *p);
    p->tty = isatty(fileno(stderr)) && fl_log_get_level() <= FL_LOG_INFO;
    p->t0 = fl_now();
    p->total = total;
    p->log_every = log_every; /* 0: terminal only */
    snprintf(p->label, sizeof p->label, "%s", label);
}

static void fmt_time(double s, char *buf, size_t cap)
{
    if (s < 0 || s > 1e7) snprintf(buf, cap, "--:--");
    else if (s < 3600) snprintf(buf, cap, "%d:%02d", (int)s / 60, (int)s % 60);
    else snprintf(buf, cap, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
}

void fl_progress_update(fl_progress *p, uint64_t done, const char *status)
{
    p->done = done;
    double now = fl_now(), el = now - p->t0;
    double rate = el > 0 ? (double)done / el : 0;
    char eta[32];
    fmt_time(rate > 0 ? (double)(p->total - done) / rate : -1, eta, sizeof eta);
    if (p->tty) {
        if (now - p->last_draw < 0.1 && done < p->total) return;
        p->last_draw = now;
        int pct = p->total ? (int)(100.0 * (double)done / (double)p->total) : 100;
        fprintf(stderr, "\r\033[K%s %3d%% %llu/%llu  %.0f it/s  ETA %s  %s", p->label, pct,
                (unsigned long long)done, (unsigned long long)p->total, rate, eta,
                status ? status : "");
        fflush(stderr);
        fl_log_progress_active(1);
    } else if (p->log_every && (done % p->log_every == 0 || done == p->total)) {
        fl_log(FL_LOG_INFO, "%s %llu/%llu  %.0f it/s  ETA %s  %s", p->label,
               (unsigned long long)done, (unsigned long long)p->total, rate, eta,
               status ? status : "");
    }
}

void fl_progress_end(fl_progress *p)
{
    if (p->tty) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        fl_log_progress_active(0);
    }
}
