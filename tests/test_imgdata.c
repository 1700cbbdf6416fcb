/* test_imgdata.c - image data for flows (issue 15): the cifar10 and
 * png-folder data sets on files written here, and the density task on
 * images: dequantization, the logit and scale transforms, bits/dim against
 * closed forms, the dequantization noise's keys, samples at a temperature
 * and the samples grid. */
#include <math.h>
#include <png.h>
#include <sys/stat.h>

#include "common.h"
#include "core/log.h"
#include "output/imagegrid.h"
#include "tasks/task.h"
#include "tasks/task_density.h"

SUITE(imgdata);

/* ---- files ---------------------------------------------------------- */

static char *write_bytes(const char *dir, const char *name, const void *data, size_t n)
{
    char *path = fl_strfmt("%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
    return path;
}

/* Removes a folder with its subfolders (what the tests create). */
static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char *p = fl_strfmt("%s/%s", dir, de->d_name);
            struct stat sb;
            if (p && lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) rm_tree(p);
            else if (p) unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void rm_rf(char *dir)
{
    rm_tree(dir);
    free(dir);
}

static char *subdir(const char *dir, const char *name)
{
    char *p = fl_strfmt("%s/%s", dir, name);
    cr_assert_eq(mkdir(p, 0700), 0, "mkdir %s", p);
    return p;
}

/* Pixel value of channel c at position k (y*32 + x) of CIFAR image i. */
static uint8_t cpix(uint64_t i, int c, uint32_t k)
{
    return (uint8_t)((i * 31 + (uint64_t)c * 7 + k * 3) % 256);
}

/* A CIFAR-10 batch of images first .. first+n-1 (labels i % 10), plus
 * `extra` stray bytes. */
static char *write_cifar(const char *dir, const char *name, uint64_t first, uint32_t n,
                         size_t extra)
{
    size_t len = (size_t)n * 3073 + extra;
    uint8_t *b = calloc(len ? len : 1, 1);
    for (uint32_t r = 0; r < n; r++) {
        uint8_t *rec = b + (size_t)r * 3073;
        rec[0] = (uint8_t)((first + r) % 10);
        for (int c = 0; c < 3; c++)
            for (uint32_t k = 0; k < 1024; k++) rec[1 + c * 1024 + k] = cpix(first + r, c, k);
    }
    char *p = write_bytes(dir, name, b, len);
    free(b);
    return p;
}

/* Five training batches of 2 images (0..9) and a test batch of 3 (100..102). */
static char *cifar_dir(void)
{
    char *dir = make_tmpdir();
    for (int f = 0; f < 5; f++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
        free(write_cifar(dir, name, 2 * (uint64_t)f, 2, 0));
    }
    free(write_cifar(dir, "test_batch.bin", 100, 3, 0));
    return dir;
}

/* An 8-bit PNG (c = 1 grey, 3 RGB) of w x h from px (h*w*c bytes). */
static void write_png(const char *path, const uint8_t *px, uint32_t w, uint32_t h, uint32_t c)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = w;
    im.height = h;
    im.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    cr_assert(png_image_write_to_file(&im, path, 0, px, 0, NULL), "%s: %s", path, im.message);
}

/* Pixel value of channel c at position k of PNG image i. */
static uint8_t ppix(uint32_t i, uint32_t c, uint32_t k)
{
    return (uint8_t)((i * 20 + c * 50 + k * 9) % 256);
}

static void write_png_image(const char *dir, const char *name, uint32_t i, uint32_t w,
                            uint32_t h, uint32_t c)
{
    uint8_t px[256];
    cr_assert(w * h * c <= sizeof px);
    for (uint32_t k = 0; k < w * h; k++)
        for (uint32_t ch = 0; ch < c; ch++) px[k * c + ch] = ppix(i, ch, k);
    char *p = fl_strfmt("%s/%s", dir, name);
    write_png(p, px, w, h, c);
    free(p);
}

/* ---- experiments ---------------------------------------------------- */

/* An experiment on [data] `data` with a parameter-free flow (`reverse`:
 * a permutation, log-determinant 0, |u| = |x|). */
