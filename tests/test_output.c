/* test_output.c - the output modules every run file goes through: the JSON
 * writer (layouts, number formats, escaping, misuse) and reader (round
 * trip, malformed text), and metrics.csv's writer, reader and resume
 * helper (round trip, missing column, truncated file); and that both
 * reproduce, byte for byte, the files the trainers still print by hand. */
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

/* ---- the files the trainers still print by hand -------------------------- */

/* The writers reproduce, byte for byte, today's hand-printed result.json of
 * each task, eval.json and a metrics row of each task (the format strings
 * below are copied from tasks/task_*.c), so moving those call sites onto
 * them changes no byte. */

static const double X = 1.0 / 3.0, Y = -1234.56789, Z = 2.5e-7;

Test(json_writer, reproduces_density_result_json)
{
    fl_buf old = { 0 }, b = { 0 };
    fl_buf_printf(&old,
                  "{\n  \"task\": \"density\",\n  \"data\": \"%s\",\n  \"test_nll\": %.6f,\n"
                  "  \"test_nll_se\": %.6f,\n  \"test_rows\": %llu,\n  \"train_nll\": %.6f,\n"
                  "  \"steps\": %llu,\n  \"train_seconds\": %.3f,\n  \"steps_per_second\": "
                  "%.1f,\n  \"parameters\": %zu\n}\n",
                  "moons", X, Z, 1000ull, Y, 2000ull, X, Y, (size_t)2568);
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_str(&w, "task", "density");
    fl_json_key_str(&w, "data", "moons");
    fl_json_key_num(&w, "test_nll", X, "%.6f");
    fl_json_key_num(&w, "test_nll_se", Z, "%.6f");
    fl_json_key_uint(&w, "test_rows", 1000);
    fl_json_key_num(&w, "train_nll", Y, "%.6f");
    fl_json_key_uint(&w, "steps", 2000);
    fl_json_key_num(&w, "train_seconds", X, "%.3f");
    fl_json_key_num(&w, "steps_per_second", Y, "%.1f");
    fl_json_key_uint(&w, "parameters", 2568);
    cr_assert_eq(fl_json_end(&w), FL_OK);
    cr_assert_str_eq(b.data, old.data);
    fl_buf_free(&old);
    fl_buf_free(&b);
}

