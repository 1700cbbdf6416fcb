/* registry.c - dlopen plugins, check them, keep their component classes. */
#define _GNU_SOURCE
#include "core/registry.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/hostimpl.h"
#include "core/log.h"
#include "core/sha256.h"
#include "core/util.h"

#ifndef FL_BUILD_PLUGIN_DIR
#define FL_BUILD_PLUGIN_DIR ""
#endif
#ifndef FL_BUILD_ROOT
#define FL_BUILD_ROOT ""
#endif
#ifndef FL_INSTALL_PLUGIN_DIR
#define FL_INSTALL_PLUGIN_DIR "/usr/local/lib/flowlab/plugins"
#endif
/* The plugin folder relative to the installed binary's folder (e.g.
 * "../lib/x86_64-linux-gnu/flowlab/plugins"), so that an installed tree
 * moved elsewhere, or installed with DESTDIR, still finds its plugins;
 * empty when bindir or libdir was configured as an absolute path. */
#ifndef FL_REL_PLUGIN_DIR
#define FL_REL_PLUGIN_DIR ""
#endif

fl_registry *fl_registry_new(void) { return calloc(1, sizeof(fl_registry)); }

void fl_registry_free(fl_registry *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_plugins; i++) {
        /* Under ASan, keep libraries mapped so leak reports stay symbolised. */
#ifndef FL_NO_DLCLOSE
        if (r->plugins[i].handle) dlclose(r->plugins[i].handle);
#endif
        free(r->plugins[i].path);
        free(r->plugins[i].name);
        free(r->plugins[i].version);
    }
    for (size_t i = 0; i < r->n_refused; i++) free(r->refused[i]);
    free(r->refused);
    free(r->plugins);
    free(r->comps);
    free(r);
}

const char *fl_kind_name(fl_kind kind)
{
    switch (kind) {
    case FL_KIND_FLOW: return "flow";
    case FL_KIND_POSTERIOR: return "posterior";
    case FL_KIND_ESTIMATOR: return "estimator";
    case FL_KIND_LIKELIHOOD: return "likelihood";
    case FL_KIND_PRIOR: return "prior";
    case FL_KIND_TARGET: return "target";
    case FL_KIND_DATASET: return "dataset";
    }
    return "unknown";
}

const char *const *fl_reserved_keys(fl_kind kind)
{
    static const char *const flow[] = { "type", "repeat", "permute", NULL };
    static const char *const est[] = { "type", "k", NULL };
    static const char *const other[] = { "type", NULL };
    return kind == FL_KIND_FLOW ? flow : kind == FL_KIND_ESTIMATOR ? est : other;
}

static int valid_name(const char *s, int dash)
{
    if (!s || !*s || strlen(s) > 63) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              (dash && *s == '-')))
            return 0;
    return 1;
}

fl_status fl_schema_check(fl_kind kind, const fl_key *keys, uint32_t n)
{
    if (n && !keys) {
        fl_err("schema declares %u keys but no table", n);
        return FL_ERR_INVALID;
    }
    const char *const *res = fl_reserved_keys(kind);
    for (uint32_t i = 0; i < n; i++) {
        const fl_key *k = &keys[i];
        if (!valid_name(k->name, 0)) {
            fl_err("schema key %u has a bad name '%s' (use [a-z0-9_])", i, k->name ? k->name : "(null)");
            return FL_ERR_INVALID;
        }
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(keys[j].name, k->name) == 0) {
                fl_err("schema declares key '%s' twice", k->name);
                return FL_ERR_INVALID;
            }
        for (size_t j = 0; res[j]; j++)
            if (strcmp(res[j], k->name) == 0) {
                fl_err("schema declares key '%s', which the host reserves", k->name);
                return FL_ERR_INVALID;
            }
        if (k->type < FL_KEY_INT || k->type > FL_KEY_INT_LIST) {
            fl_err("schema key '%s' has unknown type %d", k->name, (int)k->type);
            return FL_ERR_INVALID;
        }
        if (k->type == FL_KEY_ENUM && (!k->choices || !*k->choices)) {
            fl_err("schema key '%s' is an enum without choices", k->name);
            return FL_ERR_INVALID;
        }
        if (!k->help) {
            fl_err("schema key '%s' has no help text", k->name);
            return FL_ERR_INVALID;
        }
        if (k->def) {
            fl_value v;
            char msg[256];
            const char *bad = fl_value_parse(k, k->def, &v, msg, sizeof msg);
            free(v.list);
            if (bad) {
                fl_err("schema key '%s' has default '%s': %s", k->name, k->def, bad);
                return FL_ERR_INVALID;
            }
        }
    }
    return FL_OK;
}

