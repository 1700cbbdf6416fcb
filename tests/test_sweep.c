/* test_sweep.c - the [sweep] section: cell expansion (product, zip,
 * exclude), run directory names, the base text the cells run, errors that
 * name file, line and key, the JSON reader behind `flowlab report`, and the
 * report's columns, pivot table, header, charts and links. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <ftw.h>

#include "common.h"
#include "output/rundir.h"
#include "sweep/report.h"
#include "sweep/sweep.h"

SUITE(expand);
SUITE(names);
SUITE(errors);
SUITE(json);

static const char head[] = "[experiment]\n" /* 1 */
                           "name = t\n"     /* 2 */
                           "[train]\n"      /* 3 */
                           "steps = 5\n"    /* 4 */
                           "[sweep]\n";     /* 5 */

static fl_sweep *sweep_ok(const char *body)
{
    char *text = fl_strfmt("%s%s", head, body);
    fl_sweep *s = NULL;
    fl_status st = fl_sweep_parse("s.ini", text, &s);
    free(text);
    cr_assert_eq(st, FL_OK, "parse failed: %s", fl_err_msg());
    cr_assert_not_null(s);
    return s;
}

static const char *sweep_fails(const char *body)
{
    char *text = fl_strfmt("%s%s", head, body);
    fl_sweep *s = NULL;
    fl_status st = fl_sweep_parse("s.ini", text, &s);
    free(text);
    cr_assert_eq(st, FL_ERR_INVALID, "expected FL_ERR_INVALID, got %d", st);
    cr_assert_null(s);
    return fl_err_msg();
}

/* "v1/v2/..." of cell c, for compact comparisons. */
static void cell_str(const fl_sweep *s, size_t c, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = 0;
    for (size_t a = 0; a < s->n_axes; a++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", a ? "/" : "",
                                 fl_sweep_value(s, c, a));
}

static void expect_cells(const fl_sweep *s, const char *const *want, size_t n)
{
    cr_assert_eq(s->n_cells, n, "%zu cells, expected %zu", s->n_cells, n);
    for (size_t c = 0; c < n; c++) {
        char got[256];
        cell_str(s, c, got, sizeof got);
        cr_assert_str_eq(got, want[c], "cell %zu", c);
    }
}

/* ---- expansion ----------------------------------------------------------- */

Test(expand, product_in_file_order_last_fastest)
{
    fl_sweep *s = sweep_ok("train.lr = 1e-3, 3e-4\n"
                           "flow.1.repeat = 0,2 ,4\n");
    static const char *const want[] = { "1e-3/0", "1e-3/2", "1e-3/4",
                                        "3e-4/0", "3e-4/2", "3e-4/4" };
    expect_cells(s, want, 6);
    cr_assert_eq(s->n_product, 6);
    cr_assert_str_eq(s->axes[1].key, "flow.1.repeat");
    cr_assert_eq(s->axes[1].line, 7);
    fl_sweep_free(s);
}

Test(expand, zip_pairs_lists_element_wise)
{
    fl_sweep *s = sweep_ok("estimator.type = elbo, iwae, dreg\n"
                           "experiment.seed = 1, 2\n"
                           "estimator.k = 1, 5, 50\n"
                           "zip = estimator.type estimator.k\n");
    /* the zip group sits where its first key is, so the seed varies fastest */
    static const char *const want[] = { "elbo/1/1", "elbo/2/1", "iwae/1/5",
                                        "iwae/2/5", "dreg/1/50", "dreg/2/50" };
    expect_cells(s, want, 6);
    cr_assert_eq(s->n_zips, 1);
    cr_assert_eq(s->axes[0].zip, 0);
    cr_assert_eq(s->axes[1].zip, -1);
    fl_sweep_free(s);
}

Test(expand, two_zip_groups_and_commas_between_zip_keys)
{
    fl_sweep *s = sweep_ok("a.x = 1, 2\n"
                           "a.y = 3, 4\n"
                           "b.x = 5, 6\n"
                           "b.y = 7, 8\n"
                           "zip = a.x, a.y; b.x b.y\n");
    static const char *const want[] = { "1/3/5/7", "1/3/6/8", "2/4/5/7", "2/4/6/8" };
    expect_cells(s, want, 4);
    cr_assert_eq(s->n_zips, 2);
    fl_sweep_free(s);
}