Test(json_writer, reproduces_vae_result_and_eval_json)
{
    for (int with_eval = 0; with_eval < 2; with_eval++) {
        fl_buf old = { 0 }, b = { 0 };
        fl_buf_printf(&old,
                      "{\n  \"task\": \"vae\",\n  \"data\": \"%s\",\n  \"estimator\": \"%s\",\n"
                      "  \"k\": %u,\n  \"train_bound\": %.6f,\n  \"valid_elbo\": %.6f,\n"
                      "  \"valid_iwae\": %.6f,\n  \"valid_k\": %lld,\n  \"steps\": %llu,\n"
                      "  \"train_seconds\": %.3f,\n  \"examples_per_second\": %.1f,\n"
                      "  \"parameters\": %zu",
                      "binarized_mnist", "iwae", 5u, Y, X, Y, 5000ll, 200ull, X, Y, (size_t)7);
        if (with_eval)
            fl_buf_printf(&old,
                          ",\n  \"test_k\": %llu,\n  \"test_points\": %llu,\n"
                          "  \"test_log_likelihood\": %.6f,\n  \"test_log_likelihood_se\": %.6f,\n"
                          "  \"test_elbo\": %.6f,\n  \"test_kl\": %.6f,\n  \"test_ess\": %.3f,\n"
                          "  \"active_units\": %u,\n  \"eval_seconds\": %.3f",
                          500ull, 100ull, Y, Z, Y, X, X, 13u, X);
        fl_buf_printf(&old, "\n}\n");
        fl_json w;
        fl_json_begin(&w, &b);
        fl_json_key_str(&w, "task", "vae");
        fl_json_key_str(&w, "data", "binarized_mnist");
        fl_json_key_str(&w, "estimator", "iwae");
        fl_json_key_uint(&w, "k", 5);
        fl_json_key_num(&w, "train_bound", Y, "%.6f");
        fl_json_key_num(&w, "valid_elbo", X, "%.6f");
        fl_json_key_num(&w, "valid_iwae", Y, "%.6f");
        fl_json_key_int(&w, "valid_k", 5000);
        fl_json_key_uint(&w, "steps", 200);
        fl_json_key_num(&w, "train_seconds", X, "%.3f");
        fl_json_key_num(&w, "examples_per_second", Y, "%.1f");
        fl_json_key_uint(&w, "parameters", 7);
        if (with_eval) {
            fl_json_key_uint(&w, "test_k", 500);
            fl_json_key_uint(&w, "test_points", 100);
            fl_json_key_num(&w, "test_log_likelihood", Y, "%.6f");
            fl_json_key_num(&w, "test_log_likelihood_se", Z, "%.6f");
            fl_json_key_num(&w, "test_elbo", Y, "%.6f");
            fl_json_key_num(&w, "test_kl", X, "%.6f");
            fl_json_key_num(&w, "test_ess", X, "%.3f");
            fl_json_key_uint(&w, "active_units", 13);
            fl_json_key_num(&w, "eval_seconds", X, "%.3f");
        }
        cr_assert_eq(fl_json_end(&w), FL_OK);
        cr_assert_str_eq(b.data, old.data);
        fl_buf_free(&old);
        fl_buf_free(&b);
    }

    /* eval.json (task_vae.c's evaluation suite) */
    fl_buf old = { 0 }, b = { 0 };
    fl_buf_printf(&old,
                  "{\n  \"split\": \"%s\",\n  \"points\": %llu,\n  \"k\": %llu,\n"
                  "  \"log_likelihood\": %.6f,\n  \"log_likelihood_se\": %.6f,\n"
                  "  \"elbo\": %.6f,\n  \"elbo_se\": %.6f,\n  \"gap\": %.6f,\n"
                  "  \"kl\": %.6f,\n  \"ess\": %.3f,\n  \"ess_fraction\": %.6f,\n"
                  "  \"active_units\": %u,\n  \"latent\": %u,\n  \"au_threshold\": %g,\n"
                  "  \"seconds\": %.3f\n}\n",
                  "test", 100ull, 50ull, Y, Z, Y, X, Z, X, Y, X, 13u, 50u, 0.01, X);
    fl_json w;
    fl_json_begin(&w, &b);
    fl_json_key_str(&w, "split", "test");
    fl_json_key_uint(&w, "points", 100);
    fl_json_key_uint(&w, "k", 50);
    fl_json_key_num(&w, "log_likelihood", Y, "%.6f");
    fl_json_key_num(&w, "log_likelihood_se", Z, "%.6f");
    fl_json_key_num(&w, "elbo", Y, "%.6f");
    fl_json_key_num(&w, "elbo_se", X, "%.6f");
    fl_json_key_num(&w, "gap", Z, "%.6f");
    fl_json_key_num(&w, "kl", X, "%.6f");
    fl_json_key_num(&w, "ess", Y, "%.3f");
    fl_json_key_num(&w, "ess_fraction", X, "%.6f");
    fl_json_key_uint(&w, "active_units", 13);
    fl_json_key_uint(&w, "latent", 50);
    fl_json_key_num(&w, "au_threshold", 0.01, "%g");
    fl_json_key_num(&w, "seconds", X, "%.3f");
    cr_assert_eq(fl_json_end(&w), FL_OK);
    cr_assert_str_eq(b.data, old.data);
    fl_buf_free(&old);
    fl_buf_free(&b);
}

Test(json_writer, reproduces_vi_result_json)
{
    /* logz_ref and kl: %.6f, or null when not finite (task_vi.c's fmt_num) */
    const double refs[] = { Y, NAN };
    for (int i = 0; i < 2; i++) {
        double ref = refs[i], kl = i ? NAN : X;
        char r1[32], r2[32];
        if (isfinite(ref)) snprintf(r1, sizeof r1, "%.6f", ref);
        else snprintf(r1, sizeof r1, "null");
        if (isfinite(kl)) snprintf(r2, sizeof r2, "%.6f", kl);
        else snprintf(r2, sizeof r2, "null");
        fl_buf old = { 0 }, b = { 0 };
        fl_buf_printf(&old,
                      "{\n  \"task\": \"vi\",\n  \"target\": \"%s\",\n  \"estimator\": \"%s\",\n"
                      "  \"k\": %u,\n  \"elbo\": %.6f,\n  \"elbo_se\": %.6f,\n  \"elbo_samples\": %llu,\n"
                      "  \"logz_is\": %.6f,\n  \"logz_ess\": %.1f,\n  \"logz_samples\": %llu,\n"
                      "  \"logz_ref\": %s,\n  \"logz_ref_method\": \"%s\",\n  \"kl\": %s,\n"
                      "  \"kl_se\": %.6f,\n  \"train_bound\": %.6f,\n  \"steps\": %llu,\n"
                      "  \"train_seconds\": %.3f,\n  \"steps_per_second\": %.1f,\n"
                      "  \"parameters\": %zu\n}\n",
                      "u1", "iwae", 8u, Y, Z, 10000ull, X, Y, 20000ull, r1, "grid", r2, Z, Y,
                      600ull, X, Y, (size_t)40);
        fl_json w;
        fl_json_begin(&w, &b);
        fl_json_key_str(&w, "task", "vi");
        fl_json_key_str(&w, "target", "u1");
        fl_json_key_str(&w, "estimator", "iwae");
        fl_json_key_uint(&w, "k", 8);
        fl_json_key_num(&w, "elbo", Y, "%.6f");
        fl_json_key_num(&w, "elbo_se", Z, "%.6f");
        fl_json_key_uint(&w, "elbo_samples", 10000);
        fl_json_key_num(&w, "logz_is", X, "%.6f");
        fl_json_key_num(&w, "logz_ess", Y, "%.1f");
        fl_json_key_uint(&w, "logz_samples", 20000);
        fl_json_key_num(&w, "logz_ref", ref, "%.6f");
        fl_json_key_str(&w, "logz_ref_method", "grid");
        fl_json_key_num(&w, "kl", kl, "%.6f");
        fl_json_key_num(&w, "kl_se", Z, "%.6f");
        fl_json_key_num(&w, "train_bound", Y, "%.6f");
        fl_json_key_uint(&w, "steps", 600);
        fl_json_key_num(&w, "train_seconds", X, "%.3f");
        fl_json_key_num(&w, "steps_per_second", Y, "%.1f");
        fl_json_key_uint(&w, "parameters", 40);
        cr_assert_eq(fl_json_end(&w), FL_OK);
        cr_assert_str_eq(b.data, old.data);
        fl_buf_free(&old);
        fl_buf_free(&b);
    }
}

