/* test_output.c - the output modules every run file goes through: the JSON
 * writer (layouts, number formats, escaping, misuse) and reader (round
 * trip, malformed text), and metrics.csv's writer, reader and resume
 * helper (round trip, missing column, truncated file). */
#include <math.h>

#include "common.h"
#include "output/json.h"
#include "output/metrics.h"

SUITE(json_writer);
SUITE(json_reader);
SUITE(metrics);

/* ---- JSON writer -------------------------------------------------------- */

Test(json_writer, block_object_with_number_formats)
{
    fl_buf b = { 0 };
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_str(&w, "task", "density");
    fl_json_key_num(&w, "test_nll", 1.0 / 3.0, "%.6f");
    fl_json_key_num(&w, "ratio", 1.0 / 3.0, "%.9g");
    fl_json_key_num(&w, "thr", 0.01, "%g");
    fl_json_key_num(&w, "rate", 1234.56, "%.1f");
    fl_json_key_uint(&w, "steps", 18446744073709551615ull);
    fl_json_key_int(&w, "valid_k", -5);
    fl_json_key_bool(&w, "ok", 1);
    fl_json_key_null(&w, "none");
    cr_assert_eq(fl_json_end(&w), FL_OK, "%s", fl_err_msg());
    cr_assert_str_eq(b.data, "{\n  \"task\": \"density\",\n  \"test_nll\": 0.333333,\n"
                             "  \"ratio\": 0.333333333,\n  \"thr\": 0.01,\n  \"rate\": 1234.6,\n"
                             "  \"steps\": 18446744073709551615,\n  \"valid_k\": -5,\n"
                             "  \"ok\": true,\n  \"none\": null\n}\n");
    fl_buf_free(&b);
}

Test(json_writer, non_finite_numbers_are_null)
{
    fl_buf b = { 0 };
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_num(&w, "a", NAN, "%.6f");
    fl_json_key_num(&w, "b", INFINITY, "%.9g");
    fl_json_key_num(&w, "c", -INFINITY, NULL);
    fl_json_key_num(&w, "d", 0.1, NULL); /* %.17g: reads back exactly */
    cr_assert_eq(fl_json_end(&w), FL_OK);
    cr_assert_str_eq(b.data, "{\n  \"a\": null,\n  \"b\": null,\n  \"c\": null,\n"
                             "  \"d\": 0.10000000000000001\n}\n");
    fl_buf_free(&b);
}

Test(json_writer, escaping_of_keys_and_strings)
{
    fl_buf b = { 0 };
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_str(&w, "q\"k", "a\\b\n\t\x01\x7f caf\xc3\xa9");
    fl_json_key_str(&w, "nul", NULL);
    cr_assert_eq(fl_json_end(&w), FL_OK);
    cr_assert_str_eq(b.data, "{\n  \"q\\\"k\": \"a\\\\b\\n\\t\\u0001\\u007f caf\xc3\xa9\",\n"
                             "  \"nul\": \"\"\n}\n");
    fl_buf_free(&b);
}

/* The layouts of provenance.json (a block array of inline objects, [] when
 * empty) and gradvar.json (inline objects broken over lines, an inline
 * array of one item per line, [ ] when empty). */
Test(json_writer, nested_layouts)
{
    fl_buf b = { 0 };
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_array(&w, "none", FL_JSON_BLOCK);
    fl_json_close(&w);
    fl_json_key_array(&w, "rows", FL_JSON_BLOCK);
    for (int i = 0; i < 2; i++) {
        fl_json_key_object(&w, NULL, FL_JSON_INLINE);
        fl_json_key_int(&w, "i", i);
        fl_json_key_bool(&w, "ok", i);
        fl_json_break(&w);
        fl_json_key_array(&w, "items", FL_JSON_INLINE);
        for (int k = 0; k < i; k++) {
            fl_json_break(&w);
            fl_json_key_num(&w, NULL, 0.5, "%.9g");
        }
        fl_json_close(&w);
        fl_json_close(&w);
    }
    fl_json_close(&w);
    fl_json_key_object(&w, "empty", FL_JSON_INLINE);
    fl_json_close(&w);
    cr_assert_eq(fl_json_end(&w), FL_OK, "%s", fl_err_msg());
    cr_assert_str_eq(b.data, "{\n  \"none\": [],\n  \"rows\": [\n"
                             "    { \"i\": 0, \"ok\": false,\n      \"items\": [ ] },\n"
                             "    { \"i\": 1, \"ok\": true,\n      \"items\": [\n        0.5 ] }\n"
                             "  ],\n  \"empty\": { }\n}\n");
    fl_buf_free(&b);
}