/* Checks a class the plugin registers; sets fl_err on failure. */
static fl_status check_class(fl_kind kind, const fl_component *c, fl_comp_rec *rec)
{
    if (!c) {
        fl_err("registered a NULL class");
        return FL_ERR_INVALID;
    }
    if (!valid_name(c->name, 1)) {
        fl_err("component name '%s' is not [a-z0-9_-]+ (at most 63)", c->name ? c->name : "(null)");
        return FL_ERR_INVALID;
    }
    size_t need = 0, have = 0;
    switch (kind) {
    case FL_KIND_FLOW:
        need = offsetof(fl_flow_class, inverse) + sizeof(void *);
        have = sizeof(fl_flow_class);
        break;
    case FL_KIND_DATASET:
        need = offsetof(fl_dataset_class, read) + sizeof(void *);
        have = sizeof(fl_dataset_class);
        break;
    case FL_KIND_POSTERIOR:
        need = offsetof(fl_posterior_class, backward) + sizeof(void *);
        have = sizeof(fl_posterior_class);
        break;
    case FL_KIND_ESTIMATOR:
        need = offsetof(fl_estimator_class, weights) + sizeof(void *);
        have = sizeof(fl_estimator_class);
        break;
    case FL_KIND_LIKELIHOOD:
        need = offsetof(fl_likelihood_class, mean) + sizeof(void *);
        have = sizeof(fl_likelihood_class);
        break;
    case FL_KIND_PRIOR:
        need = offsetof(fl_prior_class, sample) + sizeof(void *);
        have = sizeof(fl_prior_class);
        break;
    case FL_KIND_TARGET:
        need = offsetof(fl_target_class, log_prob) + sizeof(void *);
        have = sizeof(fl_target_class);
        break;
    default:
        return FL_ERR_UNSUPPORTED;
    }
    if (c->struct_size < need) {
        fl_err("%s '%s': class struct_size %u is smaller than ABI %d.%d's %zu", fl_kind_name(kind),
               c->name, c->struct_size, FL_ABI_MAJOR, FL_ABI_MINOR, need);
        return FL_ERR_INVALID;
    }
    memset(&rec->cls, 0, sizeof rec->cls);
    memcpy(&rec->cls, c, c->struct_size < have ? c->struct_size : have);
    rec->cls.base.struct_size = (uint32_t)have;
    fl_status st = fl_schema_check(kind, c->keys, c->n_keys);
    if (st != FL_OK) {
        fl_err_prefix("%s '%s'", fl_kind_name(kind), c->name);
        return st;
    }
    if (kind == FL_KIND_FLOW) {
        const fl_flow_class *f = &rec->cls.flow;
        if (!f->create || !f->destroy || !f->forward || !f->backward) {
            fl_err("flow '%s' lacks create, destroy, forward or backward", c->name);
            return FL_ERR_INVALID;
        }
        if ((f->flags & FL_FLOW_HAS_INVERSE) && !f->inverse) {
            fl_err("flow '%s' declares an inverse but provides none", c->name);
            return FL_ERR_INVALID;
        }
        if ((f->flags & FL_FLOW_AUTOREGRESSIVE) && !f->order) {
            fl_err("flow '%s' declares itself autoregressive but provides no order()", c->name);
            return FL_ERR_INVALID;
        }
    } else if (kind == FL_KIND_DATASET) {
        const fl_dataset_class *d = &rec->cls.dataset;
        if (!d->create || !d->destroy || (!d->draw && !d->read)) {
            fl_err("dataset '%s' lacks create, destroy, or both draw and read", c->name);
            return FL_ERR_INVALID;
        }
    } else {
        /* Every function of the other kinds is required, except
         * likelihood.init_bias. */
        int ok = 1;
        const fl_posterior_class *p = &rec->cls.posterior;
        const fl_estimator_class *e = &rec->cls.estimator;
        const fl_likelihood_class *l = &rec->cls.likelihood;
        const fl_prior_class *q = &rec->cls.prior;
        const fl_target_class *t = &rec->cls.target;
        switch (kind) {
        case FL_KIND_POSTERIOR:
            ok = p->create && p->destroy && p->n_params && p->sample && p->backward;
            break;
        case FL_KIND_ESTIMATOR: ok = e->create && e->destroy && e->weights; break;
        case FL_KIND_LIKELIHOOD:
            ok = l->create && l->destroy && l->n_params && l->log_prob && l->mean;
            break;
        case FL_KIND_PRIOR: ok = q->create && q->destroy && q->log_prob && q->sample; break;
        case FL_KIND_TARGET: ok = t->create && t->destroy && t->log_prob; break;
        default: break;
        }
        if (!ok) {
            fl_err("%s '%s' leaves a required function NULL (see flowlab/%s.h)",
                   fl_kind_name(kind), c->name, fl_kind_name(kind));
            return FL_ERR_INVALID;
        }
    }
    return FL_OK;
}

