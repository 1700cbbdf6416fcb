/* pngdir.c - a folder of PNG images of one size: the user's own images.
 *
 * Every file whose name ends in .png (any case) is an image; other files
 * and folders are ignored (their number is logged). Files are taken in
 * byte order of their names. All images must have the width and height of
 * the first; a file that is not a PNG, or of another size, is an error
 * naming it. Images are read with libpng's simplified API as 8-bit grey or
 * RGB (`channels`: auto = RGB when the first image has colour, else grey;
 * palettes are expanded, 16-bit samples reduced to 8, alpha composited on
 * black), stored as bytes in NHWC order (pixel (y, x) of channel c at
 * (y*w + x)*c_count + c) and read as levels k/255.
 *
 * The splits, by one documented rule:
 *   dir/train/ exists: the training images are dir/train/ *.png, the test
 *       images dir/test/ *.png and the validation images dir/valid/ *.png
 *       (each folder optional but train/);
 *   else: the images of dir itself are shuffled once with the fixed key
 *       fl_rng_key_make(0, "png-folder.split") (the same for every
 *       experiment seed), and the first floor(n * test_fraction) of that
 *       order form the test split, the next floor(n * valid_fraction) the
 *       validation split, the rest the training split; each split keeps
 *       the name order. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <png.h>

#include <flowlab/flowlab.h>

enum { CH_AUTO = 0, CH_GREY = 1, CH_RGB = 2 }; /* order of the enum choices */

typedef struct pngdir {
    uint8_t *px[3];      /* split s: n[s] x dim bytes */
    uint64_t n[3];
    uint32_t dim;
    fl_real lut[256];
} pngdir;

static const fl_key pngdir_keys[] = {
    { "dir", FL_KEY_STRING, NULL, 0, 0, NULL,
      "folder of .png images of one size, or with subfolders train/ (and test/, valid/); "
      "relative to the experiment file's folder" },
    { "channels", FL_KEY_ENUM, "auto", 0, 0, "auto|1|3",
      "1 = grey, 3 = RGB (converted as needed); auto = RGB when the first image has colour" },
    { "valid_fraction", FL_KEY_REAL, "0.1", 0, 0.9, NULL,
      "without a train/ subfolder: share of the images in the validation split" },
    { "test_fraction", FL_KEY_REAL, "0.1", 0, 0.9, NULL,
      "without a train/ subfolder: share of the images in the test split" },
};

/* A sorted list of file names. */
typedef struct names {
    char **v;
    size_t n;
    size_t ignored;      /* entries that are not .png files */
} names;

static void names_free(names *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return p;
}

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The .png files of `dir` (full paths), sorted. */
static fl_status list_pngs(const fl_host *h, fl_ctx *cx, const char *dir, names *out)
{
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) {
        h->error(cx, "cannot open the folder %s: %s%s", dir, strerror(errno),
                 errno == ENOENT ? " (check [data] dir; it is relative to the experiment file's folder)"
                                 : "");
        return FL_ERR_IO;
    }
    fl_status st = FL_OK;
    size_t cap = 0;
    struct dirent *de;
    while (st == FL_OK && (de = readdir(d))) {
        const char *nm = de->d_name;
        if (nm[0] == '.') continue;
        size_t len = strlen(nm);
        char *path = join(dir, nm);
        if (!path) {
            st = FL_ERR_NOMEM;
            break;
        }
        if (len < 5 || strcasecmp(nm + len - 4, ".png") != 0 || is_dir(path)) {
            out->ignored++;
            free(path);
            continue;
        }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 64;
            char **v = realloc(out->v, cap * sizeof *v);
            if (!v) {
                free(path);
                st = FL_ERR_NOMEM;
                break;
            }
            out->v = v;
        }
        out->v[out->n++] = path;
    }
    closedir(d);
    if (st != FL_OK) {
        names_free(out);
        return st;
    }
    if (out->n) qsort(out->v, out->n, sizeof *out->v, cmp_str);
    return FL_OK;
}

/* What the first image fixed: the size and the channels. */
typedef struct shape {
    uint32_t w, h, c;    /* c = 0: not known yet (auto) */
    const char *first;   /* the file that fixed them (borrowed) */
} shape;

/* Reads one PNG into dst (h*w*c bytes) once its size matches *sh; the
 * first image read fixes *sh. */