Test(json_writer, end_closes_what_is_open_and_appends)
{
    fl_buf b = { 0 };
    fl_buf_printf(&b, "x");
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_object(&w, "o", FL_JSON_BLOCK);
    fl_json_key_int(&w, "a", 1);
    cr_assert_eq(fl_json_end(&w), FL_OK);
    cr_assert_str_eq(b.data, "x{\n  \"o\": {\n    \"a\": 1\n  }\n}\n");
    fl_buf_free(&b);
}

Test(json_writer, misuse_is_reported_at_the_end)
{
    fl_buf b = { 0 };
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_int(&w, NULL, 1); /* no key inside an object */
    cr_assert_eq(fl_json_end(&w), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "misused");
    fl_buf_free(&b);

    fl_json_begin(&w, &b);
    fl_json_key_array(&w, "a", FL_JSON_INLINE);
    fl_json_key_int(&w, "k", 1); /* a key inside an array */
    cr_assert_eq(fl_json_end(&w), FL_ERR_INVALID);
    fl_buf_free(&b);

    fl_json_begin(&w, &b);
    fl_json_close(&w); /* the top-level object is fl_json_end's */
    cr_assert_eq(fl_json_end(&w), FL_ERR_INVALID);
    fl_buf_free(&b);

    fl_json_begin(&w, &b);
    for (int i = 0; i < FL_JSON_MAX_DEPTH + 2; i++) fl_json_key_object(&w, "o", FL_JSON_INLINE);
    cr_assert_eq(fl_json_end(&w), FL_ERR_INVALID);
    fl_buf_free(&b);
}

/* ---- JSON reader -------------------------------------------------------- */

Test(json_reader, round_trip_of_the_writer)
{
    const double vals[] = { 0.25, -1e-300, 123456789.123, 3.0, -0.0 };
    const char *fmts[] = { "%.6f", NULL, "%.9g", "%g", NULL };
    fl_buf b = { 0 };
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_str(&w, "task", "vae");
    char key[32];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "f\"%d\n", i);
        fl_json_key_num(&w, key, vals[i], fmts[i]);
        fl_json_key_num(&w, "skipped", NAN, "%.6f"); /* null: not a number field */
    }
    fl_json_key_array(&w, "rows", FL_JSON_BLOCK);
    fl_json_key_object(&w, NULL, FL_JSON_INLINE);
    fl_json_key_num(&w, "inner", 1, "%g"); /* nested: not a top-level field */
    fl_json_close(&w);
    fl_json_close(&w);
    fl_json_key_uint(&w, "steps", 200);
    cr_assert_eq(fl_json_end(&w), FL_OK);

    fl_json_num *v = NULL;
    size_t n = 0;
    cr_assert_eq(fl_json_numbers(b.data, &v, &n), FL_OK, "%s\n%s", fl_err_msg(), b.data);
    cr_assert_eq(n, 6, "%s", b.data);
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "f\"%d\n", i);
        cr_assert_str_eq(v[i].name, key);
    }
    cr_assert_eq(v[0].v, 0.25);
    cr_assert_eq(v[1].v, -1e-300); /* %.17g reads back exactly */
    cr_assert_eq(v[2].v, 123456789.0);
    cr_assert_eq(v[3].v, 3.0);
    cr_assert_str_eq(v[5].name, "steps");
    cr_assert_eq(v[5].v, 200);
    fl_json_numbers_free(v, n);
    fl_buf_free(&b);
}