/* Components staged during one plugin's init; committed only if it all
 * succeeds, so a refused plugin registers nothing. */
typedef struct staging {
    fl_registry *r;
    fl_comp_rec *recs;
    size_t n, cap;
    size_t plugin;
    fl_status st;
    char msg[1024];
} staging;

static fl_status reg_add(fl_registrar *reg, fl_kind kind, const fl_component *cls)
{
    staging *sg = reg->host_data;
    if (sg->st != FL_OK) return sg->st;
    fl_comp_rec rec = { .kind = kind, .plugin = sg->plugin };
    fl_status st = check_class(kind, cls, &rec);
    if (st == FL_ERR_UNSUPPORTED) {
        fl_log(FL_LOG_WARN, "%s: skipping component '%s' of kind %d, unknown to this host",
               sg->r->plugins[sg->plugin].path, cls->name ? cls->name : "?", (int)kind);
        return FL_OK;
    }
    if (st == FL_OK) {
        const char *name = rec.cls.base.name;
        const fl_comp_rec *old = fl_registry_find(sg->r, kind, name);
        if (old) {
            fl_err("%s '%s' is already registered by %s", fl_kind_name(kind), name,
                   sg->r->plugins[old->plugin].path);
            st = FL_ERR_INVALID;
        }
        for (size_t i = 0; st == FL_OK && i < sg->n; i++)
            if (sg->recs[i].kind == kind && strcmp(sg->recs[i].cls.base.name, name) == 0) {
                fl_err("%s '%s' is registered twice", fl_kind_name(kind), name);
                st = FL_ERR_INVALID;
            }
    }
    if (st == FL_OK && sg->n == sg->cap) {
        size_t cap = sg->cap ? 2 * sg->cap : 8;
        fl_comp_rec *nr = realloc(sg->recs, cap * sizeof *nr);
        if (!nr) st = FL_ERR_NOMEM;
        else {
            sg->recs = nr;
            sg->cap = cap;
        }
    }
    if (st != FL_OK) {
        snprintf(sg->msg, sizeof sg->msg, "%s", fl_err_msg());
        sg->st = st;
        return st;
    }
    sg->recs[sg->n++] = rec;
    return FL_OK;
}

static void record_refusal(fl_registry *r, const char *msg)
{
    char **nr = realloc(r->refused, (r->n_refused + 1) * sizeof *nr);
    if (!nr) return;
    r->refused = nr;
    r->refused[r->n_refused] = fl_strdup(msg);
    if (r->refused[r->n_refused]) r->n_refused++;
}

