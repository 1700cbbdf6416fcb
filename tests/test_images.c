/* test_images.c - image data sets and image grids.
 *
 * The amat/binarized-mnist and idx/fashion-mnist plugins load small
 * synthetic files written here (plain and gzip), through the registry and
 * an experiment, as a run would: values, split sizes, rows by index, the
 * three binarizations, and the message of every malformed file. The real
 * data sets are loaded too when this machine has them (skipped otherwise).
 * Image grids are read back from the PNG with libpng. */
#include <math.h>
#include <png.h>
#include <zlib.h>

#include "common.h"
#include "output/imagegrid.h"

SUITE(images);

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

static char *write_text(const char *dir, const char *name, const char *text)
{
    return write_bytes(dir, name, text, strlen(text));
}

/* gzip-compressed, through zlib as the plugins read it. */
static char *write_gz(const char *dir, const char *name, const void *data, size_t n)
{
    char *path = fl_strfmt("%s/%s", dir, name);
    gzFile g = gzopen(path, "wb");
    cr_assert_not_null(g, "cannot write %s", path);
    cr_assert_eq(gzwrite(g, data, (unsigned)n), (int)n);
    cr_assert_eq(gzclose(g), Z_OK);
    return path;
}

/* Pixel j of image i of a synthetic binary set (any fixed pattern will do,
 * as long as images differ). */
static int bit(uint64_t i, uint32_t j)
{
    return (int)(((i * 7 + j * 3 + (i * j) % 5) % 4) == 0);
}

/* `rows` lines of `dim` values from bit(first + i, j); the last line has
 * no newline when `last_newline` is 0. */
static char *amat_text(uint64_t first, uint64_t rows, uint32_t dim, int last_newline)
{
    fl_buf b = { 0 };
    for (uint64_t i = 0; i < rows; i++) {
        for (uint32_t j = 0; j < dim; j++)
            fl_buf_printf(&b, "%d%s", bit(first + i, j), j + 1 < dim ? " " : "");
        if (i + 1 < rows || last_newline) fl_buf_printf(&b, "\n");
    }
    cr_assert(!b.failed);
    if (!b.data) b.data = fl_strdup("");
    return b.data;
}

/* Grey level of pixel j of image i of a synthetic idx set. */
static uint8_t grey(uint64_t i, uint32_t j)
{
    return (uint8_t)((i * 37 + j * 11) % 256);
}

/* An idx3-ubyte image: header + n images of h x w from grey(). */
static uint8_t *idx_bytes(uint32_t magic, uint32_t n, uint32_t h, uint32_t w, size_t *len)
{
    size_t dim = (size_t)h * w;
    *len = 16 + n * dim;
    uint8_t *b = malloc(*len);
    cr_assert_not_null(b);
    uint32_t hd[4] = { magic, n, h, w };
    for (int k = 0; k < 4; k++)
        for (int q = 0; q < 4; q++) b[4 * k + q] = (uint8_t)(hd[k] >> (24 - 8 * q));
    for (uint32_t i = 0; i < n; i++)
        for (size_t j = 0; j < dim; j++) b[16 + i * dim + j] = grey(i, (uint32_t)j);
    return b;
}

static char *write_idx(const char *dir, const char *name, uint32_t n, uint32_t h, uint32_t w,
                       int gz)
{
    size_t len;
    uint8_t *b = idx_bytes(0x803, n, h, w, &len);
    char *p = gz ? write_gz(dir, name, b, len) : write_bytes(dir, name, b, len);
    free(b);
    return p;
}

/* ---- experiments ---------------------------------------------------- */

/* A registry shared by a test; built-in plugins only. */
static fl_registry *reg(void)
{
    fl_registry *r = load_builtin_plugins();
    cr_assert_not_null(fl_registry_find(r, FL_KIND_DATASET, "amat"));
    cr_assert_not_null(fl_registry_find(r, FL_KIND_DATASET, "idx"));
    return r;
}

/* An experiment on [data] `data` (the section's body) with a parameter-free
 * flow: enough to create the data set as a run does. */
static fl_status build(const fl_registry *r, const char *data, uint64_t seed, fl_experiment **e)
{
    char *text = fl_strfmt("[experiment]\nseed = %llu\n[data]\n%s\n[flow.1]\ntype = reverse\n"
                           "[train]\nsteps = 0\nbatch = 1\n[eval]\nbatch = 1\n",
                           (unsigned long long)seed, data);
    *e = NULL;
    fl_status st = experiment_from_text(r, "images-test.ini", text, NULL, e);
    free(text);
    return st;
}

static fl_experiment *build_ok(const fl_registry *r, const char *data, uint64_t seed)
{
    fl_experiment *e;
    fl_status st = build(r, data, seed, &e);
    cr_assert_eq(st, FL_OK, "%s: %s", fl_status_str(st), fl_err_msg());
    return e;
}

/* Builds and expects `st`, with every needle in the message. */
static void build_fails(const fl_registry *r, const char *data, fl_status st, const char *n1,
                        const char *n2, const char *n3)
{
    fl_experiment *e = NULL;
    fl_status got = build(r, data, 1, &e);
    cr_assert_neq(got, FL_OK, "accepted: %s", data);
    if (e) fl_experiment_free(e);
    cr_assert_eq(got, st, "status %s, expected %s: %s", fl_status_str(got), fl_status_str(st),
                 fl_err_msg());
    assert_contains(fl_err_msg(), n1);
    if (n2) assert_contains(fl_err_msg(), n2);
    if (n3) assert_contains(fl_err_msg(), n3);
}

/* Reads rows `idx` of `split`; the caller frees the result. */
static fl_real *read_rows(fl_experiment *e, fl_split split, const uint64_t *idx, uint32_t n)
{
    fl_real *out = malloc((size_t)n * e->info.dim * sizeof *out);
    cr_assert_not_null(out);
    fl_status st = e->dcls->read(e->dself, split, idx, n, out);
    cr_assert_eq(st, FL_OK, "read: %s", fl_status_str(st));
    return out;
}

