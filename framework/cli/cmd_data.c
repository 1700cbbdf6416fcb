/* cmd_data.c - `flowlab data`: where each data set's files are, what is
 * missing and where to get it; `flowlab data get NAME` downloads and
 * verifies a catalogued set (model/datapath.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#ifdef FL_HAVE_CURL
#include <curl/curl.h>
#endif

#include "cli/cli.h"
#include "core/log.h"
#include "core/sha256.h"
#include "core/util.h"
#include "model/datapath.h"

static const char usage[] =
    "usage: flowlab data [NAME] [--plugin PATH]...\n"
    "       flowlab data get NAME [--to DIR]\n"
    "\n"
    "Lists every data set: those drawn afresh (no files), those that read the\n"
    "files their [data] keys name, and those whose files flowlab knows, with\n"
    "the folder they were found in. A data set of the last kind is looked for,\n"
    "when [data] dir is not given, in each folder of FLOWLAB_DATA\n"
    "(colon-separated) /NAME, then $XDG_DATA_HOME/flowlab/NAME\n"
    "(~/.local/share/flowlab/NAME), then the system's folder (Debian's dataset\n"
    "packages: /usr/share/datasets/...), then [data] dir's default; when it is\n"
    "missing, the list gives each file it needs with its size, SHA-256 (of the\n"
    "uncompressed file; NAME.gz is read too) and official address. NAME: only\n"
    "that data set.\n"
    "\n"
    "get NAME downloads the files into DIR (default: the first FLOWLAB_DATA\n"
    "folder /NAME, else ~/.local/share/flowlab/NAME), verifies each against its\n"
    "SHA-256 and keeps it only then. FLOWLAB_DATA_MIRROR=URL fetches the same\n"
    "file names from URL instead of the official addresses.\n"
    "\n"
    "Relative paths in an experiment file's [data] section resolve against that\n"
    "file's folder, those of --set against the working directory.\n";

/* The default of string key `key` of class c, or NULL. */
static const char *key_default(const fl_comp_rec *c, const char *key)
{
    for (uint32_t i = 0; i < c->cls.base.n_keys; i++)
        if (strcmp(c->cls.base.keys[i].name, key) == 0) return c->cls.base.keys[i].def;
    return NULL;
}

/* Prints one data set; returns 1 when it is catalogued and missing. */
static int show(const fl_comp_rec *c, int detail)
{
    const char *name = c->cls.base.name;
    const fl_data_set *d = fl_data_find(name);
    if (!d) {
        const fl_dataset_class *k = &c->cls.dataset;
        if (k->draw) printf("%-18s drawn afresh, no files\n", name);
        else printf("%-18s reads the files its [data] keys name (`flowlab plugins %s`)\n", name,
                    name);
        return 0;
    }
    char *dirs[16];
    size_t n = fl_data_search(d, key_default(c, "dir"), dirs, 16);
    size_t hit = n;
    for (size_t i = 0; i < n && hit == n; i++)
        if (fl_data_complete(d, dirs[i])) hit = i;
    if (hit < n)
        printf("%-18s found in %s%s%s%s\n", name, dirs[hit],
               d->system && strcmp(dirs[hit], d->system) == 0 && d->package ? " (Debian's " : "",
               d->system && strcmp(dirs[hit], d->system) == 0 && d->package ? d->package : "",
               d->system && strcmp(dirs[hit], d->system) == 0 && d->package ? ")" : "");
    else printf("%-18s missing: %s\n", name, d->source);
    if (hit == n || detail) {
        printf("    searched:");
        for (size_t i = 0; i < n; i++) printf(" %s", dirs[i]);
        printf("\n");
        if (hit == n && d->package)
            printf("    or: apt-get install %s (into %s)\n", d->package, d->system);
        if (hit == n && d->gettable) printf("    or: flowlab data get %s\n", name);
        printf("    needs:\n");
        for (size_t i = 0; i < d->n_files; i++) {
            const fl_data_file *f = &d->files[i];
            char *at = hit < n ? fl_data_present(dirs[hit], f) : NULL;
            printf("      %-28s %11llu bytes  sha256 %s\n", f->name, f->bytes,
                   f->sha256 ? f->sha256 : "(not known)");
            if (at) printf("        present: %s\n", at);
            else printf("        from %s\n", f->url);
            free(at);
        }
    }
    for (size_t i = 0; i < n; i++) free(dirs[i]);
    return hit == n;
}

/* SHA-256 of the uncompressed bytes of `path` (gzip or plain: zlib reads
 * both). */
static fl_status hash_uncompressed(const char *path, char hex[65], unsigned long long *bytes)
{
    gzFile g = gzopen(path, "rb");
    if (!g) {
        fl_err("%s: %s", path, strerror(errno));
        return FL_ERR_IO;
    }
    fl_sha256 s;
    fl_sha256_init(&s);
    static unsigned char buf[1 << 16];
    int k;
    *bytes = 0;
    while ((k = gzread(g, buf, sizeof buf)) > 0) {
        fl_sha256_update(&s, buf, (size_t)k);
        *bytes += (unsigned long long)k;
    }
    int bad = k < 0;
    gzclose(g);
    if (bad) {
        fl_err("%s: not a readable (gzip or plain) file", path);
        return FL_ERR_FORMAT;
    }
    fl_sha256_hex(&s, hex);
    return FL_OK;
}