static fl_status build(const fl_registry *r, const char *data, const char *extra, uint64_t seed,
                       fl_experiment **e)
{
    char *text = fl_strfmt("[experiment]\nseed = %llu\n[data]\n%s\n[flow.1]\ntype = reverse\n"
                           "[train]\nsteps = 2\nbatch = 1\neval_every = 0\n[eval]\nbatch = 2\n%s",
                           (unsigned long long)seed, data, extra ? extra : "");
    *e = NULL;
    fl_status st = experiment_from_text(r, "imgdata-test.ini", text, NULL, e);
    free(text);
    return st;
}

static fl_experiment *build_ok(const fl_registry *r, const char *data, uint64_t seed)
{
    fl_experiment *e;
    fl_status st = build(r, data, NULL, seed, &e);
    cr_assert_eq(st, FL_OK, "%s: %s", fl_status_str(st), fl_err_msg());
    return e;
}

static void build_fails(const fl_registry *r, const char *data, fl_status st, const char *n1,
                        const char *n2)
{
    fl_experiment *e = NULL;
    fl_status got = build(r, data, NULL, 1, &e);
    if (e) fl_experiment_free(e);
    cr_assert_eq(got, st, "status %s, expected %s: %s", fl_status_str(got), fl_status_str(st),
                 fl_err_msg());
    assert_contains(fl_err_msg(), n1);
    if (n2) assert_contains(fl_err_msg(), n2);
}

static fl_real *read_row(fl_experiment *e, fl_split s, uint64_t row)
{
    fl_real *x = malloc(e->info.dim * sizeof *x);
    cr_assert_eq(e->dcls->read(e->dself, s, &row, 1, x), FL_OK);
    return x;
}

/* ---- cifar10 -------------------------------------------------------- */

Test(imgdata, cifar10_reads_the_batches_as_nhwc_levels)
{
    char *dir = cifar_dir();
    fl_registry *r = load_builtin_plugins();
    char *data = fl_strfmt("type = cifar10\ndir = %s\nvalid_size = 3", dir);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(e->info.dim, 3072);
    cr_assert_eq(e->info.image_c, 3);
    cr_assert_eq(e->info.image_h, 32);
    cr_assert_eq(e->info.image_w, 32);
    cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 7);
    cr_assert_eq(e->info.n[FL_SPLIT_VALID], 3);
    cr_assert_eq(e->info.n[FL_SPLIT_TEST], 3);
    /* train row 5 = image 5 (batch 3), valid row 0 = image 7, test row 2 = image 102 */
    struct { fl_split s; uint64_t row, img; } cases[] = {
        { FL_SPLIT_TRAIN, 0, 0 }, { FL_SPLIT_TRAIN, 5, 5 }, { FL_SPLIT_VALID, 0, 7 },
        { FL_SPLIT_VALID, 2, 9 }, { FL_SPLIT_TEST, 2, 102 },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        fl_real *x = read_row(e, cases[t].s, cases[t].row);
        for (uint32_t k = 0; k < 1024; k++)
            for (int c = 0; c < 3; c++)
                cr_assert_float_eq(x[k * 3 + c], cpix(cases[t].img, c, k) / 255.0, 1e-6,
                                   "case %zu pixel %u channel %d", t, k, c);
        free(x);
    }
    fl_experiment_free(e);
    free(data);
    fl_registry_free(r);
    rm_rf(dir);
}

Test(imgdata, cifar10_bad_files_are_named)
{
    fl_registry *r = load_builtin_plugins();
    /* a truncated batch */
    char *dir = cifar_dir();
    free(write_cifar(dir, "data_batch_3.bin", 4, 2, 100));
    char *data = fl_strfmt("type = cifar10\ndir = %s\nvalid_size = 1", dir);
    build_fails(r, data, FL_ERR_FORMAT, "data_batch_3.bin: truncated: 2 records of 3073 bytes "
                "and 100 bytes more", NULL);
    free(data);
    rm_rf(dir);
    /* a label byte above 9: another format */
    dir = cifar_dir();
    char *p = write_cifar(dir, "test_batch.bin", 0, 2, 0);
    FILE *f = fopen(p, "r+b");
    fseek(f, 3073, SEEK_SET);
    fputc(57, f);
    fclose(f);
    data = fl_strfmt("type = cifar10\ndir = %s\nvalid_size = 1", dir);
    build_fails(r, data, FL_ERR_FORMAT, "test_batch.bin: record 2 has label 57", "CIFAR-100");
    free(data);
    free(p);
    /* a missing batch, and no training image left */
    p = fl_strfmt("%s/data_batch_5.bin", dir);
    cr_assert_eq(remove(p), 0);
    data = fl_strfmt("type = cifar10\ndir = %s\nvalid_size = 1", dir);
    build_fails(r, data, FL_ERR_IO, "data_batch_5.bin.gz: no such file", "cifar-10-binary");
    free(data);
    free(p);
    rm_rf(dir);
    dir = cifar_dir();
    data = fl_strfmt("type = cifar10\ndir = %s\nvalid_size = 10", dir);
    build_fails(r, data, FL_ERR_INVALID, "valid_size = 10 leaves no training images", NULL);
    free(data);
    rm_rf(dir);
    fl_registry_free(r);
}