/* The three tasks' metrics.csv columns, as the trainers print them today. */
static const fl_metrics_col density_cols[] = {
    { "train_nll", "%.6f" }, { "test_nll", "%.6f" }, { "test_nll_se", "%.6f" },
    { "train_seconds", "%.3f" },
};
static const fl_metrics_col vae_cols[] = {
    { "train_bound", "%.6f" }, { "valid_elbo", "%.6f" }, { "valid_iwae", "%.6f" },
    { "lr", "%.6g" },          { "train_seconds", "%.3f" },
};
static const fl_metrics_col vi_cols[] = {
    { "beta", "%.4f" },   { "train_bound", "%.6f" }, { "elbo", "%.6f" },
    { "elbo_se", "%.6f" }, { "logz_is", "%.6f" },    { "logz_ess", "%.1f" },
    { "logz_ref", "%.6f" }, { "kl", "%.6f" },        { "train_seconds", "%.3f" },
};

Test(metrics, reproduces_the_trainers_rows)
{
    fl_buf old = { 0 };
    fl_metrics m;
    /* density: a row, and the closing row without a training loss */
    fl_buf_printf(&old, "step,train_nll,test_nll,test_nll_se,train_seconds\n");
    fl_buf_printf(&old, "%llu,%.6f,%.6f,%.6f,%.3f\n", 100ull, X, Y, Z, X);
    fl_buf_printf(&old, "%llu,,%.6f,%.6f,%.3f\n", 0ull, Y, Z, X);
    fl_metrics_init(&m, density_cols, 4);
    fl_metrics_row(&m, 100, (double[]){ X, Y, Z, X });
    fl_metrics_row(&m, 0, (double[]){ NAN, Y, Z, X });
    cr_assert_str_eq(m.text.data, old.data);
    fl_metrics_free(&m);
    fl_buf_free(&old);
    /* vae */
    fl_buf_printf(&old, "step,train_bound,valid_elbo,valid_iwae,lr,train_seconds\n");
    fl_buf_printf(&old, "%llu,%.6f,%.6f,%.6f,%.6g,%.3f\n", 100ull, Y, X, Y, 1e-3 * X, X);
    fl_buf_printf(&old, "%llu,,%.6f,%.6f,%.6g,%.3f\n", 200ull, X, Y, Z, X);
    fl_metrics_init(&m, vae_cols, 5);
    fl_metrics_row(&m, 100, (double[]){ Y, X, Y, 1e-3 * X, X });
    fl_metrics_row(&m, 200, (double[]){ NAN, X, Y, Z, X });
    cr_assert_str_eq(m.text.data, old.data);
    fl_metrics_free(&m);
    fl_buf_free(&old);
    /* vi: logz_ref and kl are empty when not finite */
    fl_buf_printf(&old, "step,beta,train_bound,elbo,elbo_se,logz_is,logz_ess,logz_ref,kl,"
                        "train_seconds\n");
    fl_buf_printf(&old, "%llu,%.4f,%.6f,%.6f,%.6f,%.6f,%.1f,%.6f,%.6f,%.3f\n", 10ull, X, Y, Y, Z,
                  X, Y, X, Z, X);
    fl_buf_printf(&old, "%llu,%.4f,,%.6f,%.6f,%.6f,%.1f,%s,%s,%.3f\n", 20ull, 1.0, Y, Z, X, Y, "",
                  "", X);
    fl_metrics_init(&m, vi_cols, 9);
    fl_metrics_row(&m, 10, (double[]){ X, Y, Y, Z, X, Y, X, Z, X });
    fl_metrics_row(&m, 20, (double[]){ 1.0, NAN, Y, Z, X, Y, NAN, INFINITY, X });
    cr_assert_str_eq(m.text.data, old.data);
    fl_metrics_free(&m);
    fl_buf_free(&old);
}