static fl_real *read_all(fl_experiment *e, fl_split split)
{
    uint64_t n = e->info.n[split];
    uint64_t *idx = malloc(n * sizeof *idx);
    for (uint64_t i = 0; i < n; i++) idx[i] = i;
    fl_real *out = read_rows(e, split, idx, (uint32_t)n);
    free(idx);
    return out;
}

/* ---- amat ----------------------------------------------------------- */

Test(images, amat_plain_and_gzip_files)
{
    char *dir = make_tmpdir();
    const uint32_t dim = 6; /* 2 x 3 */
    char *t_train = amat_text(0, 5, dim, 0), *t_valid = amat_text(100, 2, dim, 1),
         *t_test = amat_text(200, 3, dim, 1);
    char *train = write_text(dir, "train.amat", t_train);
    char *valid = write_gz(dir, "valid.amat.gz", t_valid, strlen(t_valid));
    char *test = write_text(dir, "test.amat", t_test);
    fl_registry *r = reg();
    char *data = fl_strfmt("type = amat\ntrain = %s\nvalid = %s\ntest = %s\nheight = 2\nwidth = 3",
                           train, valid, test);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(e->info.dim, dim);
    cr_assert_eq(e->info.image_h, 2);
    cr_assert_eq(e->info.image_w, 3);
    cr_assert_eq(e->info.drawn, 0);
    cr_assert_eq(e->info.flags, 0);
    cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 5);
    cr_assert_eq(e->info.n[FL_SPLIT_VALID], 2);
    cr_assert_eq(e->info.n[FL_SPLIT_TEST], 3);
    /* Rows by index, in any order, from each split. */
    const uint64_t idx[4] = { 4, 0, 2, 4 };
    fl_real *x = read_rows(e, FL_SPLIT_TRAIN, idx, 4);
    for (int i = 0; i < 4; i++)
        for (uint32_t j = 0; j < dim; j++)
            cr_assert_eq(x[i * dim + j], (fl_real)bit(idx[i], j), "train row %llu pixel %u",
                         (unsigned long long)idx[i], j);
    free(x);
    const uint64_t v1[1] = { 1 };
    x = read_rows(e, FL_SPLIT_VALID, v1, 1);
    for (uint32_t j = 0; j < dim; j++) cr_assert_eq(x[j], (fl_real)bit(101, j));
    free(x);
    x = read_rows(e, FL_SPLIT_TEST, (const uint64_t[]){ 2 }, 1);
    for (uint32_t j = 0; j < dim; j++) cr_assert_eq(x[j], (fl_real)bit(202, j));
    free(x);
    /* A row past the end is refused. */
    fl_real row[6];
    cr_assert_eq(e->dcls->read(e->dself, FL_SPLIT_TEST, (const uint64_t[]){ 3 }, 1, row),
                 FL_ERR_INVALID);
    fl_experiment_free(e);
    fl_registry_free(r);
    free(data);
    free(t_train);
    free(t_valid);
    free(t_test);
    free(train);
    free(valid);
    free(test);
    remove_tree(dir);
}

/* A training file with `text` (2 x 3 images) must fail with the needles. */
static void amat_fails(const char *text, int gz, fl_status st, const char *n1, const char *n2)
{
    char *dir = make_tmpdir();
    char *path = gz ? write_gz(dir, "bad.amat.gz", text, strlen(text))
                    : write_text(dir, "bad.amat", text);
    fl_registry *r = reg();
    char *data = fl_strfmt("type = amat\ntrain = %s\nheight = 2\nwidth = 3", path);
    build_fails(r, data, st, gz ? "bad.amat.gz" : "bad.amat", n1, n2);
    fl_registry_free(r);
    free(data);
    free(path);
    remove_tree(dir);
}

Test(images, amat_line_with_too_few_values)
{
    amat_fails("0 1 0 1 0 1\n1 1 1 1 1 1\n0 0 0 0 1\n1 1 1 1 1 1\n", 0, FL_ERR_FORMAT,
               "bad.amat: line 3: 5 values, expected 6", NULL);
}

Test(images, amat_line_with_too_many_values_in_a_gzip_file)
{
    amat_fails("0 1 0 1 0 1\n1 1 1 1 1 1 0\n", 1, FL_ERR_FORMAT,
               "bad.amat.gz: line 2: 7 values, expected 6", NULL);
}

Test(images, amat_value_that_is_not_0_or_1)
{
    amat_fails("0 1 0 1 0 1\n0 1 0 2 0 1\n", 0, FL_ERR_FORMAT,
               "bad.amat: line 2: value 4 is '2', expected 0 or 1", NULL);
    amat_fails("0 1 0 1 0 1.0\n", 0, FL_ERR_FORMAT, "line 1: value 6 is '1.0'", NULL);
    amat_fails("0 1 0 1 0 1\n0 1 0 1 0 10\n", 0, FL_ERR_FORMAT, "line 2: value 6 is '10'",
               NULL);
    /* Bytes of a binary file are shown escaped, long tokens cut. */
    amat_fails("0 1 \x01\xa2z 1 0 1\n", 0, FL_ERR_FORMAT, "value 3 is '\\x01\\xa2z'", NULL);
    amat_fails("0 1 0 1 0 0123456789abcdef\n", 0, FL_ERR_FORMAT,
               "value 6 is '0123456789ab...'", NULL);
}

/* 1.5 MB: lines straddle the parser's 1 MiB chunks. Every value is still
 * right, and the line number of an error past the first chunk exact. */