static fl_status read_png(const fl_host *h, fl_ctx *cx, const char *path, shape *sh,
                          uint8_t **dst_alloc, uint64_t index, uint64_t count)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        h->error(cx, "cannot open %s: %s", path, strerror(errno));
        return FL_ERR_IO;
    }
    unsigned char sig[8];
    size_t got = fread(sig, 1, sizeof sig, f);
    if (got < sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
        fclose(f);
        h->error(cx, "%s: not a PNG file (%s)", path,
                 got < sizeof sig ? "shorter than the 8-byte PNG signature"
                                  : "its first 8 bytes are not the PNG signature");
        return FL_ERR_FORMAT;
    }
    rewind(f);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_stdio(&im, f)) {
        h->error(cx, "%s: not a readable PNG (libpng: %s)", path, im.message);
        fclose(f);
        return FL_ERR_FORMAT;
    }
    if (!sh->w) {
        sh->w = im.width;
        sh->h = im.height;
        sh->first = path;
        if (!sh->c) sh->c = (im.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
        uint64_t dim = (uint64_t)sh->w * sh->h * sh->c;
        if (dim > (1u << 26)) {
            h->error(cx, "%s: %ux%u pixels, more than this data set takes (2^26 values a row)",
                     path, sh->w, sh->h);
            png_image_free(&im);
            fclose(f);
            return FL_ERR_FORMAT;
        }
    } else if (im.width != sh->w || im.height != sh->h) {
        h->error(cx, "%s: %ux%u pixels (width x height), expected %ux%u like %s: every image "
                 "of the folder must have one size",
                 path, im.width, im.height, sh->w, sh->h, sh->first);
        png_image_free(&im);
        fclose(f);
        return FL_ERR_FORMAT;
    }
    size_t dim = (size_t)sh->w * sh->h * sh->c;
    if (!*dst_alloc) {
        *dst_alloc = malloc((size_t)count * dim);
        if (!*dst_alloc) {
            png_image_free(&im);
            fclose(f);
            return FL_ERR_NOMEM;
        }
    }
    im.format = sh->c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    png_color black = { 0, 0, 0 };
    int ok = png_image_finish_read(&im, &black, *dst_alloc + index * dim, 0, NULL);
    fclose(f);
    if (!ok) {
        h->error(cx, "%s: cannot decode the PNG (libpng: %s)", path, im.message);
        png_image_free(&im);
        return FL_ERR_FORMAT;
    }
    return FL_OK;
}

/* Reads the files list->v[idx[i]] (i < n) into *px. */
static fl_status read_split(const fl_host *h, fl_ctx *cx, const names *list, const size_t *idx,
                            uint64_t n, shape *sh, uint8_t **px)
{
    fl_status st = FL_OK;
    for (uint64_t i = 0; i < n && st == FL_OK; i++)
        st = read_png(h, cx, list->v[idx ? idx[i] : i], sh, px, i, n);
    return st;
}