static fl_status refuse(fl_registry *r, void *handle, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static fl_status refuse(fl_registry *r, void *handle, const char *path, const char *fmt, ...)
{
    char reason[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (handle) dlclose(handle);
    fl_err("plugin %s refused: %s", path, reason);
    record_refusal(r, fl_err_msg());
    return FL_ERR_ABI;
}

/* 1 in the child process of a probe, which loads plugins unprobed. */
static int in_probe;

/* Loads the plugin at `real` (resolved) into `r`; `path` names it in
 * messages. The body of fl_registry_load once the probe has passed. */
static fl_status load_unprobed(fl_registry *r, const char *path, const char *real);

/* What the probe found: NULL = came back (refused or not: the real load
 * repeats the checks and says why), else why it did not (malloc'd). */
typedef struct probe_list {
    char **real;   /* resolved paths, in load order */
    char **why;
    size_t n, cap;
} probe_list;

static void probe_list_free(probe_list *pl)
{
    for (size_t i = 0; i < pl->n; i++) {
        free(pl->real[i]);
        free(pl->why[i]);
    }
    free(pl->real);
    free(pl->why);
    memset(pl, 0, sizeof *pl);
}

/* Appends `path` resolved; an unresolvable one is skipped (the real load
 * refuses it as missing). Returns 0 when out of memory. */
static int probe_list_add(probe_list *pl, const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real)) return 1;
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? 2 * pl->cap : 16;
        char **nr = realloc(pl->real, cap * sizeof *nr);
        if (nr) pl->real = nr;
        char **nw = nr ? realloc(pl->why, cap * sizeof *nw) : NULL;
        if (!nw) return 0;
        pl->why = nw;
        pl->cap = cap;
    }
    pl->real[pl->n] = fl_strdup(real);
    pl->why[pl->n] = NULL;
    if (!pl->real[pl->n]) return 0;
    pl->n++;
    return 1;
}

/* Reads exactly `n` bytes within `ms` milliseconds: 1, 0 at end of file
 * or error, -1 on time-out. */
static int read_within(int fd, void *buf, size_t n, int ms)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t got = 0;
    while (got < n) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long spent = (long)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (spent >= ms) return -1;
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        int rc = poll(&pf, 1, ms - (int)spent);
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) return 0;
        if (rc == 0) return -1;
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return 0;
        got += (size_t)k;
    }
    return 1;
}

/* Loads the plugins of `pl`, in order, in a forked child process, so that
 * one that crashes, ends the process or hangs while its library is loaded
 * or its entry point runs (a constructor, init) takes down only the
 * child; it is marked in pl->why, and a new child goes on with the next.
 * One fork per list, plus one per culprit. When no child can be made the
 * plugins are left unmarked (loaded as before, unprobed). The child uses
 * no OpenMP, but a plugin's init could: call before any parallel region. */
static void probe_all(probe_list *pl)
{
    size_t next = 0;
    while (next < pl->n) {
        int fds[2];
        if (pipe(fds) != 0) return;
        /* Buffered output would be written twice if the child flushed it
         * (it ends with _exit, but a plugin may call exit()). */
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            close(fds[0]);
            close(fds[1]);
            return;
        }
        if (pid == 0) {
            close(fds[0]);
            /* The parent repeats each load and prints what it has to say;
             * the kernel, not a sanitizer's handler, reports a crash. */
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0) {
                dup2(null, STDOUT_FILENO);
                dup2(null, STDERR_FILENO);
            }
            static const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP };
            for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) signal(sigs[i], SIG_DFL);
            in_probe = 1;
            fl_registry *t = fl_registry_new();
            for (size_t i = next; t && i < pl->n; i++) {
                fl_registry_load(t, pl->real[i]);
                uint32_t done = (uint32_t)i;
                if (write(fds[1], &done, sizeof done) != (ssize_t)sizeof done) _exit(1);
            }
            /* _exit: no atexit handlers, no leak check of the copied heap. */
            _exit(0);
        }
        close(fds[1]);
        int rc = 1;
        uint32_t done;
        while (next < pl->n && (rc = read_within(fds[0], &done, sizeof done,
                                                 FL_PLUGIN_PROBE_TIMEOUT_MS)) == 1)
            next = (size_t)done + 1;
        if (rc < 0) kill(pid, SIGKILL);
        close(fds[0]);
        int status = 0;
        pid_t w;
        do w = waitpid(pid, &status, 0);
        while (w < 0 && errno == EINTR);
        if (next >= pl->n || w < 0) return;
        /* The child died (or hung) loading plugin `next`. */
        char why[256];
        if (rc < 0)
            snprintf(why, sizeof why,
                     "did not return from its entry point within %d s (probe killed)",
                     FL_PLUGIN_PROBE_TIMEOUT_MS / 1000);
        else if (WIFSIGNALED(status))
            snprintf(why, sizeof why, "crashed in its entry point or while loading (signal %d, %s)",
                     WTERMSIG(status), strsignal(WTERMSIG(status)));
        else if (WIFEXITED(status))
            snprintf(why, sizeof why,
                     "ended the process in its entry point or while loading (exit status %d)",
                     WEXITSTATUS(status));
        else snprintf(why, sizeof why, "its probe process failed (wait status %d)", status);
        pl->why[next] = fl_strdup(why);
        next++;
    }
}

