/* test_data.c - the CSV data set: parsing, splits, standardisation, the
 * errors a researcher's own file can trigger, and a model trained on it. */
#include <math.h>

#include "common.h"
#include "tasks/task_density.h"

SUITE(data);

static char *write_file(const char *dir, const char *name, const char *text)
{
    char *path = fl_strfmt("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* 1,000 rows of a correlated 3-D Gaussian, with a header and a comment. */
static char *gaussian_csv(const char *dir)
{
    fl_buf b = { 0 };
    fl_buf_printf(&b, "# three columns\nx,y,z\n");
    fl_rng_key k = fl_rng_key_make(7, "csv-test");
    for (int i = 0; i < 1000; i++) {
        fl_real z[3];
        fl_rng_normal(k, (uint64_t)i, 0, 3, z);
        fl_buf_printf(&b, "%.6f, %.6f, %.6f\n", 10 + 2 * z[0], 2 * z[0] + 0.5 * z[1], -3 + z[2]);
    }
    char *p = write_file(dir, "gauss.csv", b.data);
    fl_buf_free(&b);
    return p;
}

static fl_status build(const fl_registry *r, const char *path, const char *extra,
                       fl_experiment **e)
{
    char *text = fl_strfmt("[data]\ntype = csv\npath = %s\n%s\n"
                           "[flow.1]\ntype = affine-coupling\nrepeat = 4\nhidden = 32,32\n"
                           "[train]\nsteps = 300\nbatch = 100\neval_every = 0\n"
                           "[eval]\nbatch = 500\n",
                           path, extra);
    fl_status st = experiment_from_text(r, "csv-test.ini", text, NULL, e);
    free(text);
    return st;
}

Test(data, splits_standardises_and_trains)
{
    fl_runtime_init();
    char *dir = make_tmpdir();
    char *path = gaussian_csv(dir);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e;
    cr_assert_eq(build(r, path, "", &e), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(e->info.dim, 3);
    cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 800);
    cr_assert_eq(e->info.n[FL_SPLIT_VALID], 100);
    cr_assert_eq(e->info.n[FL_SPLIT_TEST], 100);
    /* The training split reads back standardised. */
    fl_real rows[800 * 3];
    uint64_t idx[800];
    for (int i = 0; i < 800; i++) idx[i] = (uint64_t)i;
    cr_assert_eq(e->dcls->read(e->dself, FL_SPLIT_TRAIN, idx, 800, rows), FL_OK);
    for (int j = 0; j < 3; j++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < 800; i++) {
            s += rows[i * 3 + j];
            s2 += (double)rows[i * 3 + j] * rows[i * 3 + j];
        }
        cr_assert_float_eq(s / 800, 0.0, 1e-4, "column %d mean %g", j, s / 800);
        cr_assert_float_eq(s2 / 800, 1.0, 1e-3, "column %d variance %g", j, s2 / 800);
    }
    /* Trains; the standardised Gaussian has entropy about 3.0 nats with a
     * correlation of 0.97 between x and y: a flow must beat the 4.26 of
     * an independent standard normal. */
    fl_density_result res;
    cr_assert_eq(fl_density_train(e, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_assert(isfinite(res.test_nll));
    cr_assert_lt(res.test_nll, 3.9, "test NLL %g", res.test_nll);
    fl_experiment_free(e);
    fl_registry_free(r);
    remove_tree(dir);
    free(path);
}

Test(data, separate_files_and_the_same_split_for_every_seed)
{
    char *dir = make_tmpdir();
    char *path = gaussian_csv(dir);
    char *test = write_file(dir, "test.csv", "1,2,3\n4,5,6\n");
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e;
    char *extra = fl_strfmt("test_path = %s\nvalid_fraction = 0.2", test);
    cr_assert_eq(build(r, path, extra, &e), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(e->info.n[FL_SPLIT_TEST], 2);
    cr_assert_eq(e->info.n[FL_SPLIT_VALID], 200);
    cr_assert_eq(e->info.n[FL_SPLIT_TRAIN], 800);
    fl_experiment_free(e);
    free(extra);
    remove_tree(dir);
    free(path);
    free(test);
    fl_registry_free(r);
}

/* Each bad file is an error naming the file and the line. */
static void expect_error(const char *text, const char *needle1, const char *needle2)
{
    char *dir = make_tmpdir();
    char *path = write_file(dir, "bad.csv", text);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    fl_status st = build(r, path, "", &e);
    cr_assert_neq(st, FL_OK, "a bad file was accepted: %s", text);
    assert_contains(fl_err_msg(), "bad.csv");
    assert_contains(fl_err_msg(), needle1);
    if (needle2) assert_contains(fl_err_msg(), needle2);
    fl_registry_free(r);
    remove_tree(dir);
    free(path);
}

Test(data, a_field_that_is_not_a_number)
{
    expect_error("a,b\n1,2\n3,x\n", "bad.csv:3", "field 2 is not a number");
}

Test(data, a_row_with_too_few_fields)
{
    expect_error("1,2,3\n4,5,6\n7,8\n", "bad.csv:3", "2 fields, expected 3");
}

Test(data, a_file_without_rows)
{
    expect_error("# nothing\nx,y\n", "no data rows", NULL);
}

Test(data, a_missing_file)
{
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    cr_assert_eq(build(r, "/nonexistent/flowlab/data.csv", "", &e), FL_ERR_IO);
    assert_contains(fl_err_msg(), "cannot open /nonexistent/flowlab/data.csv");
    fl_registry_free(r);
}

Test(data, fractions_that_leave_no_training_rows)
{
    char *dir = make_tmpdir();
    char *path = write_file(dir, "small.csv", "1\n2\n3\n4\n");
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    fl_status st = build(r, path, "valid_fraction = 0.5\ntest_fraction = 0.5", &e);
    cr_assert_neq(st, FL_OK);
    assert_contains(fl_err_msg(), "none for training");
    fl_registry_free(r);
    remove_tree(dir);
    free(path);
}

/* ---- values once loaded changed without a word (issue 13) --------------- */

/* As expect_error, for `n` bytes of `bytes` (which may hold a NUL). */
static void expect_error_bytes(const char *bytes, size_t n, const char *needle)
{
    char *dir = make_tmpdir();
    char *path = fl_strfmt("%s/bad.csv", dir);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    cr_assert_neq(build(r, path, "", &e), FL_OK, "a bad file was accepted");
    assert_contains(fl_err_msg(), needle);
    fl_registry_free(r);
    remove_tree(dir);
    free(path);
}

Test(data, a_nul_byte_names_line_and_field)
{
    /* once: line 2 read as "4,5" and refused for its field count, or,
     * with the NUL after the last field, loaded short of nothing */
    static const char a[] = "1,2,3\n4,5\0,6\n";
    expect_error_bytes(a, sizeof a - 1, "bad.csv:2: field 2 contains a NUL byte");
    static const char b[] = "1,2\n3, \0 4\n5,6\n";
    expect_error_bytes(b, sizeof b - 1, "bad.csv:2: field 2 contains a NUL byte");
    static const char c[] = "1,2\n\0\n";
    expect_error_bytes(c, sizeof c - 1, "bad.csv:2: field 1 contains a NUL byte");
}

Test(data, a_value_too_large_for_fl_real_names_line_and_field)
{
    /* 1e39 overflows float; 1e309 overflows double too */
    const char *big = sizeof(fl_real) == sizeof(float) ? "1e39" : "1e309";
    char *text = fl_strfmt("x,y\n1,2\n3,-%s\n", big);
    expect_error(text, "bad.csv:3: field 2 is too large for fl_real", FL_REAL_NAME);
    free(text);
    text = fl_strfmt("%s,2\n1,2\n", big); /* not a header either */
    expect_error(text, "bad.csv:1: field 1 is too large for fl_real", NULL);
    free(text);
}

Test(data, an_underflowing_value_is_rounded_not_refused)
{
    char *dir = make_tmpdir();
    fl_buf b = { 0 };
    /* not on the first line, which would pass for a header when refused */
    for (int i = 0; i < 200; i++) fl_buf_printf(&b, "%s,%d\n", i == 5 ? "1e-400" : "1", 2 * i);
    char *path = write_file(dir, "tiny.csv", b.data);
    fl_buf_free(&b);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    cr_assert_eq(build(r, path, "", &e), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    fl_registry_free(r);
    remove_tree(dir);
    free(path);
}

/* Issue 13: values that fit fl_real raw may not once standardised. A
 * nearly constant training column (one value 1e-30 among zeros: standard
 * deviation about 1e-31) puts a test value of 1e10 at 1e41 standard
 * deviations, past float (for double: 1e-150, whose square still is a
 * double, and 1e200): refused, naming the file, line, field and the
 * column's statistics; it once became infinite. */
Test(data, a_value_that_overflows_once_standardised_names_file_line_and_column)
{
    const int flt = sizeof(fl_real) == sizeof(float);
    const char *tiny = flt ? "1e-30" : "1e-150";
    char *dir = make_tmpdir();
    fl_buf b = { 0 };
    for (int i = 0; i < 100; i++) fl_buf_printf(&b, "%d,%s\n", i, i == 7 ? tiny : "0");
    char *path = write_file(dir, "train.csv", b.data);
    fl_buf_free(&b);
    char *test = write_file(dir, "test.csv", flt ? "x,y\n5,1e10\n" : "x,y\n5,1e200\n");
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    char *extra = fl_strfmt("test_path = %s\nvalid_fraction = 0", test);
    cr_assert_eq(build(r, path, extra, &e), FL_ERR_FORMAT, "accepted: %s", fl_err_msg());
    assert_contains(fl_err_msg(), flt ? "test.csv:2: field 2 (1e+10) standardises to"
                                      : "test.csv:2: field 2 (1e+200) standardises to");
    assert_contains(fl_err_msg(), "too large for fl_real (" FL_REAL_NAME);
    assert_contains(fl_err_msg(), "the training rows' column 2 has mean");
    /* without standardisation the same files load */
    free(extra);
    extra = fl_strfmt("test_path = %s\nvalid_fraction = 0\nstandardize = false", test);
    cr_assert_eq(build(r, path, extra, &e), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    free(extra);
    free(test);
    free(path);
    fl_registry_free(r);
    remove_tree(dir);
}

/* A zero-variance (constant) training column is centred, not scaled (its
 * standard deviation is taken as 1, docs/reliability.md): the training
 * rows read 0 there, a test value its distance from the constant. */
Test(data, a_constant_column_is_centred_not_scaled)
{
    char *dir = make_tmpdir();
    fl_buf b = { 0 };
    for (int i = 0; i < 100; i++) fl_buf_printf(&b, "%d,7\n", i);
    char *path = write_file(dir, "train.csv", b.data);
    fl_buf_free(&b);
    char *test = write_file(dir, "test.csv", "5,9\n");
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    char *extra = fl_strfmt("test_path = %s\nvalid_fraction = 0", test);
    cr_assert_eq(build(r, path, extra, &e), FL_OK, "%s", fl_err_msg());
    fl_real row[2];
    uint64_t i0 = 0;
    cr_assert_eq(e->dcls->read(e->dself, FL_SPLIT_TRAIN, &i0, 1, row), FL_OK);
    cr_assert_eq(row[1], 0);
    cr_assert_eq(e->dcls->read(e->dself, FL_SPLIT_TEST, &i0, 1, row), FL_OK);
    cr_assert_eq(row[1], 2, "test value %g", (double)row[1]);
    fl_experiment_free(e);
    free(extra);
    free(test);
    free(path);
    fl_registry_free(r);
    remove_tree(dir);
}

/* In the double build values up to DBL_MAX load, and their sum overflows
 * double: the column is named. In the float build the largest values
 * fl_real holds are summed in double without overflow, and load. */
Test(data, a_column_whose_statistics_overflow_is_named)
{
    if (sizeof(fl_real) == sizeof(double)) {
        expect_error("1,1e308\n2,1.5e308\n3,1.7e308\n", "bad.csv: column 2: its mean or "
                     "standard deviation overflows double", NULL);
        return;
    }
    char *dir = make_tmpdir();
    fl_buf b = { 0 };
    for (int i = 0; i < 200; i++) fl_buf_printf(&b, "%d,%s\n", i, i % 2 ? "3.4e38" : "-3.4e38");
    char *path = write_file(dir, "big.csv", b.data);
    fl_buf_free(&b);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    cr_assert_eq(build(r, path, "", &e), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    fl_registry_free(r);
    remove_tree(dir);
    free(path);
}