Test(images, amat_large_file_across_read_chunks)
{
    char *text = amat_text(0, 1000, 784, 1);
    char *gdir = make_tmpdir();
    char *good = write_text(gdir, "good.amat", text);
    fl_registry *r = reg();
    char *gdata = fl_strfmt("type = amat\ntrain = %s\ntest = %s", good, good);
    fl_experiment *e = build_ok(r, gdata, 1);
    cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 1000);
    fl_real *x = read_all(e, FL_SPLIT_TRAIN);
    size_t wrong = 0, first_wrong = 0;
    for (size_t k = 0; k < 1000 * 784; k++)
        if (x[k] != (fl_real)bit(k / 784, (uint32_t)(k % 784)) && !wrong++) first_wrong = k;
    cr_assert_eq(wrong, 0, "%zu wrong values, the first row %zu pixel %zu", wrong,
                 first_wrong / 784, first_wrong % 784);
    free(x);
    fl_experiment_free(e);
    free(gdata);
    free(good);
    remove_tree(gdir);
    /* Line 900 loses its last value (and the blank before it). */
    char *l900 = text;
    for (int k = 1; k < 900; k++) l900 = strchr(l900, '\n') + 1;
    memmove(l900 + 2 * 783 - 1, l900 + 2 * 784 - 1, strlen(l900 + 2 * 784 - 1) + 1);
    char *dir = make_tmpdir();
    char *path = write_text(dir, "big.amat", text);
    char *data = fl_strfmt("type = amat\ntrain = %s", path);
    build_fails(r, data, FL_ERR_FORMAT, "big.amat: line 900: 783 values, expected 784", NULL, NULL);
    fl_registry_free(r);
    free(data);
    free(path);
    free(text);
    remove_tree(dir);
}

Test(images, amat_empty_line_inside_the_file)
{
    amat_fails("0 1 0 1 0 1\n\n1 1 1 1 1 1\n", 0, FL_ERR_FORMAT,
               "bad.amat: line 2: empty line, expected 6 values", NULL);
}

Test(images, amat_trailing_blank_lines_and_crlf_are_fine)
{
    char *dir = make_tmpdir();
    char *path = write_text(dir, "ok.amat", "0 1 0 1 0 1\r\n1 1 1 1 1 1\r\n\n  \n");
    fl_registry *r = reg();
    char *data = fl_strfmt("type = amat\ntrain = %s\ntest = %s\nheight = 2\nwidth = 3", path,
                           path);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 2);
    fl_experiment_free(e);
    fl_registry_free(r);
    free(data);
    free(path);
    remove_tree(dir);
}

Test(images, amat_empty_file)
{
    amat_fails("", 0, FL_ERR_FORMAT, "no images", NULL);
}

Test(images, a_plain_file_named_gz_is_refused)
{
    /* zlib would read it as plain text; the .gz name says it should not be */
    char *dir = make_tmpdir();
    char *text = amat_text(0, 20, 6, 1);
    char *plain = write_bytes(dir, "plain.amat.gz", text, strlen(text));
    fl_registry *r = reg();
    char *data = fl_strfmt("type = amat\ntrain = %s\nheight = 2\nwidth = 3", plain);
    build_fails(r, data, FL_ERR_FORMAT, "plain.amat.gz: not a gzip file", NULL, NULL);
    fl_registry_free(r);
    free(data);
    free(text);
    free(plain);
    remove_tree(dir);
}

Test(images, amat_truncated_gzip_file)
{
    char *dir = make_tmpdir();
    char *text = amat_text(0, 200, 6, 1);
    char *full = write_gz(dir, "full.amat.gz", text, strlen(text));
    char *gz;
    size_t n;
    cr_assert_eq(fl_read_file(full, &gz, &n), FL_OK);
    char *cut = write_bytes(dir, "cut.amat.gz", gz, n / 2);
    fl_registry *r = reg();
    char *data = fl_strfmt("type = amat\ntrain = %s\nheight = 2\nwidth = 3", cut);
    build_fails(r, data, FL_ERR_FORMAT, "cut.amat.gz: line ",
                "truncated or corrupt (zlib: unexpected end of file)", NULL);
    fl_registry_free(r);
    free(data);
    free(gz);
    free(text);
    free(full);
    free(cut);
    remove_tree(dir);
}

Test(images, amat_missing_file)
{
    fl_registry *r = reg();
    build_fails(r, "type = amat\ntrain = /nonexistent/flowlab/train.amat", FL_ERR_IO,
                "/nonexistent/flowlab/train.amat: no such file", "relative to the experiment file's folder", NULL);
    fl_registry_free(r);
}

/* binarized-mnist on a folder of three small synthetic 28x28 files. */
Test(images, binarized_mnist_reads_a_folder)
{
    char *dir = make_tmpdir();
    char *t[3] = { amat_text(0, 4, 784, 1), amat_text(10, 2, 784, 1), amat_text(20, 3, 784, 0) };
    char *p[3] = { write_gz(dir, "binarized_mnist_train.amat.gz", t[0], strlen(t[0])),
                   write_text(dir, "binarized_mnist_valid.amat", t[1]),
                   write_gz(dir, "binarized_mnist_test.amat.gz", t[2], strlen(t[2])) };
    /* The plain file wins over a broken .gz of the same split. */
    char *decoy = write_text(dir, "binarized_mnist_valid.amat.gz", "not gzip, not amat");
    fl_registry *r = reg();
    char *data = fl_strfmt("type = binarized-mnist\ndir = %s", dir);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(e->info.dim, 784);
    cr_assert_eq(e->info.image_h, 28);
    cr_assert_eq(e->info.image_w, 28);
    cr_assert_eq(e->info.n[0], 4);
    cr_assert_eq(e->info.n[1], 2);
    cr_assert_eq(e->info.n[2], 3);
    fl_real *x = read_rows(e, FL_SPLIT_TEST, (const uint64_t[]){ 2, 0 }, 2);
    for (uint32_t j = 0; j < 784; j++) {
        cr_assert_eq(x[j], (fl_real)bit(22, j));
        cr_assert_eq(x[784 + j], (fl_real)bit(20, j));
    }
    free(x);
    fl_experiment_free(e);
    fl_registry_free(r);
    free(data);
    free(decoy);
    for (int s = 0; s < 3; s++) {
        free(t[s]);
        free(p[s]);
    }
    remove_tree(dir);
}