Test(expand, exclude_rules_numbered_and_semicolon_separated)
{
    fl_sweep *s = sweep_ok("estimator.type = elbo, iwae\n"
                           "estimator.k = 1, 50\n"
                           "experiment.seed = 1, 2\n"
                           "exclude = estimator.type=elbo estimator.k=50\n"
                           "exclude.2 = estimator.type=iwae estimator.k=1 experiment.seed=2; "
                           "estimator.k=50 experiment.seed=1\n");
    static const char *const want[] = { "elbo/1/1", "elbo/1/2", "iwae/1/1", "iwae/50/2" };
    expect_cells(s, want, 4);
    cr_assert_eq(s->n_product, 8);
    cr_assert_eq(s->n_rules, 3);
    fl_sweep_free(s);
}

Test(expand, bar_separates_values_that_contain_commas)
{
    fl_sweep *s = sweep_ok("flow.1.hidden = 32,32 | 64,64,64\n"
                           "exclude = flow.1.hidden=64,64,64\n"
                           "flow.1.repeat = 1\n");
    static const char *const want[] = { "32,32/1" };
    expect_cells(s, want, 1);
    cr_assert_str_eq(s->cells[0].name, "flow.1.hidden=32-32,flow.1.repeat=1");
    fl_sweep_free(s);
}

Test(expand, directives_and_comments)
{
    fl_sweep *s = sweep_ok("; comment\n"
                           "# comment\n"
                           "train.lr = 1e-3, 1e-2   ; inline comment\n"
                           "metric = test_ll_k5000\n"
                           "direction = max\n");
    cr_assert_eq(s->n_cells, 2);
    cr_assert_str_eq(s->axes[0].values[1], "1e-2");
    cr_assert_str_eq(s->metric, "test_ll_k5000");
    cr_assert_eq(s->direction, 1);
    fl_sweep_free(s);
}

Test(expand, base_comments_out_the_sweep_and_keeps_line_numbers)
{
    fl_sweep *s = sweep_ok("train.lr = 1e-3, 1e-2\n"
                           "[eval]\n"
                           "batch = 100\n");
    cr_assert_str_eq(s->base, "[experiment]\nname = t\n[train]\nsteps = 5\n"
                              "; [sweep]\n; train.lr = 1e-3, 1e-2\n[eval]\nbatch = 100\n");
    fl_config *c = NULL;
    cr_assert_eq(fl_config_parse("b.ini", s->base, &c), FL_OK, "%s", fl_err_msg());
    cr_assert_null(fl_config_section(c, "sweep"));
    cr_assert_eq(fl_config_entry(fl_config_section(c, "eval"), "batch")->line, 8);
    fl_config_free(c);
    fl_sweep_free(s);
}

/* ---- names ------------------------------------------------------------- */

Test(names, settings_in_axis_order)
{
    fl_sweep *s = sweep_ok("estimator.type = iwae\n"
                           "estimator.k = 5\n"
                           "experiment.seed = 2\n");
    cr_assert_str_eq(s->cells[0].name, "estimator.type=iwae,estimator.k=5,experiment.seed=2");
    fl_sweep_free(s);
}

Test(names, unsafe_characters_are_replaced)
{
    fl_sweep *s = sweep_ok("data.path = ../x/a b.csv, c*d\n");
    cr_assert_str_eq(s->cells[0].name, "data.path=.._x_a_b.csv");
    cr_assert_str_eq(s->cells[1].name, "data.path=c_d");
    fl_sweep_free(s);
}

Test(names, collisions_get_a_hash)
{
    fl_sweep *s = sweep_ok("data.path = a/b, a_b, c\n");
    cr_assert_str_neq(s->cells[0].name, s->cells[1].name);
    assert_contains(s->cells[0].name, "data.path=a_b~");
    assert_contains(s->cells[1].name, "data.path=a_b~");
    cr_assert_str_eq(s->cells[2].name, "data.path=c");
    fl_sweep_free(s);
}