/* ---- png-folder ----------------------------------------------------- */

Test(imgdata, png_folder_subfolders_rgb_nhwc)
{
    char *dir = make_tmpdir();
    char *train = subdir(dir, "train"), *test = subdir(dir, "test");
    /* name order, not creation order */
    write_png_image(train, "b.png", 1, 5, 4, 3);
    write_png_image(train, "a.png", 0, 5, 4, 3);
    write_png_image(train, "c.PNG", 2, 5, 4, 3);
    free(write_bytes(train, "README.txt", "not an image", 12));
    write_png_image(test, "t0.png", 10, 5, 4, 3);
    write_png_image(test, "t1.png", 11, 5, 4, 3);
    fl_registry *r = load_builtin_plugins();
    char *data = fl_strfmt("type = png-folder\ndir = %s\ndequantize = none", dir);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(e->info.image_c, 3);
    cr_assert_eq(e->info.image_h, 4);
    cr_assert_eq(e->info.image_w, 5);
    cr_assert_eq(e->info.dim, 60);
    cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 3);
    cr_assert_eq(e->info.n[FL_SPLIT_VALID], 0);
    cr_assert_eq(e->info.n[FL_SPLIT_TEST], 2);
    struct { fl_split s; uint64_t row; uint32_t img; } cases[] = {
        { FL_SPLIT_TRAIN, 0, 0 }, { FL_SPLIT_TRAIN, 1, 1 }, { FL_SPLIT_TRAIN, 2, 2 },
        { FL_SPLIT_TEST, 1, 11 },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        fl_real *x = read_row(e, cases[t].s, cases[t].row);
        for (uint32_t k = 0; k < 20; k++)
            for (uint32_t c = 0; c < 3; c++)
                cr_assert_float_eq(x[k * 3 + c], ppix(cases[t].img, c, k) / 255.0, 1e-6,
                                   "case %zu pixel %u channel %u", t, k, c);
        free(x);
    }
    fl_experiment_free(e);
    /* channels = 1: RGB converted to grey, one value a pixel */
    free(data);
    data = fl_strfmt("type = png-folder\ndir = %s\nchannels = 1\ndequantize = none", dir);
    e = build_ok(r, data, 1);
    cr_assert_eq(e->info.image_c, 1);
    cr_assert_eq(e->info.dim, 20);
    fl_experiment_free(e);
    free(data);
    fl_registry_free(r);
    free(train);
    free(test);
    rm_rf(dir);
}

Test(imgdata, png_folder_seeded_split_is_the_same_for_every_seed)
{
    char *dir = make_tmpdir();
    for (uint32_t i = 0; i < 10; i++) {
        char name[32];
        snprintf(name, sizeof name, "img%02u.png", i);
        write_png_image(dir, name, i, 3, 2, 1);
    }
    fl_registry *r = load_builtin_plugins();
    char *data = fl_strfmt("type = png-folder\ndir = %s\nvalid_fraction = 0.2\n"
                           "test_fraction = 0.2",
                           dir);
    int seen[2][10] = { { 0 } };
    for (int run = 0; run < 2; run++) {
        fl_experiment *e = build_ok(r, data, run ? 7 : 1);
        cr_assert_eq(e->info.image_c, 1);
        cr_assert_eq(e->info.dim, 6);
        cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 6);
        cr_assert_eq(e->info.n[FL_SPLIT_VALID], 2);
        cr_assert_eq(e->info.n[FL_SPLIT_TEST], 2);
        for (int s = 0; s < 3; s++) {
            int last = -1;
            for (uint64_t row = 0; row < e->info.n[s]; row++) {
                fl_real *x = read_row(e, (fl_split)s, row);
                /* pixel 0 of image i is 20 i */
                int img = (int)lround(x[0] * 255.0 / 20.0);
                cr_assert(img >= 0 && img < 10);
                for (uint32_t k = 0; k < 6; k++)
                    cr_assert_float_eq(x[k], ppix((uint32_t)img, 0, k) / 255.0, 1e-6);
                cr_assert_gt(img, last, "split %d not in name order", s);
                last = img;
                seen[run][img] = s + 1;
                free(x);
            }
        }
        fl_experiment_free(e);
    }
    for (int i = 0; i < 10; i++) {
        cr_assert_neq(seen[0][i], 0, "image %d in no split", i);
        cr_assert_eq(seen[0][i], seen[1][i], "image %d: another split for another seed", i);
    }
    free(data);
    fl_registry_free(r);
    rm_rf(dir);
}