/* Loads `path` after the probe: `why` non-NULL refuses it for that. */
static fl_status load_probed(fl_registry *r, const char *path, const char *why)
{
    char real[PATH_MAX];
    if (!realpath(path, real)) return refuse(r, NULL, path, "no such file");
    for (size_t i = 0; i < r->n_plugins; i++)
        if (strcmp(r->plugins[i].path, real) == 0) return FL_OK;
    if (why) return refuse(r, NULL, path, "%s", why);
    return load_unprobed(r, path, real);
}

/* The verdict of `pl` on `path`, NULL when it passed or was not probed. */
static const char *probe_verdict(const probe_list *pl, const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real)) return NULL;
    for (size_t i = 0; i < pl->n; i++)
        if (pl->why[i] && strcmp(pl->real[i], real) == 0) return pl->why[i];
    return NULL;
}

fl_status fl_registry_load(fl_registry *r, const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real)) return refuse(r, NULL, path, "no such file");
    for (size_t i = 0; i < r->n_plugins; i++)
        if (strcmp(r->plugins[i].path, real) == 0) return FL_OK;
    if (in_probe) return load_unprobed(r, path, real);
    probe_list pl = { 0 };
    if (probe_list_add(&pl, real)) probe_all(&pl);
    fl_status st = load_probed(r, path, pl.n ? pl.why[0] : NULL);
    probe_list_free(&pl);
    return st;
}