Test(images, binarized_mnist_missing_folder_says_where_to_get_it)
{
    fl_registry *r = reg();
    build_fails(r, "type = binarized-mnist\ndir = /nonexistent/bmnist", FL_ERR_IO,
                "/nonexistent/bmnist/binarized_mnist_train.amat.gz: no such file",
                "binarized_mnist_{train,valid,test}.amat", "larocheh");
    fl_registry_free(r);
}

/* The shared copy, when this machine has it (the default `dir` is relative
 * to the project root; tests run elsewhere, so resolve it here). */
Test(images, real_binarized_mnist)
{
    char *dir = fl_strfmt("%s/../shared/data/binarized_mnist", test_env("FLOWLAB_SOURCE_ROOT"));
    char *f = fl_strfmt("%s/binarized_mnist_train.amat.gz", dir);
    char *g = fl_strfmt("%s/binarized_mnist_train.amat", dir);
    int have = access(f, R_OK) == 0 || access(g, R_OK) == 0;
    free(f);
    free(g);
    if (!have) {
        free(dir);
        cr_skip_test("no binarized MNIST in ../shared/data/binarized_mnist");
    }
    fl_registry *r = reg();
    char *data = fl_strfmt("type = binarized-mnist\ndir = %s", dir);
    double t0 = fl_now();
    fl_experiment *e = build_ok(r, data, 1);
    cr_log_info("binarized MNIST loaded in %.2f s", fl_now() - t0);
    cr_assert_eq(e->info.n[0], 50000);
    cr_assert_eq(e->info.n[1], 10000);
    cr_assert_eq(e->info.n[2], 10000);
    /* The README's mean pixel values. */
    const double mean[3] = { 0.1306, 0.1311, 0.1325 };
    for (int s = 0; s < 3; s++) {
        fl_real *x = read_all(e, (fl_split)s);
        double sum = 0;
        size_t n = (size_t)e->info.n[s] * 784;
        for (size_t k = 0; k < n; k++) sum += x[k];
        cr_assert_float_eq(sum / (double)n, mean[s], 6e-5, "split %d mean %.5f", s, sum / (double)n);
        free(x);
    }
    fl_experiment_free(e);
    fl_registry_free(r);
    free(data);
    free(dir);
}

/* ---- idx ------------------------------------------------------------ */

/* 12 training images (gzip) and 5 test images (plain) of 3 x 4. */
typedef struct idx_files {
    char *dir, *train, *test, *data_prefix;
} idx_files;

static idx_files idx_setup(void)
{
    idx_files f;
    f.dir = make_tmpdir();
    f.train = write_idx(f.dir, "train.idx3.gz", 12, 3, 4, 1);
    f.test = write_idx(f.dir, "test.idx3", 5, 3, 4, 0);
    f.data_prefix = fl_strfmt("type = idx\ntrain_images = %s\ntest_images = %s\nvalid_size = 4",
                              f.train, f.test);
    return f;
}

static void idx_teardown(idx_files *f)
{
    free(f->train);
    free(f->test);
    free(f->data_prefix);
    remove_tree(f->dir);
}

Test(images, idx_grey_levels_and_the_validation_tail)
{
    idx_files f = idx_setup();
    fl_registry *r = reg();
    char *data = fl_strfmt("%s\nbinarize = none", f.data_prefix);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(e->info.dim, 12);
    cr_assert_eq(e->info.image_h, 3);
    cr_assert_eq(e->info.image_w, 4);
    cr_assert_eq(e->info.flags, 0);
    cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 8);
    cr_assert_eq(e->info.n[FL_SPLIT_VALID], 4);
    cr_assert_eq(e->info.n[FL_SPLIT_TEST], 5);
    /* Train row i is file row i; valid row i is file row 8 + i. */
    struct { fl_split s; uint64_t row, file_row; } cases[] = {
        { FL_SPLIT_TRAIN, 0, 0 }, { FL_SPLIT_TRAIN, 7, 7 }, { FL_SPLIT_VALID, 0, 8 },
        { FL_SPLIT_VALID, 3, 11 }, { FL_SPLIT_TEST, 4, 4 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fl_real *x = read_rows(e, cases[c].s, &cases[c].row, 1);
        for (uint32_t j = 0; j < 12; j++)
            cr_assert_float_eq(x[j], grey(cases[c].file_row, j) / 255.0, 1e-6,
                               "split %d row %llu pixel %u", cases[c].s,
                               (unsigned long long)cases[c].row, j);
        free(x);
    }
    fl_real row[12];
    cr_assert_eq(e->dcls->read(e->dself, FL_SPLIT_TRAIN, (const uint64_t[]){ 8 }, 1, row),
                 FL_ERR_INVALID);
    fl_experiment_free(e);
    free(data);
    fl_registry_free(r);
    idx_teardown(&f);
}

Test(images, idx_dynamic_binarization_is_the_default_and_sets_the_flag)
{
    idx_files f = idx_setup();
    fl_registry *r = reg();
    fl_experiment *e = build_ok(r, f.data_prefix, 1);
    cr_assert_eq(e->info.flags & FL_DATA_BINARIZE_DYNAMIC, FL_DATA_BINARIZE_DYNAMIC);
    fl_real *x = read_rows(e, FL_SPLIT_TEST, (const uint64_t[]){ 3 }, 1);
    for (uint32_t j = 0; j < 12; j++) cr_assert_float_eq(x[j], grey(3, j) / 255.0, 1e-6);
    free(x);
    fl_experiment_free(e);
    fl_registry_free(r);
    idx_teardown(&f);
}