Test(imgdata, png_folder_bad_files_are_named)
{
    fl_registry *r = load_builtin_plugins();
    char *dir = make_tmpdir();
    write_png_image(dir, "a.png", 0, 3, 2, 1);
    write_png_image(dir, "b.png", 1, 4, 4, 1);
    char *data = fl_strfmt("type = png-folder\ndir = %s", dir);
    build_fails(r, data, FL_ERR_FORMAT, "b.png: 4x4 pixels (width x height), expected 3x2",
                "a.png");
    rm_rf(dir);
    free(data);
    dir = make_tmpdir();
    write_png_image(dir, "a.png", 0, 3, 2, 1);
    free(write_bytes(dir, "notes.png", "this is text, not an image", 26));
    data = fl_strfmt("type = png-folder\ndir = %s", dir);
    build_fails(r, data, FL_ERR_FORMAT, "notes.png: not a PNG file", NULL);
    rm_rf(dir);
    free(data);
    dir = make_tmpdir();
    data = fl_strfmt("type = png-folder\ndir = %s", dir);
    build_fails(r, data, FL_ERR_FORMAT, "no .png files", NULL);
    free(data);
    data = fl_strfmt("type = png-folder\ndir = %s/absent", dir);
    build_fails(r, data, FL_ERR_IO, "cannot open the folder", "absent");
    free(data);
    rm_rf(dir);
    fl_registry_free(r);
}

/* ---- density on images ---------------------------------------------- */

/* A tiny grey image set through png-folder: train/ `n_train` images,
 * test/ 4, of 3 x 2 pixels (D = 6). */
static char *tiny_set(uint32_t n_train)
{
    char *dir = make_tmpdir();
    char *train = subdir(dir, "train"), *test = subdir(dir, "test");
    for (uint32_t i = 0; i < n_train; i++) {
        char name[16];
        snprintf(name, sizeof name, "a%u.png", i);
        write_png_image(train, name, i, 3, 2, 1);
    }
    for (uint32_t i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%u.png", i);
        write_png_image(test, name, 20 + i, 3, 2, 1);
    }
    free(train);
    free(test);
    return dir;
}

/* The closed form with an identity flow: -log N(x; 0, I) - log|dx/du| +
 * D log 256 per row, from the documented evaluation noise. */
static double closed_form_nll(const fl_real *rows, uint64_t n, uint32_t D, int transform,
                              double a, double *se)
{
    fl_rng_key key = fl_rng_key_make(0, "data.dequantize.eval");
    double s = 0, s2 = 0;
    for (uint64_t i = 0; i < n; i++) {
        fl_real U[64];
        fl_rng_uniform(key, 0, i * D, D, U);
        double v = 0;
        for (uint32_t j = 0; j < D; j++) {
            double k = round(rows[i * D + j] * 255.0), u = (k + U[j]) / 256.0, x = u, ldj = 0;
            if (transform == FL_PRE_LOGIT) {
                double q = a + (1 - 2 * a) * u;
                x = log(q / (1 - q));
                ldj = log(1 - 2 * a) - log(q) - log(1 - q);
            } else if (transform == FL_PRE_SCALE) {
                x = u - 0.5;
            }
            v += 0.5 * x * x + 0.5 * 1.8378770664093454836 - ldj + log(256.0);
        }
        s += v;
        s2 += v * v;
    }
    double mu = s / (double)n;
    *se = sqrt((s2 - s * mu) / (double)(n - 1) / (double)n);
    return mu;
}