Test(json_reader, malformed_input_is_a_format_error)
{
    static const char *const bad[] = {
        "",            "   ",          "[1]",            "{\"a\" 1}",     "{\"a\": 1",
        "{\"a\": }",    "{\"a\": [1, 2}", "{a: 1}",        "{\"a\": \"x}",
        "{\"a\\",      "{\"a\": 1 \"b\": 2}", "{\"\\uZZZZ\": 1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fl_json_num *v = (fl_json_num *)1;
        size_t n = 9;
        fl_err_clear();
        cr_assert_eq(fl_json_numbers(bad[i], &v, &n), FL_ERR_FORMAT, "accepted: %s", bad[i]);
        cr_assert_null(v);
        cr_assert_eq(n, 0);
        assert_contains(fl_err_msg(), "malformed JSON");
    }
    fl_json_numbers_free(NULL, 0);
}

/* ---- metrics ------------------------------------------------------------ */

static const fl_metrics_col cols[] = {
    { "train_nll", "%.6f" },
    { "lr", "%.6g" },
    { "train_seconds", "%.3f" },
};

Test(metrics, writer_layout_and_round_trip)
{
    fl_metrics m;
    fl_metrics_init(&m, cols, 3);
    fl_metrics_row(&m, 100, (double[]){ 1.5, 0.001, 2.25 });
    fl_metrics_row(&m, 200, (double[]){ NAN, 1e-4, INFINITY }); /* no value: empty */
    cr_assert_not(m.text.failed);
    cr_assert_str_eq(m.text.data, "step,train_nll,lr,train_seconds\n"
                                  "100,1.500000,0.001,2.250\n"
                                  "200,,0.0001,\n");
    fl_metrics_table t;
    cr_assert_eq(fl_metrics_parse(m.text.data, m.text.len, "m", &t), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(t.n_cols, 4);
    cr_assert_eq(t.n_rows, 2);
    cr_assert_str_eq(t.names[0], "step");
    cr_assert_str_eq(t.names[3], "train_seconds");
    const double *step = fl_metrics_column(&t, "step"), *tr = fl_metrics_column(&t, "train_nll"),
                 *lr = fl_metrics_column(&t, "lr"), *sec = fl_metrics_column(&t, "train_seconds");
    cr_assert(step && tr && lr && sec);
    cr_assert_eq(step[0], 100);
    cr_assert_eq(step[1], 200);
    cr_assert_eq(tr[0], 1.5);
    cr_assert(isnan(tr[1]));
    cr_assert_eq(lr[1], 1e-4);
    cr_assert(isnan(sec[1]));
    cr_assert_eq(fl_metrics_lookup(m.text.data, m.text.len, 100, "train_seconds"), 2.25);
    cr_assert(isnan(fl_metrics_lookup(m.text.data, m.text.len, 150, "lr")));
    cr_assert(isnan(fl_metrics_lookup(m.text.data, m.text.len, 100, "nope")));
    fl_metrics_table_free(&t);
    fl_metrics_table_free(&t); /* an empty table frees again */
    fl_metrics_free(&m);
}

Test(metrics, save_writes_the_file)
{
    char dir[] = "/tmp/fl_metrics_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    fl_metrics m;
    fl_metrics_init(&m, cols, 3);
    fl_metrics_row(&m, 1, (double[]){ 1, 2, 3 });
    cr_assert_eq(fl_metrics_save(&m, dir), FL_OK, "%s", fl_err_msg());
    char *path = fl_strfmt("%s/metrics.csv", dir);
    fl_metrics_table t;
    cr_assert_eq(fl_metrics_read(path, &t), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(t.n_rows, 1);
    cr_assert_eq(fl_metrics_column(&t, "lr")[0], 2);
    fl_metrics_table_free(&t);
    unlink(path);
    rmdir(dir);
    cr_assert_eq(fl_metrics_read(path, &t), FL_ERR_IO);
    free(path);
    fl_metrics_free(&m);
}

Test(metrics, missing_column_and_missing_step)
{
    const char *text = "step,a\n1,2\n";
    fl_metrics_table t;
    cr_assert_eq(fl_metrics_parse(text, strlen(text), "m.csv", &t), FL_OK);
    cr_assert_null(fl_metrics_column(&t, "b"));
    cr_assert_eq(fl_metrics_find(&t, "b"), -1);
    cr_assert_eq(fl_metrics_find(&t, "a"), 1);
    fl_metrics_table_free(&t);

    const char *nostep = "epoch,a\n1,2\n";
    cr_assert_eq(fl_metrics_parse(nostep, strlen(nostep), "m.csv", &t), FL_ERR_FORMAT);
    assert_contains(fl_err_msg(), "m.csv: no column 'step'");
    cr_assert_eq(t.n_cols, 0);
    cr_assert_eq(fl_metrics_parse("", 0, "m.csv", &t), FL_ERR_FORMAT);
    cr_assert_eq(fl_metrics_parse(NULL, 0, "m.csv", &t), FL_ERR_FORMAT);
}

/* A file cut short (no final newline, a row cut mid-way), blank lines,
 * CRLF line ends, rows without a number for step and unparsable fields. */
Test(metrics, truncated_and_untidy_files)
{
    const char *text = "step,a,b\r\n"
                       "1,0.5,x\r\n"
                       "\n"
                       "oops,1,2\n"
                       ",3,4\n"
                       "2,1e3 ,7\n"
                       "3,2";
    fl_metrics_table t;
    cr_assert_eq(fl_metrics_parse(text, strlen(text), "m.csv", &t), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(t.n_rows, 3);
    cr_assert_str_eq(t.names[2], "b");
    const double *s = fl_metrics_column(&t, "step"), *a = fl_metrics_column(&t, "a"),
                 *b = fl_metrics_column(&t, "b");
    cr_assert_eq(s[0], 1);
    cr_assert_eq(a[0], 0.5);
    cr_assert(isnan(b[0]));   /* not a number */
    cr_assert_eq(s[1], 2);
    cr_assert(isnan(a[1]));   /* trailing junk */
    cr_assert_eq(b[1], 7);
    cr_assert_eq(s[2], 3);
    cr_assert_eq(a[2], 2);
    cr_assert(isnan(b[2]));   /* cut off */
    fl_metrics_table_free(&t);
    /* a header cut before its step column */
    cr_assert_eq(fl_metrics_parse("ste", 3, "m.csv", &t), FL_ERR_FORMAT);
}

/* Resume keeps the header and the rows up to the checkpoint's step,
 * verbatim, and the last kept row's train_seconds. */
Test(metrics, keep_rows_up_to_the_checkpoint)
{
    const char *old = "step,train_nll,lr,train_seconds\n"
                      "100,1.500000,0.001,2.250\n"
                      "200,1.250000,0.001,4.500\n"
                      "300,1.000000,0.001,6.750";
    fl_buf b = { 0 };
    double sec = -1;
    fl_metrics_keep(&b, old, strlen(old), 200, &sec);
    cr_assert_str_eq(b.data, "step,train_nll,lr,train_seconds\n"
                             "100,1.500000,0.001,2.250\n"
                             "200,1.250000,0.001,4.500\n");
    cr_assert_eq(sec, 4.5);
    fl_buf_free(&b);
    fl_metrics_keep(&b, old, strlen(old), 300, &sec); /* the cut last row gets its newline */
    cr_assert_eq(sec, 6.75);
    cr_assert_eq(b.data[b.len - 1], '\n');
    fl_buf_free(&b);
    fl_metrics_keep(&b, old, strlen(old), 50, &sec);
    cr_assert_str_eq(b.data, "step,train_nll,lr,train_seconds\n");
    cr_assert_eq(sec, 0);
    fl_buf_free(&b);
    fl_metrics_keep(&b, "junk\n1,2\n", 9, 50, &sec); /* no step column: a fresh file */
    cr_assert_eq(b.len, 0);
    fl_buf_free(&b);

    /* rows then go on with the writer */
    fl_metrics m;
    fl_metrics_init(&m, cols, 3);
    fl_metrics_keep(&m.text, old, strlen(old), 100, &sec);
    fl_metrics_row(&m, 200, (double[]){ 2, 0.01, 9 });
    cr_assert_str_eq(m.text.data, "step,train_nll,lr,train_seconds\n"
                                  "100,1.500000,0.001,2.250\n"
                                  "200,2.000000,0.01,9.000\n");
    fl_metrics_free(&m);
}