static void destroy(void *self)
{
    pngdir *d = self;
    if (!d) return;
    for (int s = 0; s < 3; s++) free(d->px[s]);
    free(d);
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* The subfolder rule: dir/train, dir/valid, dir/test. */
static fl_status load_subfolders(const fl_host *h, fl_ctx *cx, const char *dir, shape *sh,
                                 pngdir *d, size_t *ignored)
{
    static const char *const folder[3] = { "train", "valid", "test" };
    fl_status st = FL_OK;
    for (int s = 0; s < 3 && st == FL_OK; s++) {
        names l = { 0 };
        char *p = join(dir, folder[s]);
        if (!p) return FL_ERR_NOMEM;
        if (s == 0 || is_dir(p)) st = list_pngs(h, cx, p, &l);
        if (st == FL_OK && s == 0 && !l.n) {
            h->error(cx, "%s: no .png files", p);
            st = FL_ERR_FORMAT;
        }
        free(p);
        *ignored += l.ignored;
        if (st == FL_OK) st = read_split(h, cx, &l, NULL, l.n, sh, &d->px[s]);
        d->n[s] = l.n;
        names_free(&l);
    }
    return st;
}

/* The seeded rule: one folder's images shuffled by a fixed key. */
static fl_status load_seeded(const fl_host *h, fl_ctx *cx, const char *dir, shape *sh,
                             pngdir *d, size_t *ignored)
{
    names all;
    fl_status st = list_pngs(h, cx, dir, &all);
    if (st != FL_OK) return st;
    *ignored += all.ignored;
    const uint64_t n = all.n;
    uint64_t cut[3];
    cut[FL_SPLIT_TEST] = (uint64_t)((double)n * h->cfg_real(cx, "test_fraction"));
    cut[FL_SPLIT_VALID] = (uint64_t)((double)n * h->cfg_real(cx, "valid_fraction"));
    size_t *order = NULL;
    if (!n) {
        h->error(cx, "%s: no .png files (nor a train/ subfolder)", dir);
        st = FL_ERR_FORMAT;
    } else if (cut[FL_SPLIT_TEST] + cut[FL_SPLIT_VALID] >= n) {
        h->error(cx, "%s: valid_fraction and test_fraction leave no training image of %llu",
                 dir, (unsigned long long)n);
        st = FL_ERR_INVALID;
    } else if (!(order = malloc(n * sizeof *order))) {
        st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) {
        /* Fisher-Yates from the fixed key */
        for (uint64_t i = 0; i < n; i++) order[i] = i;
        fl_rng_key key = fl_rng_key_make(0, "png-folder.split");
        for (uint64_t i = n - 1; i > 0; i--) {
            fl_real u;
            fl_rng_uniform(key, 0, i, 1, &u);
            uint64_t j = (uint64_t)(u * (fl_real)(i + 1));
            if (j > i) j = i;
            size_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        cut[FL_SPLIT_TRAIN] = n - cut[FL_SPLIT_TEST] - cut[FL_SPLIT_VALID];
        /* test first, then valid, then train; each in name order */
        static const int seq[3] = { FL_SPLIT_TEST, FL_SPLIT_VALID, FL_SPLIT_TRAIN };
        size_t at = 0;
        for (int k = 0; k < 3 && st == FL_OK; k++) {
            int s = seq[k];
            if (cut[s]) qsort(order + at, cut[s], sizeof *order, cmp_size);
            st = read_split(h, cx, &all, order + at, cut[s], sh, &d->px[s]);
            d->n[s] = cut[s];
            at += cut[s];
        }
    }
    free(order);
    names_free(&all);
    return st;
}

static fl_status create(const fl_host *h, fl_ctx *cx, fl_dataset_info *info, void **self)
{
    pngdir *d = calloc(1, sizeof *d);
    if (!d) return FL_ERR_NOMEM;
    const char *dir = h->cfg_str(cx, "dir");
    int ch = (int)h->cfg_int(cx, "channels");
    shape sh = { 0, 0, ch == CH_GREY ? 1u : ch == CH_RGB ? 3u : 0u, NULL };
    double t0 = seconds();
    size_t ignored = 0;
    char *sub = join(dir, "train");
    fl_status st = sub ? FL_OK : FL_ERR_NOMEM;
    const int subfolders = sub && is_dir(sub);
    free(sub);
    if (st == FL_OK)
        st = subfolders ? load_subfolders(h, cx, dir, &sh, d, &ignored)
                        : load_seeded(h, cx, dir, &sh, d, &ignored);
    if (st != FL_OK) {
        destroy(d);
        return st;
    }
    d->dim = sh.w * sh.h * sh.c;
    for (int v = 0; v < 256; v++) d->lut[v] = (fl_real)((double)v / 255.0);
    char note[96] = "";
    if (ignored)
        snprintf(note, sizeof note, "; ignored %zu entries that are not .png files", ignored);
    h->log(cx, FL_LOG_INFO, "read %llu/%llu/%llu train/valid/test images of %ux%ux%u (%s) in %.2f s%s",
           (unsigned long long)d->n[0], (unsigned long long)d->n[1], (unsigned long long)d->n[2],
           sh.c, sh.h, sh.w, subfolders ? "train/ valid/ test/ subfolders" : "seeded split",
           seconds() - t0, note);
    info->dim = d->dim;
    info->drawn = 0;
    for (int s = 0; s < 3; s++) info->n[s] = d->n[s];
    info->image_h = sh.h;
    info->image_w = sh.w;
    info->flags = 0;
    if (FL_ABI_AT_LEAST(h, 1, 4)) info->image_c = sh.c;
    *self = d;
    return FL_OK;
}

static fl_status read_rows(void *self, fl_split split, const uint64_t *rows, uint32_t n,
                           fl_real *out)
{
    const pngdir *d = self;
    if ((unsigned)split > FL_SPLIT_TEST || (n && !d->n[split])) return FL_ERR_INVALID;
    for (uint32_t i = 0; i < n; i++) {
        if (rows[i] >= d->n[split]) return FL_ERR_INVALID;
        const uint8_t *src = d->px[split] + rows[i] * d->dim;
        fl_real *dst = out + (size_t)i * d->dim;
        for (uint32_t j = 0; j < d->dim; j++) dst[j] = d->lut[src[j]];
    }
    return FL_OK;
}

static const fl_dataset_class pngdir_class = {
    .base = { sizeof(fl_dataset_class), "png-folder",
              "a folder of PNG images of one size (grey or RGB, NHWC), levels k/255; "
              "train/ valid/ test/ subfolders or a seeded split",
              pngdir_keys, sizeof pngdir_keys / sizeof pngdir_keys[0] },
    .create = create,
    .destroy = destroy,
    .read = read_rows,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_DATASET, &pngdir_class.base);
}

FL_PLUGIN("datasets-png-folder", "1.0.0", init)