Test(imgdata, identity_flow_bits_per_dim_has_a_closed_form)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    char *dir = tiny_set(2);
    fl_registry *r = load_builtin_plugins();
    static const char *const tf[3] = { "none", "logit", "scale" };
    for (int t = 0; t < 3; t++) {
        char *data = fl_strfmt("type = png-folder\ndir = %s\ntransform = %s\nlogit_alpha = 0.1",
                               dir, tf[t]);
        fl_experiment *e = build_ok(r, data, 1);
        const fl_density_pre *p = fl_density_pre_of(e);
        cr_assert_eq(p->dequantize, 1, "auto is uniform on image levels");
        cr_assert_eq(p->transform, t);
        cr_assert_float_eq(p->bpd, 1 / (6 * log(2.0)), 1e-15);
        fl_real *rows;
        uint64_t n;
        cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &rows, &n), FL_OK);
        cr_assert_eq(n, 4);
        double se_want, want = closed_form_nll(rows, n, 6, t, 0.1, &se_want);
        double nll, se;
        cr_assert_eq(fl_density_nll(e, rows, n, &nll, &se), FL_OK, "%s", fl_err_msg());
        cr_assert_float_eq(nll, want, 1e-4, "%s: NLL %.9g, closed form %.9g", tf[t], nll, want);
        cr_assert_float_eq(se, se_want, 1e-4);
        /* a run reports the same in bits/dim */
        fl_density_result res;
        cr_assert_eq(fl_density_train(e, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
        cr_assert_float_eq(res.test_bpd, want / (6 * log(2.0)), 1e-5, "%s", tf[t]);
        cr_assert_float_eq(res.test_bpd_se, se_want / (6 * log(2.0)), 1e-5);
        cr_assert_float_eq(res.test_nll, want, 1e-4);
        fl_free(rows);
        fl_experiment_free(e);
        free(data);
    }
    fl_registry_free(r);
    rm_rf(dir);
}

Test(imgdata, dequantization_noise_is_fresh_per_batch_and_fixed_for_evaluation)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    char *dir = tiny_set(1);
    fl_registry *r = load_builtin_plugins();
    char *data = fl_strfmt("type = png-folder\ndir = %s", dir);
    fl_experiment *e = build_ok(r, data, 1);
    /* batch 1 of a 1-image training split: every step reads that image */
    fl_real raw[6], a[6], b[6];
    double la, lb;
    cr_assert_eq(fl_experiment_train_rows(e, 0, 1, 0, 1, raw), FL_OK);
    cr_assert_eq(fl_density_batch(e, 0, 0, 1, a, &la), FL_OK);
    cr_assert_eq(fl_experiment_train_rows(e, 2, 1, 0, 1, b), FL_OK);
    cr_assert_eq(memcmp(raw, b, sizeof raw), 0, "the same image at steps 0 and 2");
    cr_assert_eq(fl_density_batch(e, 2, 0, 1, b, &lb), FL_OK);
    for (int j = 0; j < 6; j++) {
        double k = round(raw[j] * 255.0);
        cr_assert(a[j] > k / 256 && a[j] < (k + 1) / 256, "u %g for level %g", a[j], k);
        cr_assert(b[j] > k / 256 && b[j] < (k + 1) / 256);
        cr_assert_neq(a[j], b[j], "step 2 reuses step 0's noise at pixel %d", j);
    }
    cr_assert_eq(la, 0);
    /* evaluation: the same noise every time and for every seed */
    fl_real *rows;
    uint64_t n;
    cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &rows, &n), FL_OK);
    double n1, n2, n3, se;
    cr_assert_eq(fl_density_nll(e, rows, n, &n1, &se), FL_OK);
    cr_assert_eq(fl_density_nll(e, rows, n, &n2, &se), FL_OK);
    fl_experiment *e7 = build_ok(r, data, 7);
    cr_assert_eq(fl_density_nll(e7, rows, n, &n3, &se), FL_OK);
    cr_assert_eq(n1, n2);
    cr_assert_eq(n1, n3);
    fl_free(rows);
    fl_experiment_free(e7);
    fl_experiment_free(e);
    free(data);
    fl_registry_free(r);
    rm_rf(dir);
}