/* Fixed binarization over 300 images of 10 x 10: 0/1 values, the same for
 * the same seed, others for another seed, with the grey levels' mean. */
Test(images, idx_fixed_binarization_is_fixed_and_keeps_the_mean)
{
    char *dir = make_tmpdir();
    char *train = write_idx(dir, "train", 300, 10, 10, 0);
    char *test = write_idx(dir, "test", 50, 10, 10, 1);
    fl_registry *r = reg();
    char *data = fl_strfmt("type = idx\ntrain_images = %s\ntest_images = %s\nvalid_size = 100\n"
                           "binarize = fixed",
                           train, test);
    fl_experiment *e1 = build_ok(r, data, 7), *e2 = build_ok(r, data, 7), *e3 = build_ok(r, data, 8);
    cr_assert_eq(e1->info.flags, 0);
    cr_assert_eq(e1->info.n[FL_SPLIT_TRAIN], 200);
    size_t differ = 0;
    for (int s = 0; s < 3; s++) {
        fl_real *a = read_all(e1, (fl_split)s), *b = read_all(e2, (fl_split)s),
                *c = read_all(e3, (fl_split)s);
        size_t n = (size_t)e1->info.n[s] * 100;
        double sum = 0, gsum = 0;
        uint64_t first = s == FL_SPLIT_VALID ? 200 : 0;
        for (size_t k = 0; k < n; k++) {
            cr_assert(a[k] == 0 || a[k] == 1, "split %d value %g", s, (double)a[k]);
            cr_assert_eq(a[k], b[k], "split %d pixel %zu differs for the same seed", s, k);
            differ += a[k] != c[k];
            uint8_t gl = grey(first + k / 100, (uint32_t)(k % 100));
            if (gl == 0) cr_assert_eq(a[k], 0);
            if (gl == 255) cr_assert_eq(a[k], 1);
            sum += a[k];
            gsum += gl / 255.0;
        }
        /* Bernoulli means: the standard error is below 0.5/sqrt(n). */
        double tol = 4 * 0.5 / sqrt((double)n);
        cr_assert_float_eq(sum / n, gsum / n, tol, "split %d: mean %.4f, grey mean %.4f", s,
                           sum / n, gsum / n);
        free(a);
        free(b);
        free(c);
    }
    /* The draw is independent of the experiment seed: every seed of a sweep
     * trains and is scored on the same binary images. */
    cr_assert_eq(differ, 0, "another experiment seed changed %zu pixels", differ);
    /* valid_size moves images between splits but does not redraw them. */
    char *data2 = fl_strfmt("type = idx\ntrain_images = %s\ntest_images = %s\nvalid_size = 50\n"
                            "binarize = fixed",
                            train, test);
    fl_experiment *e4 = build_ok(r, data2, 7);
    fl_real *v1 = read_rows(e1, FL_SPLIT_VALID, (const uint64_t[]){ 99 }, 1);
    fl_real *v4 = read_rows(e4, FL_SPLIT_VALID, (const uint64_t[]){ 49 }, 1);
    cr_assert_arr_eq(v1, v4, 100 * sizeof(fl_real));
    free(v1);
    free(v4);
    fl_experiment_free(e1);
    fl_experiment_free(e2);
    fl_experiment_free(e3);
    fl_experiment_free(e4);
    fl_registry_free(r);
    free(data);
    free(data2);
    free(train);
    free(test);
    remove_tree(dir);
}

/* A training file of raw bytes `b` must fail with the needles. */
static void idx_fails(const uint8_t *b, size_t n, int gz, const char *extra, fl_status st,
                      const char *n1, const char *n2)
{
    char *dir = make_tmpdir();
    char *path = gz ? write_gz(dir, "bad-idx3.gz", b, n) : write_bytes(dir, "bad-idx3", b, n);
    fl_registry *r = reg();
    char *data = fl_strfmt("type = idx\ntrain_images = %s\nvalid_size = 1\n%s", path,
                           extra ? extra : "");
    build_fails(r, data, st, gz ? "bad-idx3.gz" : "bad-idx3", n1, n2);
    fl_registry_free(r);
    free(data);
    free(path);
    remove_tree(dir);
}

Test(images, idx_wrong_magic)
{
    size_t n;
    uint8_t *b = idx_bytes(0x801, 4, 2, 2, &n);
    idx_fails(b, n, 0, NULL, FL_ERR_FORMAT, "magic number 0x00000801, expected 0x00000803",
              "label file");
    free(b);
    /* A real label file: an 8-byte header, then one byte per label. */
    const uint8_t labels[12] = { 0, 0, 8, 1, 0, 0, 0, 4, 3, 1, 4, 1 };
    idx_fails(labels, sizeof labels, 1, NULL, FL_ERR_FORMAT, "magic number 0x00000801",
              "label file");
    b = idx_bytes(0x0d03, 4, 2, 2, &n);
    idx_fails(b, n, 1, NULL, FL_ERR_FORMAT, "magic number 0x00000d03, expected 0x00000803", NULL);
    free(b);
}

Test(images, idx_truncated_or_too_long)
{
    size_t n;
    uint8_t *b = idx_bytes(0x803, 6, 3, 3, &n);
    idx_fails(b, n - 5, 0, NULL, FL_ERR_FORMAT, "truncated: 49 bytes of pixels, expected 54",
              "header: 6 images of 3x3");
    idx_fails(b, n - 5, 1, NULL, FL_ERR_FORMAT, "truncated: 49 bytes of pixels, expected 54",
              NULL);
    idx_fails(b, 10, 0, NULL, FL_ERR_FORMAT, "10 bytes, too short for an idx header", NULL);
    uint8_t *longer = calloc(n + 3, 1);
    memcpy(longer, b, n);
    idx_fails(longer, n + 3, 1, NULL, FL_ERR_FORMAT, "57 bytes of pixels, expected 54", NULL);
    free(longer);
    free(b);
}

