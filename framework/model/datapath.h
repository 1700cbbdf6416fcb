/* datapath.h - where data sets' files are: the catalogue of the data sets
 * whose files flowlab knows (names, checksums, official addresses), the
 * folders it searches for them, and the resolution of the path keys of an
 * experiment's [data] section (docs/install.md, "Data").
 *
 * Path keys: a built-in data set's file and folder keys (csv's path, amat's
 * train, the image sets' dir, ...); for another data set, string keys named
 * dir, path or file or ending in _dir, _path or _file. A relative value
 * written in an experiment file resolves against that file's folder
 * (FLOWLAB_EXPERIMENT_DIR overrides it: `flowlab sweep` sets it for its
 * cells), one given by --set against the working directory. A catalogued
 * data set whose folder key is left at its default is searched for in
 * fl_data_search's folders. The resolved, absolute value is what the data
 * set and the run's config.ini see. */
#ifndef FL_DATAPATH_H
#define FL_DATAPATH_H

#include <stddef.h>

#include "core/config.h"

/* One file a catalogued data set needs. */
typedef struct fl_data_file {
    const char *name;        /* its name in the folder; name.gz counts too */
    const char *sha256;      /* of its uncompressed bytes; NULL when not known */
    unsigned long long bytes;/* uncompressed size; 0 when not known */
    const char *url;         /* official address (may end in .gz: compressed) */
} fl_data_file;

/* A data set whose files flowlab knows. */
typedef struct fl_data_set {
    const char *type;        /* its [data] type */
    const char *folder;      /* its folder's name under FLOWLAB_DATA and the user's data folder */
    const char *system;      /* the folder a Debian package installs it into, or NULL */
    const char *package;     /* that package, or NULL */
    const char *source;      /* one line: where it comes from, how to get it */
    const fl_data_file *files;
    size_t n_files;
    int gettable;            /* 1: `flowlab data get` can fetch every file */
} fl_data_set;

/* The catalogue (static), *n entries. Any time. */
const fl_data_set *fl_data_catalogue(size_t *n);
/* Its entry for [data] type `type`, or NULL. */
const fl_data_set *fl_data_find(const char *type);

/* The folders searched for data set `d`, in order, into dirs[0..cap) (each
 * malloc'd; the caller frees them): each entry of FLOWLAB_DATA
 * (colon-separated) / folder, the user's data folder ($XDG_DATA_HOME, else
 * ~/.local/share) / flowlab / folder, d->system, and `fallback` (the key's
 * default, made absolute against the working directory) when not NULL.
 * Returns how many; 0 when out of memory. */
size_t fl_data_search(const fl_data_set *d, const char *fallback, char **dirs, size_t cap);
/* The user's own data folder for d (where `flowlab data get` puts it):
 * FLOWLAB_DATA's first entry / folder, else the user's data folder /
 * flowlab / folder. malloc'd; NULL when out of memory or no HOME. */
char *fl_data_user_dir(const fl_data_set *d);
/* 1 when folder `dir` holds every file of d (as NAME or NAME.gz). */
int fl_data_complete(const fl_data_set *d, const char *dir);
/* The path of file f in dir as present (NAME or NAME.gz), malloc'd, or
 * NULL when neither exists. */
char *fl_data_present(const char *dir, const fl_data_file *f);

/* Resolves the path keys of `v`, the resolved [data] section of config c
 * whose data set is `type` (see above); `def_of` gives a key's default.
 * FL_ERR_IO when a catalogued data set left at its default folder is in
 * none of the folders searched (fl_err lists them and points to `flowlab
 * data`), FL_ERR_INVALID when a resolved path would be too long for
 * config.ini, FL_ERR_NOMEM. Call before the data set's create. */
fl_status fl_data_resolve(const fl_config *c, fl_values *v, const char *type);

#endif