Test(imgdata, auto_is_none_off_images_and_uniform_refuses_continuous_values)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = build_ok(r, "type = moons\ntest_size = 10", 1);
    cr_assert_eq(fl_density_pre_of(e)->dequantize, 0);
    cr_assert_eq(fl_density_pre_of(e)->bpd, 0);
    cr_assert_str_eq(fl_task_of(e)->trainer_of(e)->cols[0].name, "train_nll",
                     "non-image runs keep the nats columns");
    fl_experiment_free(e);
    e = build_ok(r, "type = moons\ntest_size = 10\ndequantize = uniform", 1);
    fl_real *rows;
    uint64_t n;
    cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &rows, &n), FL_OK);
    double nll, se;
    cr_assert_eq(fl_density_nll(e, rows, n, &nll, &se), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "not a level k/255");
    assert_contains(fl_err_msg(), "dequantize = none");
    fl_free(rows);
    fl_experiment_free(e);
    fl_registry_free(r);
}

Test(imgdata, uniform_dequantization_of_dynamically_binarized_rows_is_refused)
{
    char *dir = make_tmpdir();
    /* an idx file of 4 images of 2x2 */
    uint8_t b[16 + 16] = { 0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 2 };
    char *p = write_bytes(dir, "imgs", b, sizeof b);
    fl_registry *r = load_builtin_plugins();
    char *data = fl_strfmt("type = idx\ntrain_images = %s\nvalid_size = 1\ndequantize = uniform",
                           p);
    build_fails(r, data, FL_ERR_INVALID, "imgdata-test.ini:7: [data] dequantize = uniform",
                "binarize = none");
    free(data);
    /* auto leaves them alone */
    data = fl_strfmt("type = idx\ntrain_images = %s\nvalid_size = 1", p);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(fl_density_pre_of(e)->dequantize, 0);
    fl_experiment_free(e);
    free(data);
    free(p);
    fl_registry_free(r);
    rm_rf(dir);
}

Test(imgdata, samples_at_a_temperature_invert_the_preprocessing)
{
    fl_runtime_init();
    char *dir = tiny_set(2);
    fl_registry *r = load_builtin_plugins();
    static const char *const tf[3] = { "none", "logit", "scale" };
    for (int t = 0; t < 3; t++) {
        char *data = fl_strfmt("type = png-folder\ndir = %s\ntransform = %s", dir, tf[t]);
        fl_experiment *e = build_ok(r, data, 1);
        fl_real x[5 * 6], z[5 * 6];
        const double T = 0.5, a = 0.05;
        fl_rng_key key = fl_rng_key_make(0, "t");
        cr_assert_eq(fl_density_sample_at(e, 5, key, T, x), FL_OK, "%s", fl_err_msg());
        /* the base draw at temperature T, reversed by the flow, then the
         * inverse transform and the level u falls in */
        fl_rng_normal(key, 0, 0, 30, z);
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 6; j++) {
                double v = T * (double)z[i * 6 + (5 - j)];
                if (t == FL_PRE_LOGIT) v = (1 / (1 + exp(-v)) - a) / (1 - 2 * a);
                else if (t == FL_PRE_SCALE) v += 0.5;
                double k = floor(256 * v);
                k = k < 0 ? 0 : k > 255 ? 255 : k;
                cr_assert_float_eq(x[i * 6 + j], k / 255.0, 1e-6, "%s: sample %d value %d",
                                   tf[t], i, j);
            }
        fl_experiment_free(e);
        free(data);
    }
    fl_registry_free(r);
    rm_rf(dir);
}

/* ---- pictures ------------------------------------------------------- */

static uint8_t *read_png(const char *path, uint32_t *w, uint32_t *h, uint32_t *c)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&im, path), "%s: %s", path, im.message);
    *c = (im.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
    im.format = *c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    uint8_t *px = malloc(PNG_IMAGE_SIZE(im));
    cr_assert(png_image_finish_read(&im, NULL, px, 0, NULL));
    *w = im.width;
    *h = im.height;
    return px;
}