Test(images, idx_truncated_gzip_stream)
{
    /* Cut the compressed bytes themselves, not the data inside. */
    char *dir = make_tmpdir();
    char *full = write_idx(dir, "full.gz", 200, 8, 8, 1);
    char *gz;
    size_t n;
    cr_assert_eq(fl_read_file(full, &gz, &n), FL_OK);
    idx_fails((const uint8_t *)gz, n - 40, 0, NULL, FL_ERR_FORMAT,
              "expected 12800 (header: 200 images of 8x8); zlib: unexpected end of file", NULL);
    free(gz);
    free(full);
    remove_tree(dir);
}

Test(images, idx_header_with_impossible_sizes)
{
    size_t n;
    uint8_t *b = idx_bytes(0x803, 0, 3, 3, &n);
    idx_fails(b, n, 0, NULL, FL_ERR_FORMAT, "header declares 0 images of 3x3", NULL);
    free(b);
    /* A huge count with no data fails as truncated, without a huge allocation. */
    b = idx_bytes(0x803, 1, 28, 28, &n);
    b[4] = 0x7f;
    idx_fails(b, n, 0, NULL, FL_ERR_FORMAT, "truncated: 784 bytes of pixels", NULL);
    free(b);
}

Test(images, idx_valid_size_too_large_and_mismatched_test_images)
{
    char *dir = make_tmpdir();
    char *train = write_idx(dir, "train", 5, 3, 4, 0);
    char *test = write_idx(dir, "test", 5, 4, 3, 0);
    fl_registry *r = reg();
    char *d1 = fl_strfmt("type = idx\ntrain_images = %s\nvalid_size = 5", train);
    build_fails(r, d1, FL_ERR_INVALID, "valid_size = 5 leaves no training images", "has 5", NULL);
    char *d2 = fl_strfmt("type = idx\ntrain_images = %s\ntest_images = %s\nvalid_size = 1", train,
                         test);
    build_fails(r, d2, FL_ERR_FORMAT, "has images of 4x3, the training file", "3x4", NULL);
    fl_registry_free(r);
    free(d1);
    free(d2);
    free(train);
    free(test);
    remove_tree(dir);
}

Test(images, idx_missing_file)
{
    fl_registry *r = reg();
    build_fails(r, "type = idx\ntrain_images = /nonexistent/flowlab/x-idx3-ubyte", FL_ERR_IO,
                "/nonexistent/flowlab/x-idx3-ubyte: no such file", NULL, NULL);
    fl_registry_free(r);
}

Test(images, fashion_mnist_reads_a_folder)
{
    char *dir = make_tmpdir();
    char *train = write_idx(dir, "train-images-idx3-ubyte.gz", 30, 28, 28, 1);
    char *test = write_idx(dir, "t10k-images-idx3-ubyte", 7, 28, 28, 0);
    fl_registry *r = reg();
    char *data = fl_strfmt("type = fashion-mnist\ndir = %s\nvalid_size = 10", dir);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(e->info.dim, 784);
    cr_assert_eq(e->info.image_h, 28);
    cr_assert_eq(e->info.n[0], 20);
    cr_assert_eq(e->info.n[1], 10);
    cr_assert_eq(e->info.n[2], 7);
    cr_assert_eq(e->info.flags, FL_DATA_BINARIZE_DYNAMIC);
    fl_real *x = read_rows(e, FL_SPLIT_VALID, (const uint64_t[]){ 9 }, 1);
    for (uint32_t j = 0; j < 784; j++) cr_assert_float_eq(x[j], grey(29, j) / 255.0, 1e-6);
    free(x);
    fl_experiment_free(e);
    fl_registry_free(r);
    free(data);
    free(train);
    free(test);
    remove_tree(dir);
}

Test(images, fashion_mnist_missing_folder_says_how_to_install_it)
{
    fl_registry *r = reg();
    build_fails(r, "type = fashion-mnist\ndir = /nonexistent/fm", FL_ERR_IO,
                "/nonexistent/fm/train-images-idx3-ubyte.gz: no such file",
                "apt-get install dataset-fashion-mnist", NULL);
    fl_registry_free(r);
}

Test(images, real_fashion_mnist)
{
    const char *dir = "/usr/share/datasets/fashion-mnist";
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0 &&
        access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte", R_OK) != 0)
        cr_skip_test("no Fashion-MNIST in %s (apt-get install dataset-fashion-mnist)", dir);
    fl_registry *r = reg();
    double t0 = fl_now();
    fl_experiment *e = build_ok(r, "type = fashion-mnist\nbinarize = none", 1);
    cr_log_info("Fashion-MNIST loaded in %.2f s", fl_now() - t0);
    cr_assert_eq(e->info.n[0], 50000);
    cr_assert_eq(e->info.n[1], 10000);
    cr_assert_eq(e->info.n[2], 10000);
    /* Fashion-MNIST's well-known training mean pixel is 0.2860. */
    double sum = 0;
    size_t n = 0;
    for (int s = 0; s < 2; s++) {
        fl_real *x = read_all(e, (fl_split)s);
        for (size_t k = 0; k < (size_t)e->info.n[s] * 784; k++) sum += x[k];
        n += (size_t)e->info.n[s] * 784;
        free(x);
    }
    cr_assert_float_eq(sum / (double)n, 0.2860, 2e-4, "train mean %.4f", sum / (double)n);
    fl_experiment_free(e);
    fl_registry_free(r);
}

/* ---- image grids ---------------------------------------------------- */

