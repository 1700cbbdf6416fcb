/* datapath.c - the data catalogue, the folders searched for data sets and
 * the resolution of [data] path keys (datapath.h). */
#include "model/datapath.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"

#define LAROCHELLE "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
#define ZALANDO "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

/* Checksums: SHA-256 of the uncompressed files flowlab was tested with
 * (binarized MNIST as distributed by Larochelle; Fashion-MNIST as Debian's
 * dataset-fashion-mnist ships Zalando's files, which only recompresses
 * them: hashing the uncompressed bytes makes both agree). */
static const fl_data_file bmnist_files[] = {
    { "binarized_mnist_train.amat",
      "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d", 78400000,
      LAROCHELLE "binarized_mnist_train.amat" },
    { "binarized_mnist_valid.amat",
      "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2", 15680000,
      LAROCHELLE "binarized_mnist_valid.amat" },
    { "binarized_mnist_test.amat",
      "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c", 15680000,
      LAROCHELLE "binarized_mnist_test.amat" },
};

static const fl_data_file fashion_files[] = {
    { "train-images-idx3-ubyte",
      "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016,
      ZALANDO "train-images-idx3-ubyte.gz" },
    { "t10k-images-idx3-ubyte",
      "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016,
      ZALANDO "t10k-images-idx3-ubyte.gz" },
};

/* Only in an archive: `flowlab data` says where, `get` cannot unpack it. */
#define CIFAR "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
static const fl_data_file cifar_files[] = {
    { "data_batch_1.bin", NULL, 30730000, CIFAR }, { "data_batch_2.bin", NULL, 30730000, CIFAR },
    { "data_batch_3.bin", NULL, 30730000, CIFAR }, { "data_batch_4.bin", NULL, 30730000, CIFAR },
    { "data_batch_5.bin", NULL, 30730000, CIFAR }, { "test_batch.bin", NULL, 30730000, CIFAR },
};

#define N(a) (sizeof a / sizeof a[0])
static const fl_data_set catalogue[] = {
    { "binarized-mnist", "binarized_mnist", NULL, NULL,
      "Larochelle & Murray's fixed binarization of MNIST (50k/10k/10k)", bmnist_files,
      N(bmnist_files), 1 },
    { "fashion-mnist", "fashion-mnist", "/usr/share/datasets/fashion-mnist",
      "dataset-fashion-mnist", "Zalando's Fashion-MNIST (github.com/zalandoresearch/fashion-mnist)",
      fashion_files, N(fashion_files), 1 },
    { "cifar10", "cifar-10-batches-bin", NULL, NULL,
      "CIFAR-10's binary version: unpack " CIFAR " (upstream md5 "
      "c32a1d4ab5d03f1284b67883e8d87530) and use its cifar-10-batches-bin folder",
      cifar_files, N(cifar_files), 0 },
};

const fl_data_set *fl_data_catalogue(size_t *n)
{
    *n = N(catalogue);
    return catalogue;
}

const fl_data_set *fl_data_find(const char *type)
{
    for (size_t i = 0; i < N(catalogue); i++)
        if (strcmp(catalogue[i].type, type) == 0) return &catalogue[i];
    return NULL;
}

/* $XDG_DATA_HOME, else ~/.local/share (malloc'd), or NULL without HOME. */
static char *user_data_home(void)
{
    const char *x = getenv("XDG_DATA_HOME");
    if (x && x[0] == '/') return fl_strdup(x);
    const char *home = getenv("HOME");
    return home && *home ? fl_strfmt("%s/.local/share", home) : NULL;
}

char *fl_data_user_dir(const fl_data_set *d)
{
    const char *env = getenv("FLOWLAB_DATA");
    if (env && *env) {
        size_t len = strcspn(env, ":");
        return fl_strfmt("%.*s/%s", (int)len, env, d->folder);
    }
    char *home = user_data_home();
    char *dir = home ? fl_strfmt("%s/flowlab/%s", home, d->folder) : NULL;
    free(home);
    return dir;
}

