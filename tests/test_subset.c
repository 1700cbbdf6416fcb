/* test_subset.c - random evaluation subsets (tasks/subset.h) and the row
 * readers of `flowlab logprob` (tasks/rows.h: CSV, .npy). */
#include <math.h>

#include "common.h"
#include "tasks/rows.h"
#include "tasks/subset.h"

SUITE(subset);

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/flowlab-subset-XXXXXX");
    cr_assert(mkdtemp(dir));
}

/* Removes the flat scratch folder of make_dir. */
static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = fl_strfmt("%s/%s", dir, e->d_name);
        unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

static char *write_file(const char *name, const void *data, size_t n)
{
    char *p = fl_strfmt("%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
    return p;
}

/* Sorted, distinct, in range, the same on every call, nested (a smaller
 * subset of a split is inside a larger one) and not the first rows. */
Test(subset, indices_are_a_fixed_nested_uniform_subset)
{
    const uint64_t n = 1000;
    uint64_t a[300], b[300], c[100];
    cr_assert_eq(fl_subset_indices(n, 300, a), FL_OK);
    cr_assert_eq(fl_subset_indices(n, 300, b), FL_OK);
    cr_assert_eq(fl_subset_indices(n, 100, c), FL_OK);
    int first = 1;
    for (int i = 0; i < 300; i++) {
        cr_assert_lt(a[i], n);
        if (i) cr_assert_lt(a[i - 1], a[i], "not sorted and distinct at %d", i);
        cr_assert_eq(a[i], b[i]);
        first &= a[i] == (uint64_t)i;
    }
    cr_expect(!first);
    for (int i = 0, j = 0; i < 100; i++) {
        while (j < 300 && a[j] < c[i]) j++;
        cr_assert(j < 300 && a[j] == c[i], "index %llu of the 100-subset is not in the 300-subset",
                  (unsigned long long)c[i]);
    }
    /* another split size: another subset */
    uint64_t d[300];
    cr_assert_eq(fl_subset_indices(n + 1, 300, d), FL_OK);
    cr_expect_neq(memcmp(a, d, sizeof a), 0);
}

/* On an ordered split (values rising with the row) the random subset's mean
 * is within 3 standard errors of the full mean for several sizes, while
 * the first rows' mean is far off; the rows moved are the split's own. */
Test(subset, random_subset_of_an_ordered_split_is_unbiased)
{
    const uint64_t N = 10000;
    const uint32_t d = 2;
    fl_real *x = fl_alloc(N * d * sizeof(fl_real));
    for (uint64_t i = 0; i < N; i++) {
        x[i * d] = (fl_real)(i / 100.0);  /* 0 .. 99.99: mean 49.995 */
        x[i * d + 1] = (fl_real)i;
    }
    const double full = 49.995;
    const uint64_t sizes[] = { 50, 200, 1000, 3000 };
    for (int s = 0; s < 4; s++) {
        fl_real *y = fl_alloc(N * d * sizeof(fl_real));
        memcpy(y, x, N * d * sizeof(fl_real));
        uint64_t n = N, *idx = NULL;
        cr_assert_eq(fl_subset_apply(y, &n, d, sizes[s], 1, &idx), FL_OK);
        cr_assert_eq(n, sizes[s]);
        cr_assert(idx);
        double m = 0, m2 = 0;
        for (uint64_t i = 0; i < n; i++) {
            cr_assert_eq(y[i * d + 1], (fl_real)idx[i], "row %llu is not split row %llu",
                         (unsigned long long)i, (unsigned long long)idx[i]);
            m += y[i * d];
        }
        m /= (double)n;
        for (uint64_t i = 0; i < n; i++) m2 += (y[i * d] - m) * (y[i * d] - m);
        const double se = sqrt(m2 / (double)(n - 1) / (double)n);
        cr_expect_lt(fabs(m - full), 3 * se, "n = %llu: random mean %.3f, full %.3f, se %.3f",
                     (unsigned long long)n, m, full, se);
        free(idx);
        /* the first n rows: mean (n - 1) / 200, many standard errors away */
        uint64_t nf = N;
        memcpy(y, x, N * d * sizeof(fl_real));
        cr_assert_eq(fl_subset_apply(y, &nf, d, sizes[s], 0, &idx), FL_OK);
        cr_assert_null(idx);
        double mf = 0;
        for (uint64_t i = 0; i < nf; i++) mf += y[i * d];
        mf /= (double)nf;
        cr_expect_gt(fabs(mf - full), 10 * se, "n = %llu: first-n mean %.3f", (unsigned long long)nf,
                     mf);
        fl_free(y);
    }
    /* m >= n: the whole split, untouched */
    uint64_t n = 5, *idx = (uint64_t *)1;
    cr_assert_eq(fl_subset_apply(x, &n, d, 9, 1, &idx), FL_OK);
    cr_expect_eq(n, 5);
    cr_expect_null(idx);
    fl_free(x);
}

/* A .npy file: magic, version, header length, the header dict, data. */
static size_t npy(unsigned char *buf, int version, const char *descr, const char *order,
                  const char *shape, const void *data, size_t bytes)
{
    char dict[256];
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }",
                      descr, order, shape);
    size_t pre = version == 1 ? 10 : 12, hl = (size_t)dl + 1;
    while ((pre + hl) % 64) hl++;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)version;
    buf[7] = 0;
    if (version == 1) {
        buf[8] = (unsigned char)(hl & 255);
        buf[9] = (unsigned char)(hl >> 8);
    } else {
        for (int i = 0; i < 4; i++) buf[8 + i] = (unsigned char)(hl >> (8 * i));
    }
    memset(buf + pre, ' ', hl);
    memcpy(buf + pre, dict, (size_t)dl);
    buf[pre + hl - 1] = '\n';
    memcpy(buf + pre + hl, data, bytes);
    return pre + hl + bytes;
}