/* Reads an 8-bit PNG as grey; *was_grey says whether the file itself is
 * greyscale. The caller frees the result. */
static uint8_t *read_grey_png(const char *path, uint32_t *w, uint32_t *h, int *was_grey)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&img, path), "cannot read %s: %s", path, img.message);
    *was_grey = !(img.format & PNG_FORMAT_FLAG_COLOR);
    img.format = PNG_FORMAT_GRAY;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(img));
    cr_assert_not_null(buf);
    cr_assert(png_image_finish_read(&img, NULL, buf, 0, NULL), "cannot decode %s: %s", path,
              img.message);
    *w = img.width;
    *h = img.height;
    return buf;
}

/* Image i of three 2 x 3 test images: pixel (r, c) = (i*6 + r*3 + c) / 17. */
static void three_images(fl_real *x)
{
    for (int k = 0; k < 18; k++) x[k] = (fl_real)(k / 17.0);
}

static int only_file(const char *dir, const char *name)
{
    DIR *d = opendir(dir);
    int n = 0, found = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        n++;
        found |= !strcmp(de->d_name, name);
    }
    closedir(d);
    return n == 1 && found;
}

Test(images, grid_layout_values_and_separators)
{
    char *dir = make_tmpdir();
    char *path = fl_strfmt("%s/grid.png", dir);
    fl_real x[18];
    three_images(x);
    cr_assert_eq(fl_image_grid_png(path, x, 3, 2, 3, 2, 1), FL_OK, "%s", fl_err_msg());
    cr_assert(only_file(dir, "grid.png"), "a temporary file was left behind");
    uint32_t w, h;
    int g;
    uint8_t *px = read_grey_png(path, &w, &h, &g);
    cr_assert(g, "not a greyscale PNG");
    cr_assert_eq(w, 9); /* 1 + 2 * (3 + 1) */
    cr_assert_eq(h, 7); /* 1 + 2 * (2 + 1) */
    for (uint32_t i = 0; i < 3; i++)
        for (uint32_t r = 0; r < 2; r++)
            for (uint32_t c = 0; c < 3; c++) {
                uint32_t X = 1 + (i % 2) * 4 + c, Y = 1 + (i / 2) * 3 + r;
                int want = (int)lround((i * 6 + r * 3 + c) / 17.0 * 255.0);
                cr_assert_eq(px[Y * w + X], want, "image %u (%u,%u) at (%u,%u): %d, expected %d",
                             i, r, c, X, Y, px[Y * w + X], want);
            }
    /* Separators and the empty fourth cell are mid grey. */
    const uint32_t grey_at[][2] = { { 0, 0 }, { 4, 1 }, { 8, 6 }, { 2, 3 }, { 5, 4 }, { 7, 5 } };
    for (size_t k = 0; k < sizeof grey_at / sizeof grey_at[0]; k++)
        cr_assert_eq(px[grey_at[k][1] * w + grey_at[k][0]], FL_IMAGE_PAD_GREY, "(%u,%u)",
                     grey_at[k][0], grey_at[k][1]);
    free(px);
    free(path);
    remove_tree(dir);
}

Test(images, grid_clamps_values_and_fewer_images_than_columns)
{
    char *dir = make_tmpdir();
    char *path = fl_strfmt("%s/clamp.png", dir);
    const fl_real x[4] = { -0.5f, 1.7f, 0.5f, NAN };
    cr_assert_eq(fl_image_grid_png(path, x, 1, 2, 2, 8, 0), FL_OK, "%s", fl_err_msg());
    uint32_t w, h;
    int g;
    uint8_t *px = read_grey_png(path, &w, &h, &g);
    cr_assert_eq(w, 2); /* one image: 8 columns shrink to 1 */
    cr_assert_eq(h, 2);
    cr_assert_eq(px[0], 0);
    cr_assert_eq(px[1], 255);
    cr_assert_eq(px[2], 128);
    cr_assert_eq(px[3], 0);
    free(px);
    free(path);
    remove_tree(dir);
}

Test(images, pairs_put_each_reconstruction_under_its_original)
{
    char *dir = make_tmpdir();
    char *path = fl_strfmt("%s/pairs.png", dir);
    fl_real orig[18], recon[18];
    three_images(orig);
    for (int k = 0; k < 18; k++) recon[k] = 1 - orig[k];
    cr_assert_eq(fl_image_pairs_png(path, orig, recon, 3, 2, 3, 2, 1), FL_OK, "%s", fl_err_msg());
    uint32_t w, h;
    int g;
    uint8_t *px = read_grey_png(path, &w, &h, &g);
    cr_assert(g);
    cr_assert_eq(w, 9);
    cr_assert_eq(h, 14); /* 2 groups of 2*2 + 3*1 */
    for (uint32_t i = 0; i < 3; i++)
        for (uint32_t r = 0; r < 2; r++)
            for (uint32_t c = 0; c < 3; c++) {
                uint32_t X = 1 + (i % 2) * 4 + c, Y = 1 + (i / 2) * 7 + r;
                double v = (i * 6 + r * 3 + c) / 17.0;
                cr_assert_eq(px[Y * w + X], (int)lround(v * 255), "original %u", i);
                cr_assert_eq(px[(Y + 3) * w + X], (int)lround((1 - v) * 255),
                             "reconstruction %u", i);
            }
    /* The gap between the pairs of rows is two pixels of separator. */
    for (uint32_t X = 0; X < w; X++) {
        cr_assert_eq(px[6 * w + X], FL_IMAGE_PAD_GREY);
        cr_assert_eq(px[7 * w + X], FL_IMAGE_PAD_GREY);
    }
    free(px);
    free(path);
    remove_tree(dir);
}