Test(names, long_names_are_cut_with_a_hash)
{
    char body[1024];
    snprintf(body, sizeof body, "data.path = %0300d, %0299d1\n", 0, 0);
    fl_sweep *s = sweep_ok(body);
    for (size_t c = 0; c < 2; c++) {
        cr_assert_leq(strlen(s->cells[c].name), 200);
        assert_contains(s->cells[c].name, "~");
    }
    cr_assert_str_neq(s->cells[0].name, s->cells[1].name);
    fl_sweep_free(s);
}

/* ---- errors -------------------------------------------------------------- */

Test(errors, no_sweep_section)
{
    fl_sweep *s = NULL;
    cr_assert_eq(fl_sweep_parse("s.ini", "[train]\nsteps = 1\n", &s), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "s.ini: no [sweep] section");
}

Test(errors, messages_name_file_line_and_key)
{
    assert_contains(sweep_fails("train.lr = 1\ntrain.lr = 2\n"),
                    "s.ini:7: [sweep] key 'train.lr' is set twice (first on line 6)");
    assert_contains(sweep_fails("lr = 1, 2\n"), "s.ini:6: [sweep] 'lr' is not SECTION.KEY");
    assert_contains(sweep_fails("Train.lr = 1, 2\n"), "s.ini:6: [sweep] 'Train.lr'");
    assert_contains(sweep_fails("train.lr = 1,,2\n"), "s.ini:6: [sweep] train.lr = '1,,2': an empty value");
    assert_contains(sweep_fails("train.lr = 1, 1\n"), "a value listed twice");
    assert_contains(sweep_fails("train.lr\n"), "s.ini:6: [sweep] expected 'SECTION.KEY = VALUE");
    assert_contains(sweep_fails("train.lr = 1\nmetric = a b\n"), "s.ini:7: [sweep] metric");
    assert_contains(sweep_fails("train.lr = 1\ndirection = up\n"), "s.ini:7: [sweep] direction = 'up'");
    assert_contains(sweep_fails("zip = a.b c.d\n"), "lists no keys");
    assert_contains(sweep_fails("sweep.x = 1\n"), "cannot vary its own section");
}

/* Issue 13 (found by tests/fuzz/fuzz_sweep.c): a NUL byte cut the file,
 * and every cell silently ran without what followed it. */
Test(errors, nul_byte_is_refused)
{
    char *dir = make_tmpdir();
    char *path = fl_strfmt("%s/nul.ini", dir);
    static const char text[] = "[sweep]\ntrain.lr = 1e-3, 2e-3\n[train]\nsteps = 5\0steps = 7\n";
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, sizeof text - 1, f), sizeof text - 1);
    cr_assert_eq(fclose(f), 0);
    fl_sweep *s = NULL;
    cr_assert_eq(fl_sweep_load(path, &s), FL_ERR_INVALID);
    cr_assert_null(s);
    assert_contains(fl_err_msg(), "nul.ini:4: contains a NUL byte");
    char *t = NULL;
    cr_assert_eq(fl_sweep_read(path, &t), FL_ERR_INVALID);
    cr_assert_null(t);
    free(path);
    remove_tree(dir);
}

/* Issue 13: the base text reaches inih, which cuts a line longer than its
 * buffer and a section name longer than its own without a word; the sweep
 * is refused when it is read, naming the line (and `flowlab sweep
 * --dry-run` with it). [sweep] lines and comments may be of any length. */