Test(subset, npy_reader_reads_f4_f8_u1_and_refuses_the_rest)
{
    make_dir();
    unsigned char buf[1024];
    const float f4[6] = { 1.5f, -2, 3, 4, 5, 6.25f };
    const double f8[3] = { 0.125, -1e3, 7 };
    const unsigned char u1[4] = { 0, 1, 128, 255 };
    fl_rows r;
    char *p = write_file("a.npy", buf, npy(buf, 1, "<f4", "False", "(3, 2)", f4, sizeof f4));
    cr_assert_eq(fl_rows_read(p, &r), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(r.n, 3);
    cr_expect_eq(r.dim, 2);
    for (int i = 0; i < 6; i++) cr_expect_eq(r.x[i], (fl_real)f4[i]);
    fl_rows_free(&r);
    free(p);
    p = write_file("b.npy", buf, npy(buf, 2, "<f8", "False", "(3,)", f8, sizeof f8));
    cr_assert_eq(fl_rows_read(p, &r), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(r.n, 3);
    cr_expect_eq(r.dim, 1);
    cr_expect_eq(r.x[1], (fl_real)-1e3);
    fl_rows_free(&r);
    free(p);
    p = write_file("c.npy", buf, npy(buf, 1, "|u1", "False", "(1, 4)", u1, sizeof u1));
    cr_assert_eq(fl_rows_read(p, &r), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(r.x[3], 255);
    cr_expect(r.bytes);
    fl_rows_free(&r);
    free(p);
    struct {
        const char *descr, *order, *shape;
        size_t bytes;
        const char *msg;
    } bad[] = {
        { ">f4", "False", "(3, 2)", 24, "dtype '>f4'" },
        { "<i8", "False", "(3,)", 24, "dtype '<i8'" },
        { "<f4", "True", "(3, 2)", 24, "Fortran order" },
        { "<f4", "False", "(3, 2)", 20, "20 bytes of data, its header (shape 3 x 2) says 24" },
        { "<f4", "False", "(2, 3, 1)", 24, "more than 2 dimensions" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = write_file("bad.npy", buf,
                       npy(buf, 1, bad[i].descr, bad[i].order, bad[i].shape, f4, bad[i].bytes));
        cr_expect_eq(fl_rows_read(p, &r), FL_ERR_FORMAT, "case %zu read", i);
        assert_contains(fl_err_msg(), bad[i].msg);
        assert_contains(fl_err_msg(), "bad.npy");
        free(p);
    }
    static const char zip[] = "PK\x03\x04 not numpy";
    p = write_file("magic.npy", zip, sizeof zip - 1);
    cr_expect_eq(fl_rows_read(p, &r), FL_ERR_FORMAT);
    assert_contains(fl_err_msg(), "not a .npy file");
    free(p);
    p = fl_strfmt("%s/missing.npy", dir);
    cr_expect_eq(fl_rows_read(p, &r), FL_ERR_IO);
    free(p);
    remove_dir();
}

Test(subset, csv_reader_takes_a_header_and_names_bad_lines)
{
    make_dir();
    const char ok[] = "x0,x1\n1, 2.5\n\n-3,4e-1\r\n";
    char *p = write_file("ok.csv", ok, strlen(ok));
    fl_rows r;
    cr_assert_eq(fl_rows_read(p, &r), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(r.n, 2);
    cr_expect_eq(r.dim, 2);
    cr_expect_eq(r.x[1], (fl_real)2.5);
    cr_expect_eq(r.x[3], (fl_real)0.4);
    fl_rows_free(&r);
    free(p);
    const char ragged[] = "1,2\n3,4\n5\n";
    p = write_file("ragged.csv", ragged, strlen(ragged));
    cr_expect_eq(fl_rows_read(p, &r), FL_ERR_FORMAT);
    assert_contains(fl_err_msg(), "ragged.csv:3: 1 values, the rows before have 2");
    free(p);
    const char word[] = "1,2\n3,four\n";
    p = write_file("word.csv", word, strlen(word));
    cr_expect_eq(fl_rows_read(p, &r), FL_ERR_FORMAT);
    assert_contains(fl_err_msg(), "word.csv:2: column 2 is not a number");
    free(p);
    p = write_file("empty.csv", "a,b\n", 4);
    cr_expect_eq(fl_rows_read(p, &r), FL_ERR_FORMAT);
    assert_contains(fl_err_msg(), "no rows of numbers");
    free(p);
    remove_dir();
}