Test(images, grid_errors)
{
    fl_real x[4] = { 0 };
    cr_assert_eq(fl_image_grid_png("/tmp/never.png", x, 0, 2, 2, 1, 0), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "/tmp/never.png");
    cr_assert_eq(fl_image_grid_png("/tmp/never.png", x, 1, 2, 2, 0, 0), FL_ERR_INVALID);
    cr_assert_eq(fl_image_pairs_png("/tmp/never.png", x, NULL, 1, 2, 2, 1, 0), FL_ERR_INVALID);
    /* 120002 pixels wide: too large, refused before any allocation. */
    cr_assert_eq(fl_image_grid_png("/tmp/never.png", x, 2, 1, 1, 2, 40000), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "larger than 65535");
    cr_assert_eq(access("/tmp/never.png", F_OK), -1);
    cr_assert_eq(fl_image_grid_png("/nonexistent/flowlab/g.png", x, 1, 2, 2, 1, 0), FL_ERR_IO);
    assert_contains(fl_err_msg(), "/nonexistent/flowlab/g.png");
}

/* ---- bytes that could once be dropped or cut without a word (issue 13) -- */

/* A gzip file followed by bytes that are not another gzip member: zlib's
 * gzread stops at the end of the member and ignores them, so whatever they
 * hold (more images, a second file glued on) would be lost unseen. */
static char *gz_with_tail(const char *dir, const char *name, const void *data, size_t n,
                          const char *tail)
{
    char *tmp = write_gz(dir, "member.gz", data, n);
    char *gz;
    size_t m;
    cr_assert_eq(fl_read_file(tmp, &gz, &m), FL_OK);
    size_t t = strlen(tail);
    char *all = malloc(m + t);
    memcpy(all, gz, m);
    memcpy(all + m, tail, t);
    char *path = write_bytes(dir, name, all, m + t);
    free(all);
    free(gz);
    free(tmp);
    return path;
}

Test(images, amat_gzip_with_bytes_after_the_stream)
{
    char *dir = make_tmpdir();
    char *text = amat_text(0, 20, 6, 1);
    char *path = gz_with_tail(dir, "tail.amat.gz", text, strlen(text), "0 1 0 1 0 1\n");
    fl_registry *r = reg();
    char *data = fl_strfmt("type = amat\ntrain = %s\nheight = 2\nwidth = 3", path);
    build_fails(r, data, FL_ERR_FORMAT, "tail.amat.gz", "after the end of the compressed data",
                NULL);
    fl_registry_free(r);
    free(data);
    free(text);
    free(path);
    remove_tree(dir);
}

Test(images, idx_gzip_with_bytes_after_the_stream)
{
    char *dir = make_tmpdir();
    size_t n;
    uint8_t *b = idx_bytes(0x803, 6, 3, 3, &n);
    char *path = gz_with_tail(dir, "tail-idx3.gz", b, n, "junk");
    fl_registry *r = reg();
    char *data = fl_strfmt("type = idx\ntrain_images = %s\nvalid_size = 1\n", path);
    build_fails(r, data, FL_ERR_FORMAT, "tail-idx3.gz", "after the end of the compressed data",
                NULL);
    fl_registry_free(r);
    free(data);
    free(b);
    free(path);
    remove_tree(dir);
}

Test(images, amat_nul_byte_names_line_and_value)
{
    static const char text[] = "0 1 0 1 0 1\n0 1 0\0 0 1\n";
    char *dir = make_tmpdir();
    char *path = write_bytes(dir, "nul.amat", text, sizeof text - 1);
    fl_registry *r = reg();
    char *data = fl_strfmt("type = amat\ntrain = %s\nheight = 2\nwidth = 3", path);
    build_fails(r, data, FL_ERR_FORMAT, "nul.amat: line 2: value 3 is '0\\x00'", NULL, NULL);
    fl_registry_free(r);
    free(data);
    free(path);
    remove_tree(dir);
}

/* Two gzip members one after the other (as `cat a.gz b.gz` makes) are one
 * file to zlib and to us: all their images load; bytes after the second
 * are refused as after one. */
Test(images, amat_gzip_of_two_members)
{
    char *dir = make_tmpdir();
    char *a = amat_text(0, 7, 6, 1), *b = amat_text(7, 5, 6, 1);
    char *pa = write_gz(dir, "a.gz", a, strlen(a)), *pb = write_gz(dir, "b.gz", b, strlen(b));
    char *ga, *gb;
    size_t na, nb;
    cr_assert_eq(fl_read_file(pa, &ga, &na), FL_OK);
    cr_assert_eq(fl_read_file(pb, &gb, &nb), FL_OK);
    char *both = malloc(na + nb + 4);
    memcpy(both, ga, na);
    memcpy(both + na, gb, nb);
    char *path = write_bytes(dir, "two.amat.gz", both, na + nb);
    fl_registry *r = reg();
    char *data = fl_strfmt("type = amat\ntrain = %s\nheight = 2\nwidth = 3", path);
    fl_experiment *e = build_ok(r, data, 1);
    cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 12);
    fl_real *x = read_rows(e, FL_SPLIT_TRAIN, (const uint64_t[]){ 11 }, 1);
    for (uint32_t j = 0; j < 6; j++) cr_assert_eq(x[j], (fl_real)bit(11, j));
    free(x);
    fl_experiment_free(e);
    free(data);
    memcpy(both + na + nb, "0 1\n", 4);
    char *tail = write_bytes(dir, "tail.amat.gz", both, na + nb + 4);
    data = fl_strfmt("type = amat\ntrain = %s\nheight = 2\nwidth = 3", tail);
    build_fails(r, data, FL_ERR_FORMAT, "tail.amat.gz: 4 bytes after the end of the compressed data",
                NULL, NULL);
    fl_registry_free(r);
    free(data);
    free(tail);
    free(path);
    free(both);
    free(ga);
    free(gb);
    free(pa);
    free(pb);
    free(a);
    free(b);
    remove_tree(dir);
}