#ifdef FL_HAVE_CURL
/* Downloads url into file `to`. */
static fl_status download(const char *url, const char *to)
{
    FILE *f = fopen(to, "wb");
    if (!f) {
        fl_err("%s: %s", to, strerror(errno));
        return FL_ERR_IO;
    }
    CURL *h = curl_easy_init();
    fl_status st = h ? FL_OK : FL_ERR_NOMEM;
    char err[CURL_ERROR_SIZE] = "";
    if (h) {
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 1L);
        CURLcode rc = curl_easy_perform(h);
        if (rc != CURLE_OK) {
            fl_err("%s: %s", url, err[0] ? err : curl_easy_strerror(rc));
            st = FL_ERR_IO;
        }
        curl_easy_cleanup(h);
    }
    if (fclose(f) != 0 && st == FL_OK) {
        fl_err("%s: %s", to, strerror(errno));
        st = FL_ERR_IO;
    }
    return st;
}
#endif

static int get(const char *name, const char *to)
{
    const fl_data_set *d = fl_data_find(name);
    if (!d || !d->gettable) {
        size_t n;
        const fl_data_set *all = fl_data_catalogue(&n);
        fprintf(stderr, "flowlab data get: error: '%s' is not a data set flowlab can download "
                "(it can: ", name);
        for (size_t i = 0, k = 0; i < n; i++)
            if (all[i].gettable) fprintf(stderr, "%s%s", k++ ? ", " : "", all[i].type);
        fprintf(stderr, ")%s%s\n", d ? "; " : "", d ? d->source : "");
        return FL_EXIT_USAGE;
    }
#ifndef FL_HAVE_CURL
    (void)to;
    fl_err("this flowlab was built without libcurl (libcurl4-openssl-dev): fetch the files "
           "`flowlab data %s` lists by hand", name);
    return fl_cli_fail(FL_ERR_UNSUPPORTED);
#else
    char *dir = to ? fl_strdup(to) : fl_data_user_dir(d);
    if (!dir) {
        fl_err("no folder to put %s in: set FLOWLAB_DATA or HOME, or give --to DIR", name);
        return fl_cli_fail(FL_ERR_IO);
    }
    fl_status st = fl_mkdirs(dir);
    const char *mirror = getenv("FLOWLAB_DATA_MIRROR");
    if (st == FL_OK && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fl_err("cannot start libcurl");
        st = FL_ERR_IO;
    }
    for (size_t i = 0; st == FL_OK && i < d->n_files; i++) {
        const fl_data_file *f = &d->files[i];
        char *have = fl_data_present(dir, f);
        if (have) {
            fl_log(FL_LOG_INFO, "%s: already there", have);
            free(have);
            continue;
        }
        const char *base = strrchr(f->url, '/') + 1;
        char *url = mirror && *mirror ? fl_strfmt("%s%s%s", mirror,
                                                  mirror[strlen(mirror) - 1] == '/' ? "" : "/",
                                                  base)
                                      : fl_strdup(f->url);
        const int gz = strlen(base) > 3 && strcmp(base + strlen(base) - 3, ".gz") == 0;
        char *final = fl_strfmt("%s/%s%s", dir, f->name, gz ? ".gz" : "");
        char *part = fl_strfmt("%s/.%s%s.part", dir, f->name, gz ? ".gz" : "");
        if (!url || !final || !part) st = FL_ERR_NOMEM;
        if (st == FL_OK) {
            fl_log(FL_LOG_INFO, "%s -> %s", url, final);
            st = download(url, part);
        }
        char hex[65];
        unsigned long long bytes = 0;
        if (st == FL_OK) st = hash_uncompressed(part, hex, &bytes);
        if (st == FL_OK && f->sha256 && strcmp(hex, f->sha256) != 0) {
            fl_err("%s: sha256 %s (%llu bytes uncompressed) is not the expected %s (%llu bytes): "
                   "not kept", url, hex, bytes, f->sha256, f->bytes);
            st = FL_ERR_FORMAT;
        }
        if (st == FL_OK && rename(part, final) != 0) {
            fl_err("%s: %s", final, strerror(errno));
            st = FL_ERR_IO;
        }
        if (st != FL_OK && part) unlink(part);
        if (st == FL_OK) fl_log(FL_LOG_INFO, "%s: verified (sha256 %.16s...)", final, hex);
        free(url);
        free(final);
        free(part);
    }
    curl_global_cleanup();
    if (st == FL_OK) printf("%s: %s\n", name, dir);
    free(dir);
    return st == FL_OK ? FL_EXIT_OK : fl_cli_fail(st);
#endif
}

int fl_cmd_data(fl_cli *cli, int argc, char **argv)
{
    const char *name = NULL, *to = NULL;
    int getting = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc && getting) {
            to = argv[++i];
        } else if (strcmp(argv[i], "get") == 0 && !getting && !name) {
            getting = 1;
        } else if (argv[i][0] == '-' || name) {
            fprintf(stderr, "flowlab data: error: unexpected argument '%s'\n%s", argv[i], usage);
            return FL_EXIT_USAGE;
        } else {
            name = argv[i];
        }
    }
    if (getting) {
        if (!name) {
            fprintf(stderr, "flowlab data get: error: which data set?\n%s", usage);
            return FL_EXIT_USAGE;
        }
        return get(name, to);
    }
    fl_registry *reg;
    fl_status st = fl_cli_registry(cli, &reg);
    if (st != FL_OK) return fl_cli_fail(st);
    int shown = 0;
    for (size_t i = 0; i < reg->n_comps; i++) {
        const fl_comp_rec *c = &reg->comps[i];
        if (c->kind != FL_KIND_DATASET || (name && strcmp(name, c->cls.base.name) != 0)) continue;
        show(c, name != NULL);
        shown++;
    }
    if (name && !shown) {
        const char *near = fl_registry_suggest(reg, FL_KIND_DATASET, name);
        fl_err("no data set '%s'%s%s%s (`flowlab data` lists them)", name,
               near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
        st = FL_ERR_NOT_FOUND;
    }
    fl_registry_free(reg);
    return st == FL_OK ? FL_EXIT_OK : fl_cli_fail(st);
}