/* `path` made absolute against the working directory (malloc'd). */
static char *absolute(const char *path)
{
    if (path[0] == '/') return fl_strdup(path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return fl_strdup(path);
    while (path[0] == '.' && path[1] == '/') path += 2;
    if (strcmp(path, ".") == 0 || !path[0]) return fl_strdup(cwd);
    return fl_strfmt("%s/%s", cwd, path);
}

size_t fl_data_search(const fl_data_set *d, const char *fallback, char **dirs, size_t cap)
{
    size_t n = 0;
#define ADD(expr)                                                                                  \
    do {                                                                                           \
        if (n < cap) {                                                                             \
            char *s_ = (expr);                                                                     \
            if (!s_) goto oom;                                                                     \
            dirs[n++] = s_;                                                                        \
        }                                                                                          \
    } while (0)
    const char *env = getenv("FLOWLAB_DATA");
    for (const char *p = env; p && *p;) {
        size_t len = strcspn(p, ":");
        if (len) ADD(fl_strfmt("%.*s/%s", (int)len, p, d->folder));
        p += len + (p[len] == ':');
    }
    char *home = user_data_home();
    if (home) {
        char *s = fl_strfmt("%s/flowlab/%s", home, d->folder);
        free(home);
        ADD(s);
    }
    if (d->system) ADD(fl_strdup(d->system));
    if (fallback && *fallback) {
        char *abs = absolute(fallback);
        if (!abs) goto oom;
        int dup = 0;
        for (size_t i = 0; i < n; i++) dup |= strcmp(dirs[i], abs) == 0;
        if (dup) free(abs);
        else ADD(abs);
    }
#undef ADD
    return n;
oom:
    for (size_t i = 0; i < n; i++) free(dirs[i]);
    return 0;
}

char *fl_data_present(const char *dir, const fl_data_file *f)
{
    char *p = fl_strfmt("%s/%s", dir, f->name);
    if (p && access(p, R_OK) == 0) return p;
    free(p);
    p = fl_strfmt("%s/%s.gz", dir, f->name);
    if (p && access(p, R_OK) == 0) return p;
    free(p);
    return NULL;
}

int fl_data_complete(const fl_data_set *d, const char *dir)
{
    for (size_t i = 0; i < d->n_files; i++) {
        char *p = fl_data_present(dir, &d->files[i]);
        if (!p) return 0;
        free(p);
    }
    return 1;
}

/* 1 when `key` of data set `type` names a file or folder. */
static int path_key(const char *type, const char *key)
{
    static const struct {
        const char *type, *keys;
    } builtin[] = {
        { "binarized-mnist", " dir " },
        { "fashion-mnist", " dir " },
        { "cifar10", " dir " },
        { "png-folder", " dir " },
        { "csv", " path valid_path test_path " },
        { "amat", " train valid test " },
        { "idx", " train_images test_images " },
    };
    for (size_t i = 0; i < N(builtin); i++)
        if (strcmp(builtin[i].type, type) == 0) {
            char pat[80];
            snprintf(pat, sizeof pat, " %s ", key);
            return strstr(builtin[i].keys, pat) != NULL;
        }
    static const char *const names[] = { "dir", "path", "file" };
    static const char *const suffixes[] = { "_dir", "_path", "_file" };
    size_t len = strlen(key);
    for (size_t i = 0; i < N(names); i++) {
        size_t sl = strlen(suffixes[i]);
        if (strcmp(key, names[i]) == 0 ||
            (len > sl && strcmp(key + len - sl, suffixes[i]) == 0))
            return 1;
    }
    return 0;
}

/* The folder relative values of file `path` resolve against (malloc'd). */
static char *experiment_dir(const char *path)
{
    const char *env = getenv("FLOWLAB_EXPERIMENT_DIR");
    if (env && *env) return absolute(env);
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (!slash) return absolute(".");
    char *dir = slash == path ? fl_strdup("/") : fl_strndup(path, (size_t)(slash - path));
    char *abs = dir ? absolute(dir) : NULL;
    free(dir);
    return abs;
}

/* Replaces value x's text by `s` (taken); checks it fits a config.ini line. */
static fl_status put(const fl_values *v, fl_value *x, char *s)
{
    if (!s) return FL_ERR_NOMEM;
    if (strlen(x->key->name) + 3 + strlen(s) > fl_config_max_line()) {
        fl_err("[%s] %s resolves to %s, longer than the %zu bytes a config.ini line can hold: "
               "move the data or give a shorter path", v->section, x->key->name, s,
               fl_config_max_line());
        free(s);
        return FL_ERR_INVALID;
    }
    free(x->text);
    x->text = s;
    return FL_OK;
}

fl_status fl_data_resolve(const fl_config *c, fl_values *v, const char *type)
{
    const fl_cfg_section *sec = fl_config_section(c, v->section);
    const fl_data_set *d = fl_data_find(type);
    for (size_t i = 0; i < v->n; i++) {
        fl_value *x = &v->v[i];
        if (x->key->type != FL_KEY_STRING || !path_key(type, x->key->name)) continue;
        const fl_cfg_entry *ent = sec ? fl_config_entry(sec, x->key->name) : NULL;
        if (ent) {
            if (!x->text[0] || x->text[0] == '/') continue;
            /* written in the file: its folder; a --set: the working directory */
            char *base = ent->line > 0 ? experiment_dir(c->path) : absolute(".");
            const char *rel = x->text;
            while (rel[0] == '.' && rel[1] == '/') rel += 2;
            char *s = base ? fl_strfmt("%s/%s", base, rel) : NULL;
            free(base);
            fl_status st = put(v, x, s);
            if (st != FL_OK) return st;
            continue;
        }
        if (!d || strcmp(x->key->name, "dir") != 0) continue;
        /* a catalogued set at its default folder: wherever it lives */
        char *dirs[16];
        size_t n = fl_data_search(d, x->key->def, dirs, 16);
        if (!n) return FL_ERR_NOMEM;
        size_t hit = n;
        for (size_t k = 0; k < n && hit == n; k++)
            if (fl_data_complete(d, dirs[k])) hit = k;
        fl_status st = FL_OK;
        if (hit < n) {
            st = put(v, x, dirs[hit]);
            dirs[hit] = NULL;
        } else {
            fl_buf b = { 0 };
            for (size_t k = 0; k < n; k++) fl_buf_printf(&b, "%s%s", k ? ", " : "", dirs[k]);
            fl_err("[%s] %s: its files (%s%s) are in none of the folders searched: %s "
                   "(FLOWLAB_DATA, the user's data folder%s, then [data] dir's default); "
                   "`flowlab data` lists the files and where to get them%s%s%s",
                   v->section, type, d->files[0].name, d->n_files > 1 ? ", ..." : "",
                   b.data ? b.data : "", d->system ? ", the system's" : "",
                   d->package ? ", or install Debian's " : "", d->package ? d->package : "",
                   d->package ? " package" : "");
            fl_buf_free(&b);
            st = FL_ERR_IO;
        }
        for (size_t k = 0; k < n; k++) free(dirs[k]);
        if (st != FL_OK) return st;
    }
    return FL_OK;
}