static fl_status load_unprobed(fl_registry *r, const char *path, const char *real)
{
    void *h = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return refuse(r, NULL, path, "cannot load: %s", e ? e : "unknown dlopen error");
    }
    const fl_plugin_entry *ent = dlsym(h, FL_PLUGIN_SYMBOL);
    if (!ent)
        return refuse(r, h, path, "no '%s' symbol: not a flowlab plugin (use FL_PLUGIN(...))",
                      FL_PLUGIN_SYMBOL);
    if (ent->abi_major != FL_ABI_MAJOR)
        return refuse(r, h, path, "built for ABI %u.%u, this host has ABI %d.%d; rebuild it",
                      ent->abi_major, ent->abi_minor, FL_ABI_MAJOR, FL_ABI_MINOR);
    if (ent->real_size != sizeof(fl_real))
        return refuse(r, h, path,
                      "built with sizeof(fl_real) = %u, this host uses %zu (%s); rebuild it with "
                      "the same -Dreal",
                      ent->real_size, sizeof(fl_real), FL_REAL_NAME);
    if (!ent->init || !ent->name)
        return refuse(r, h, path, "entry has no init function or no name");

    if (r->n_plugins == r->cap_plugins) {
        size_t cap = r->cap_plugins ? 2 * r->cap_plugins : 16;
        fl_plugin_rec *np = realloc(r->plugins, cap * sizeof *np);
        if (!np) return refuse(r, h, path, "out of memory");
        r->plugins = np;
        r->cap_plugins = cap;
    }
    fl_plugin_rec *pr = &r->plugins[r->n_plugins];
    memset(pr, 0, sizeof *pr);
    pr->path = fl_strdup(real);
    pr->handle = h;
    pr->name = fl_strdup(ent->name);
    pr->version = fl_strdup(ent->version ? ent->version : "?");
    /* what a run directory records, to notice a rebuilt plugin later */
    if (fl_sha256_file(real, pr->sha256) != FL_OK) pr->sha256[0] = 0;

    staging sg = { .r = r, .plugin = r->n_plugins, .st = FL_OK };
    fl_registrar reg = { .add = reg_add, .host_data = &sg };
    r->n_plugins++; /* visible to reg_add for messages; rolled back on refusal */
    fl_err_clear();
    fl_host_clear_error();
    fl_status st = ent->init(fl_host_table(), &reg);
    if (st == FL_OK && sg.st != FL_OK) st = sg.st;
    if (st == FL_OK && r->n_comps + sg.n > r->cap_comps) {
        size_t cap = r->cap_comps ? r->cap_comps : 32;
        while (cap < r->n_comps + sg.n) cap *= 2;
        fl_comp_rec *nc = realloc(r->comps, cap * sizeof *nc);
        if (!nc) st = FL_ERR_NOMEM;
        else {
            r->comps = nc;
            r->cap_comps = cap;
        }
    }
    if (st != FL_OK) {
        char reason[1024];
        snprintf(reason, sizeof reason, "%s",
                 sg.st != FL_OK ? sg.msg : fl_host_last_error()[0] ? fl_host_last_error()
                                                                     : fl_status_str(st));
        r->n_plugins--;
        free(pr->path);
        free(pr->name);
        free(pr->version);
        free(sg.recs);
        return refuse(r, h, path, "%s", reason);
    }
    memcpy(r->comps + r->n_comps, sg.recs, sg.n * sizeof *sg.recs);
    r->n_comps += sg.n;
    free(sg.recs);
    return FL_OK;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One plugin file or folder to load, in order: folders are expanded
 * into their *.so files (two levels deep, sorted) before the probe. */
typedef struct load_item {
    char *path;
    int from_dir;  /* found by a folder scan (counted in its return) */
} load_item;

typedef struct load_plan {
    load_item *it;
    size_t n, cap;
} load_plan;

static void plan_add(load_plan *lp, const char *path, int from_dir)
{
    if (lp->n == lp->cap) {
        size_t cap = lp->cap ? 2 * lp->cap : 32;
        load_item *ni = realloc(lp->it, cap * sizeof *ni);
        if (!ni) return;
        lp->it = ni;
        lp->cap = cap;
    }
    lp->it[lp->n].path = fl_strdup(path);
    lp->it[lp->n].from_dir = from_dir;
    if (lp->it[lp->n].path) lp->n++;
}

static void plan_dir(load_plan *lp, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d) return;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (!nn) break;
        names = nn;
        names[n] = fl_strfmt("%s/%s", dir, de->d_name);
        if (names[n]) n++;
    }
    closedir(d);
    /* Sorted, so which plugin wins a name clash does not depend on the
     * file system's order. (An empty folder leaves names NULL, which
     * qsort may not be given, even with n = 0.) */
    if (n > 1) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        if (stat(names[i], &sb) == 0) {
            if (S_ISDIR(sb.st_mode) && depth > 0) plan_dir(lp, names[i], depth - 1);
            else if (S_ISREG(sb.st_mode) && has_suffix(names[i], ".so")) plan_add(lp, names[i], 1);
        }
        free(names[i]);
    }
    free(names);
}

/* Probes every file of the plan in one child, then loads them in order,
 * logging each refusal as a warning. Returns the number refused among
 * those found by folder scans. */