Test(imgdata, blocks_grid_layout_in_rgb)
{
    char *dir = make_tmpdir();
    char *path = fl_strfmt("%s/g.png", dir);
    /* 2 blocks of 3 images of 1x2 RGB, 2 columns, pad 1 */
    fl_real img[6][6];
    for (int i = 0; i < 6; i++)
        for (int k = 0; k < 6; k++) img[i][k] = (fl_real)((i * 6 + k) / 40.0);
    cr_assert_eq(fl_image_blocks_png(path, &img[0][0], 2, 3, 3, 1, 2, 2, 1), FL_OK, "%s",
                 fl_err_msg());
    uint32_t w, h, c;
    uint8_t *px = read_png(path, &w, &h, &c);
    cr_assert_eq(c, 3);
    cr_assert_eq(w, 1 + 2 * 3);
    /* block: 2 rows of (1 + 1) + 2 = 6; two blocks from y = 1, less the last 2 */
    cr_assert_eq(h, 1 + 2 * 6 - 2);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 3; i++)
            for (int xpix = 0; xpix < 2; xpix++)
                for (int ch = 0; ch < 3; ch++) {
                    uint32_t x = 1 + (uint32_t)(i % 2) * 3 + (uint32_t)xpix;
                    uint32_t y = 1 + (uint32_t)b * 6 + (uint32_t)(i / 2) * 2;
                    double v = img[b * 3 + i][xpix * 3 + ch];
                    cr_assert_eq(px[(y * w + x) * 3 + ch], (uint8_t)(v * 255 + 0.5),
                                 "block %d image %d x %d channel %d", b, i, xpix, ch);
                }
    cr_assert_eq(px[0], FL_IMAGE_PAD_GREY);
    cr_assert_eq(fl_image_blocks_png(path, &img[0][0], 1, 3, 2, 1, 2, 2, 1), FL_ERR_INVALID);
    free(px);
    free(path);
    rm_rf(dir);
}

Test(imgdata, an_image_run_draws_samples_at_three_temperatures_and_bpd_curves, .timeout = 60)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    char *cdir = cifar_dir();
    fl_registry *r = load_builtin_plugins();
    char *data = fl_strfmt("type = cifar10\ndir = %s\nvalid_size = 1\ntransform = logit", cdir);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(fl_density_flows(e)->c, 3, "the stack sees the image's shape");
    cr_assert_eq(fl_density_flows(e)->h, 32);
    char *dir = make_tmpdir();
    fl_density_result res;
    cr_assert_eq(fl_density_train(e, dir, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_plot_density(e, dir), FL_OK, "%s", fl_err_msg());
    char *p = fl_strfmt("%s/samples.png", dir);
    uint32_t w, h, c;
    uint8_t *px = read_png(p, &w, &h, &c);
    cr_assert_eq(c, 3);
    free(p);
    char *csv, *m;
    size_t n;
    p = fl_strfmt("%s/samples_grid.csv", dir);
    cr_assert_eq(fl_read_file(p, &csv, &n), FL_OK);
    /* the block picture sits right of the temperature labels and below the
     * title: its first image at (x0 + 2, y0 + 2), blocks 106 rows apart */
    unsigned x0 = 0, y0 = 0;
    cr_assert_eq(sscanf(csv, "block,temperature,first_pixel_row,first_pixel_col,rows,cols\n"
                             "0,0.50,%u,%u,3,10\n", &y0, &x0), 2, "%s", csv);
    cr_assert_gt(x0, 2, "no room for the temperature labels");
    cr_assert_gt(y0, 2, "no room for the title");
    char want[160];
    snprintf(want, sizeof want, "1,0.70,%u,%u,3,10\n2,1.00,%u,%u,3,10\n", y0 + 106, x0, y0 + 212, x0);
    assert_contains(csv, want);
    cr_assert_geq(w, x0 - 2 + 2 + 10 * 34);
    cr_assert_eq(h, y0 - 2 + 2 + 3 * (3 * 34 + 4) - 4);
    /* the separator grey is kept pixel for pixel */
    const uint8_t *pad = px + 3 * ((size_t)(y0 - 2) * w + x0 - 2);
    cr_assert(pad[0] == 128 && pad[1] == 128 && pad[2] == 128);
    free(px);
    free(p);
    p = fl_strfmt("%s/metrics.csv", dir);
    cr_assert_eq(fl_read_file(p, &m, &n), FL_OK);
    assert_contains(m, "step,train_bpd,test_bpd,test_bpd_se,test_nll,test_nll_se,");
    free(p);
    free(csv);
    free(m);
    fl_experiment_free(e);
    free(data);
    fl_registry_free(r);
    rm_rf(dir);
    rm_rf(cdir);
}