Test(errors, lines_inih_would_cut_are_refused)
{
    size_t max = fl_config_max_line(), sec = fl_config_max_section();
    /* a base line one byte too long, indented (inih strips the blanks) */
    char *val = calloc(max + 1, 1);
    memset(val, '8', max - 8); /* "hidden = " and these: max + 1 bytes */
    char *body = fl_strfmt("train.lr = 1, 2\n[flow.1]\n  hidden = %s\r\n", val);
    char msg[300];
    snprintf(msg, sizeof msg, "s.ini:8: line is %zu bytes long; flowlab's INI parser (inih) "
             "reads at most %zu", max + 1, max);
    assert_contains(sweep_fails(body), msg);
    free(body);
    /* exactly the limit is fine */
    val[max - 9] = 0;
    body = fl_strfmt("train.lr = 1, 2\n[flow.1]\nhidden = %s\n", val);
    fl_sweep_free(sweep_ok(body));
    free(body);
    /* a [sweep] line (its inline comment too) and a comment line: any length */
    memset(val, '1', max);
    val[max] = 0;
    body = fl_strfmt("train.lr = 1, 2  ; %s\n[flow.1]\n; %s\ntype = planar\n", val, val);
    fl_sweep_free(sweep_ok(body));
    free(body);
    /* a section name one character past inih's */
    char *name = calloc(sec + 2, 1);
    memset(name, 'f', sec + 1);
    body = fl_strfmt("train.lr = 1, 2\n[%s]\nk = 1\n", name);
    snprintf(msg, sizeof msg, "s.ini:7: section name is %zu characters long; flowlab's INI "
             "parser (inih) keeps at most %zu", sec + 1, sec);
    assert_contains(sweep_fails(body), msg);
    free(body);
    free(name);
    free(val);
}

Test(errors, zip_problems)
{
    assert_contains(sweep_fails("a.x = 1, 2\na.y = 1, 2, 3\nzip = a.x a.y\n"),
                    "s.ini:8: [sweep] zip: a.x has 2 values but a.y has 3");
    assert_contains(sweep_fails("a.x = 1, 2\nzip = a.x a.z\n"),
                    "s.ini:7: [sweep] zip: 'a.z' is not a swept key (swept: a.x)");
    assert_contains(sweep_fails("a.x = 1, 2\na.y = 1, 2\nzip = a.x;a.y\n"),
                    "a zip group needs two or more keys");
    assert_contains(sweep_fails("a.x = 1\na.y = 1\na.z = 1\nzip = a.x a.y\nzip.2 = a.y a.z\n"),
                    "s.ini:10: [sweep] zip.2: 'a.y' is already in a zip group");
    assert_contains(sweep_fails("a.x = 1\na.y = 1\nzip = a.x a.y\nzip = a.x a.y\n"),
                    "key 'zip' is set twice");
}

Test(errors, exclude_problems)
{
    assert_contains(sweep_fails("a.x = 1, 2\nexclude = a.x=3\n"),
                    "s.ini:7: [sweep] exclude: a.x=3 matches no cell (a.x takes 1, 2)");
    assert_contains(sweep_fails("a.x = 1, 2\nexclude.3 = a.y=1\n"),
                    "s.ini:7: [sweep] exclude.3: 'a.y' is not a swept key");
    assert_contains(sweep_fails("a.x = 1, 2\nexclude = a.x\n"), "'a.x' is not KEY=VALUE");
    assert_contains(sweep_fails("a.x = 1, 2\nexclude = a.x=1 a.x=2\n"), "appears twice in one rule");
    assert_contains(sweep_fails("a.x = 1, 2\nexclude = a.x=1; a.x=2\n"),
                    "s.ini:5: [sweep] every one of the 2 cells is excluded");
}

Test(errors, semicolon_after_a_blank_is_a_comment_not_a_separator)
{
    assert_contains(sweep_fails("a.x = 1, 2\nb.y = 1, 2\nexclude = a.x=1 ; b.y=2\n"),
                    "s.ini:8: [sweep] exclude: ' ; b.y=2' is read as a comment, which would "
                    "drop that rule; write ';' right after the rule");
    assert_contains(sweep_fails("a.x = 1, 2\nb.y = 1, 2\nexclude.2 = a.x=1\t; b.y=1 a.x=2\n"),
                    "s.ini:8: [sweep] exclude.2: ' ; b.y=1 a.x=2' is read as a comment");
    assert_contains(sweep_fails("a.x = 1, 2\nb.y = 3, 4\nc.z = 1, 2\nd.w = 3, 4\n"
                                "zip = a.x b.y ; c.z d.w\n"),
                    "s.ini:10: [sweep] zip: ' ; c.z d.w' is read as a comment, which would drop "
                    "that group");
    /* a comment that reads as prose stays a comment; ';' right after a rule separates */
    fl_sweep *s = sweep_ok("a.x = 1, 2\nb.y = 1, 2\nc.z = 5, 6\n"
                           "exclude = a.x=1 c.z=5; b.y=2 c.z=6 ; drop these\n"
                           "zip.2 = a.x b.y ; pairs\n");
    cr_assert_eq(s->n_rules, 2);
    cr_assert_eq(s->n_cells, 2);
    cr_assert_eq(s->n_zips, 1);
    fl_sweep_free(s);
}