static size_t load_plan_run(fl_registry *r, load_plan *lp)
{
    probe_list pl = { 0 };
    int ok = 1;
    for (size_t i = 0; ok && i < lp->n; i++) {
        int loaded = 0;
        char real[PATH_MAX];
        if (realpath(lp->it[i].path, real))
            for (size_t j = 0; j < r->n_plugins && !loaded; j++)
                loaded = strcmp(r->plugins[j].path, real) == 0;
        if (!loaded) ok = probe_list_add(&pl, lp->it[i].path);
    }
    if (ok && !in_probe) probe_all(&pl);
    size_t refused = 0;
    for (size_t i = 0; i < lp->n; i++) {
        if (load_probed(r, lp->it[i].path, probe_verdict(&pl, lp->it[i].path)) != FL_OK) {
            fl_log(FL_LOG_WARN, "%s", fl_err_msg());
            refused += lp->it[i].from_dir;
        }
        free(lp->it[i].path);
    }
    free(lp->it);
    probe_list_free(&pl);
    return refused;
}

size_t fl_registry_load_dir(fl_registry *r, const char *dir)
{
    load_plan lp = { 0 };
    plan_dir(&lp, dir, 2);
    return load_plan_run(r, &lp);
}

/* The default plugin folder for the program or library at `image` (NULL:
 * this process's executable). */
static int default_dir_for(const char *image, char *buf, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t len = image ? (ssize_t)snprintf(exe, sizeof exe, "%s", image)
                        : readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0 || (size_t)len >= sizeof exe)
        return snprintf(buf, cap, "%s", FL_INSTALL_PLUGIN_DIR) < (int)cap;
    exe[len] = 0;
    size_t rl = strlen(FL_BUILD_ROOT);
    if (rl && strncmp(exe, FL_BUILD_ROOT, rl) == 0 && exe[rl] == '/')
        return snprintf(buf, cap, "%s", FL_BUILD_PLUGIN_DIR) < (int)cap;
    /* Installed: the folder beside the binary wins over the configured
     * prefix, which a DESTDIR install or a moved tree no longer matches. */
    char *slash = strrchr(exe, '/');
    struct stat sb;
    if (FL_REL_PLUGIN_DIR[0] && slash) {
        *slash = 0;
        if (snprintf(buf, cap, "%s/%s", exe, FL_REL_PLUGIN_DIR) < (int)cap &&
            stat(buf, &sb) == 0 && S_ISDIR(sb.st_mode))
            return 1;
    }
    return snprintf(buf, cap, "%s", FL_INSTALL_PLUGIN_DIR) < (int)cap;
}

int fl_registry_default_dir(char *buf, size_t cap) { return default_dir_for(NULL, buf, cap); }

void fl_registry_load_defaults(fl_registry *r) { fl_registry_load_defaults_for(r, NULL); }

void fl_registry_load_defaults_for(fl_registry *r, const char *image)
{
    char dir[PATH_MAX];
    if (!default_dir_for(image, dir, sizeof dir)) dir[0] = 0;
    load_plan lp = { 0 };
    if (dir[0]) plan_dir(&lp, dir, 2);

    const char *env = getenv("FLOWLAB_PLUGIN_PATH");
    if (env && *env) {
        char *copy = fl_strdup(env);
        for (char *save = NULL, *tok = copy ? strtok_r(copy, ":", &save) : NULL; tok;
             tok = strtok_r(NULL, ":", &save)) {
            struct stat sb;
            if (stat(tok, &sb) == 0 && S_ISREG(sb.st_mode)) plan_add(&lp, tok, 0);
            else plan_dir(&lp, tok, 2);
        }
        free(copy);
    }
    load_plan_run(r, &lp);
}

const fl_comp_rec *fl_registry_find(const fl_registry *r, fl_kind kind, const char *name)
{
    for (size_t i = 0; i < r->n_comps; i++)
        if (r->comps[i].kind == kind && strcmp(r->comps[i].cls.base.name, name) == 0)
            return &r->comps[i];
    return NULL;
}

const char *fl_registry_suggest(const fl_registry *r, fl_kind kind, const char *name)
{
    const char **names = calloc(r->n_comps + 1, sizeof *names);
    if (!names) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < r->n_comps; i++)
        if (r->comps[i].kind == kind) names[n++] = r->comps[i].cls.base.name;
    const char *best = fl_closest(name, names, n);
    free(names);
    return best;
}