Test(errors, too_many_cells)
{
    assert_contains(sweep_fails("a.a = 1,2,3,4,5,6,7,8,9,10\na.b = 1,2,3,4,5,6,7,8,9,10\n"
                                "a.c = 1,2,3,4,5,6,7,8,9,10\na.d = 1,2,3,4,5,6,7,8,9,10\n"
                                "a.e = 1,2,3,4,5,6,7,8,9,10\na.f = 1,2,3,4,5,6,7,8,9,10\n"),
                    "more than");
}

Test(errors, run_refuses_a_sweep_file)
{
    char path[] = "/tmp/flowlab-sweep-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char text[] = "[train]\nsteps = 1\n\n  [sweep]\ntrain.lr = 1, 2\n";
    cr_assert_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    cr_assert_eq(fl_sweep_refuse_run(path), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), ":4: [sweep]: this file describes a sweep");
    assert_contains(fl_err_msg(), "flowlab sweep");
    unlink(path);
    cr_assert_eq(fl_sweep_refuse_run("/nonexistent/x.ini"), FL_OK);
}

/* ---- JSON ----------------------------------------------------------------- */

Test(json, numeric_top_level_fields_only)
{
    fl_json_num *v = NULL;
    size_t n = 0;
    const char *text = "{\n \"task\": \"density\", \"test_nll\": 0.25, \"nested\": {\"x\": 1},\n"
                       " \"list\": [1, 2], \"ok\": true, \"none\": null, \"k\": -3e2,\n"
                       " \"esc\\\"aped\": 7 }\n";
    cr_assert_eq(fl_json_numbers(text, &v, &n), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(n, 3);
    cr_assert_str_eq(v[0].name, "test_nll");
    cr_assert_float_eq(v[0].v, 0.25, 0);
    cr_assert_str_eq(v[1].name, "k");
    cr_assert_float_eq(v[1].v, -300, 0);
    cr_assert_str_eq(v[2].name, "esc\"aped");
    for (size_t i = 0; i < n; i++) free(v[i].name);
    free(v);
}

Test(json, escapes_in_names_are_decoded)
{
    fl_json_num *v = NULL;
    size_t n = 0;
    /* \u00e9 = e-acute (2 UTF-8 bytes), \ud83d\ude00 a surrogate pair (4 bytes) */
    const char *text = "{\"caf\\u00e9\": 1, \"a\\tb\\r\": 2, \"x\\ud83d\\ude00\": 3}";
    cr_assert_eq(fl_json_numbers(text, &v, &n), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(n, 3);
    cr_assert_str_eq(v[0].name, "caf\xc3\xa9");
    cr_assert_str_eq(v[1].name, "a\tb\r");
    cr_assert_str_eq(v[2].name, "x\xf0\x9f\x98\x80");
    for (size_t i = 0; i < n; i++) free(v[i].name);
    free(v);
    v = NULL;
    cr_assert_eq(fl_json_numbers("{\"bad\\u12g4\": 1}", &v, &n), FL_ERR_FORMAT);
    cr_assert_null(v);
}

Test(json, malformed)
{
    fl_json_num *v = NULL;
    size_t n = 0;
    cr_assert_eq(fl_json_numbers("[1]", &v, &n), FL_ERR_FORMAT);
    cr_assert_eq(fl_json_numbers("{\"a\" 1}", &v, &n), FL_ERR_FORMAT);
    cr_assert_eq(fl_json_numbers("{\"a\": 1", &v, &n), FL_ERR_FORMAT);
    cr_assert_null(v);
    cr_assert_eq(fl_json_numbers("{}", &v, &n), FL_OK);
    cr_assert_eq(n, 0);
    free(v);
}

/* fl_buf_csv and fl_buf_json_str, the one CSV quoting and JSON escaping
 * that cells.csv, report.csv, gradvar.{csv,json} and provenance.json share. */
Test(json, buf_csv_quotes_only_when_needed)
{
    static const char *const in[] = { "plain", "", "a,b", "say \"hi\"", "two\nlines", "cr\r",
                                       "\"" };
    static const char *const want[] = { "plain", "", "\"a,b\"", "\"say \"\"hi\"\"\"",
                                         "\"two\nlines\"", "\"cr\r\"", "\"\"\"\"" };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        fl_buf b = { 0 };
        fl_buf_csv(&b, in[i]);
        cr_assert_not(b.failed);
        cr_assert_str_eq(b.data ? b.data : "", want[i], "field %zu", i);
        fl_buf_free(&b);
    }
    fl_buf b = { 0 };
    fl_buf_csv(&b, NULL);
    cr_assert_eq(b.len, 0);
    fl_buf_free(&b);
}

Test(json, buf_json_str_round_trips_through_the_reader)
{
    const char *name = "q\"b\\s\n\r\t\x01\x7f caf\xc3\xa9";
    fl_buf b = { 0 };
    fl_buf_write(&b, "{", 1);
    fl_buf_json_str(&b, name);
    fl_buf_printf(&b, ": 7}");
    cr_assert_not(b.failed);
    cr_assert_str_eq(b.data, "{\"q\\\"b\\\\s\\n\\r\\t\\u0001\\u007f caf\xc3\xa9\": 7}");
    fl_json_num *v = NULL;
    size_t n = 0;
    cr_assert_eq(fl_json_numbers(b.data, &v, &n), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(n, 1);
    cr_assert_str_eq(v[0].name, name);
    cr_assert_eq(v[0].v, 7);
    free(v[0].name);
    free(v);
    fl_buf_free(&b);
    fl_buf_json_str(&b, NULL);
    cr_assert_str_eq(b.data, "\"\"");
    fl_buf_free(&b);
}

/* ---- flowlab report: columns, pivot, header, charts, links --------------- */

SUITE(report);

/* Removes a directory tree (the report tests make nested folders). */
static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_tree(char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static char *read_in_dir(const char *dir, const char *file)
{
    char *p = fl_strfmt("%s/%s", dir, file), *t = NULL;
    size_t n;
    cr_assert_eq(fl_read_file(p, &t, &n), FL_OK, "cannot read %s", p);
    free(p);
    return t;
}

__attribute__((noinline)) static size_t count_of(const char *hay, const char *needle)
{
    size_t k = 0, at = 0;
    for (const char *p; (p = strstr(hay + at, needle)); at = (size_t)(p - hay) + 1) k++;
    return k;
}

/* A sweep directory as `flowlab sweep` leaves it, without running: each
 * cell's result.json has test_ll = 10 * (estimator index) + k / 10 + seed
 * / 100, its repeat eval_ll, k (the swept estimator.k) and seed, and its
 * metrics.csv a curve ending at test_ll; the first cell has a curves.png. */
static fl_sweep *fake_sweep(const char *dir, const char *axes, const char *sets)
{
    char *text = fl_strfmt("[experiment]\nname = r\n[sweep]\n%s", axes);
    fl_sweep *s = NULL;
    cr_assert_eq(fl_sweep_parse("sweep.ini", text, &s), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_rundir_write(dir, "sweep.ini", text, strlen(text)), FL_OK);
    free(text);
    if (sets) cr_assert_eq(fl_rundir_write(dir, "sets.txt", sets, strlen(sets)), FL_OK);
    long ae = fl_sweep_axis_find(s, "estimator.name"), ak = fl_sweep_axis_find(s, "estimator.k");
    long as = fl_sweep_axis_find(s, "experiment.seed");
    for (size_t c = 0; c < s->n_cells; c++) {
        double est = ae >= 0 ? (double)s->cells[c].choice[ae] : 0;
        double k = ak >= 0 ? strtod(fl_sweep_value(s, c, (size_t)ak), NULL) : 1;
        double seed = as >= 0 ? strtod(fl_sweep_value(s, c, (size_t)as), NULL) : 1;
        double ll = 10 * est + k / 10 + seed / 100;
        char *cd = fl_strfmt("%s/%s", dir, s->cells[c].name);
        cr_assert_eq(fl_mkdirs(cd), FL_OK);
        char *json = fl_strfmt("{\"test_ll\": %.17g, \"k\": %g, \"seed\": %g, \"eval_ll\": %.17g}\n",
                               ll, k, seed, ll);
        char *csv = fl_strfmt("step,test_ll\n0,%g\n50,%g\n100,%.17g\n", ll - 3, ll - 1, ll);
        cr_assert_eq(fl_rundir_write(cd, "result.json", json, strlen(json)), FL_OK);
        cr_assert_eq(fl_rundir_write(cd, "metrics.csv", csv, strlen(csv)), FL_OK);
        if (c == 0) cr_assert_eq(fl_rundir_write(cd, "curves.png", "x", 1), FL_OK);
        free(json);
        free(csv);
        free(cd);
    }
    return s;
}

static const char est_k_seed[] = "estimator.name = iwae, stl, dreg\n"
                                 "estimator.k = 1, 5\n"
                                 "experiment.seed = 1, 2\n"
                                 "metric = test_ll\n";

Test(report, repeated_columns_are_left_out_and_named_sets_in_the_header)
{
    char *dir = make_tmpdir();
    fl_sweep *s = fake_sweep(dir, est_k_seed, "train.steps=100\ndata.n=50\n");
    cr_assert_eq(fl_report_write(dir, s, NULL, NULL), FL_OK, "%s", fl_err_msg());
    char *md = read_in_dir(dir, "report.md"), *csv = read_in_dir(dir, "report.csv");
    assert_contains(md, "Options given to every cell (flowlab sweep --set): `train.steps=100`, "
                        "`data.n=50`.");
    assert_contains(md, "| rank | estimator.name | estimator.k | n | failed | test_ll |\n");
    assert_contains(md, "`k` (= `estimator.k`)");
    assert_contains(md, "`seed` (= `experiment.seed`)");
    assert_contains(md, "`eval_ll` (= `test_ll`)");
    /* best first: dreg (index 2), k = 5: 20.5 + 0.015 */
    assert_contains(md, "| 1 (best) | dreg | 5 | 2 | 0 | **20.515 ± 0.005** |");
    /* report.csv is the data: every field stays */
    assert_contains(csv, ",test_ll_mean,test_ll_se,k_mean,k_se,seed_mean,seed_se,eval_ll_mean,");
    free(md);
    free(csv);

    /* --all-columns keeps them; a sweep made before sets.txt says so */
    char *p = fl_strfmt("%s/sets.txt", dir);
    cr_assert_eq(unlink(p), 0);
    free(p);
    fl_report_opts o = { .all_columns = 1 };
    cr_assert_eq(fl_report_write(dir, s, &o, NULL), FL_OK, "%s", fl_err_msg());
    md = read_in_dir(dir, "report.md");
    assert_contains(md, "| test_ll | k | seed | eval_ll |\n");
    assert_contains(md, "not recorded");
    cr_assert_null(strstr(md, "Left out as repeats"));
    free(md);
    fl_sweep_free(s);
    rm_tree(dir);
}

Test(report, columns_are_chosen_and_unknown_ones_are_refused)
{
    char *dir = make_tmpdir();
    fl_sweep *s = fake_sweep(dir, est_k_seed, "");
    fl_report_opts o = { .columns = "eval_ll, test_ll" };
    fl_buf out = { 0 };
    FILE *f = tmpfile();
    cr_assert_eq(fl_report_write(dir, s, &o, f), FL_OK, "%s", fl_err_msg());
    char *md = read_in_dir(dir, "report.md");
    assert_contains(md, "| n | failed | eval_ll | test_ll |\n");
    assert_contains(md, "Options given to every cell (flowlab sweep --set): none.");
    free(md);
    /* the printed table is report.md's */
    rewind(f);
    char line[512];
    while (fgets(line, sizeof line, f)) fl_buf_printf(&out, "%s", line);
    fclose(f);
    assert_contains(out.data, "| n | failed | eval_ll | test_ll |\n");
    fl_buf_free(&out);
    o.columns = "test_ll,nope";
    cr_assert_eq(fl_report_write(dir, s, &o, NULL), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "--columns: 'nope'");
    assert_contains(fl_err_msg(), "(fields: test_ll, k, seed, eval_ll)");
    fl_sweep_free(s);
    rm_tree(dir);
}

Test(report, pivot_table_of_estimator_by_k_with_standard_errors)
{
    char *dir = make_tmpdir();
    fl_sweep *s = fake_sweep(dir, est_k_seed, "");
    fl_report_opts o = { .pivot_rows = "estimator.name", .pivot_cols = "estimator.k",
                         .pivot_metric = "test_ll" };
    cr_assert_eq(fl_report_check_opts(s, &o), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_report_write(dir, s, &o, NULL), FL_OK, "%s", fl_err_msg());
    char *md = read_in_dir(dir, "report.md"), *csv = read_in_dir(dir, "report_pivot.csv");
    char *html = read_in_dir(dir, "report.html");
    char *svg = read_in_dir(dir, "report_curves/pivot.svg");
    assert_contains(md, "| estimator.name \\ estimator.k | 1 | 5 |\n");
    /* mean over seeds 1 and 2 (+0.01, +0.02): +0.015, standard error 0.005 */
    assert_contains(md, "| iwae | 0.115 ± 0.005 (n=2) | 0.515 ± 0.005 (n=2) |\n");
    assert_contains(md, "| dreg | 20.115 ± 0.005 (n=2) | 20.515 ± 0.005 (n=2) |\n");
    assert_contains(md, "averaged over experiment.seed");
    assert_contains(csv, "estimator.name,estimator.k=1_mean,estimator.k=1_se,estimator.k=1_n,"
                         "estimator.k=5_mean,estimator.k=5_se,estimator.k=5_n\n");
    assert_contains(csv, "\nstl,10.115,0.005,2,10.515,0.005,2\n");
    assert_contains(html, "<h2>Pivot</h2>");
    /* the chart: test_ll against k, a line per estimator */
    cr_assert_eq(count_of(svg, "class=\"legend-entry\""), 3);
    assert_contains(svg, ">estimator.name=stl</text>");
    assert_contains(svg, ">estimator.k</text>");
    free(md);
    free(csv);
    free(html);
    free(svg);

    o.pivot_metric = "nope";
    cr_assert_eq(fl_report_write(dir, s, &o, NULL), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "--pivot: METRIC 'nope'");
    o.pivot_metric = "test_ll";
    o.pivot_rows = "estimator.kk";
    cr_assert_eq(fl_report_check_opts(s, &o), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "--pivot ROWS: 'estimator.kk' is not a swept key");
    o.pivot_rows = "estimator.k";
    cr_assert_eq(fl_report_check_opts(s, &o), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "must be different");
    o.pivot_cols = NULL;
    cr_assert_eq(fl_report_check_opts(s, &o), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "needs ROWS COLS METRIC");
    fl_sweep_free(s);
    rm_tree(dir);
}

Test(report, one_chart_overlays_the_rows_with_a_legend_and_cells_pictures_are_linked)
{
    char *dir = make_tmpdir();
    fl_sweep *s = fake_sweep(dir, "estimator.name = iwae, stl, dreg\n", "");
    cr_assert_eq(s->n_cells, 3);
    cr_assert_eq(fl_report_write(dir, s, NULL, NULL), FL_OK, "%s", fl_err_msg());
    char *svg = read_in_dir(dir, "report_curves/chart-1.svg");
    char *html = read_in_dir(dir, "report.html");
    cr_assert_eq(count_of(svg, "class=\"legend-entry\""), 3, "one legend entry per cell");
    assert_contains(svg, ">#1 estimator.name=dreg</text>");
    assert_contains(svg, ">#3 estimator.name=iwae</text>");
    assert_contains(svg, ">training step</text>");
    cr_assert_eq(count_of(html, "src=\"data:image/png;base64,iVBORw0KGgo"), 1, "one chart");
    assert_contains(html, "href=\"report_curves/chart-1.svg\"");
    char *link = fl_strfmt("href=\"%s/curves.png\"", s->cells[0].name);
    assert_contains(html, link);
    free(link);
    char *png = fl_strfmt("%s/report_curves/chart-1.png", dir);
    cr_assert_eq(access(png, R_OK), 0);
    free(png);
    free(svg);
    free(html);
    fl_sweep_free(s);
    rm_tree(dir);
}
