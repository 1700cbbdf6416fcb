/* test_config.c - experiment files: INI parsing, --set overrides, typed
 * validation against key tables, and whole-experiment validation with the
 * real plugins (messages must name file, line, section and key). */
#include "common.h"
#include "tasks/task_density.h"
#include <math.h>

SUITE(parse);
SUITE(set);
SUITE(values);
SUITE(experiment);

/* ---- parsing ------------------------------------------------------------ */

static fl_config *parse_ok(const char *text)
{
    fl_config *c = NULL;
    fl_status st = fl_config_parse("t.ini", text, &c);
    cr_assert_eq(st, FL_OK, "parse failed: %s", fl_err_msg());
    cr_assert_not_null(c);
    return c;
}

/* Parses text that must be refused with FL_ERR_INVALID; returns the message. */
static const char *parse_fails(const char *text)
{
    fl_config *c = NULL;
    fl_status st = fl_config_parse("t.ini", text, &c);
    cr_assert_eq(st, FL_ERR_INVALID, "expected FL_ERR_INVALID, got %d", st);
    cr_assert_null(c, "a failed parse must not hand out a config");
    return fl_err_msg();
}

Test(parse, sections_keys_values_and_comments)
{
    fl_config *c = parse_ok("; a comment line\n"          /* 1 */
                            "# another one\n"             /* 2 */
                            "\n"                          /* 3 */
                            "[experiment]\n"              /* 4 */
                            "name = demo run\n"           /* 5 */
                            "seed=7\n"                    /* 6 */
                            "[flow.1]\n"                  /* 7 */
                            "type = affine-coupling\n"    /* 8 */
                            "hidden = 32, 32   ; why\n"   /* 9 */
                            "\n"                          /* 10 */
                            "[flow.2]\n"                  /* 11 */
                            "  type   =   reverse  \n");  /* 12 */
    cr_assert_eq(c->n, 3);
    cr_assert_str_eq(c->path, "t.ini");

    const fl_cfg_section *e = fl_config_section(c, "experiment");
    cr_assert_not_null(e);
    cr_assert_eq(e->line, 4);
    cr_assert_eq(e->n, 2);
    cr_assert_str_eq(fl_config_entry(e, "name")->value, "demo run");
    cr_assert_eq(fl_config_entry(e, "name")->line, 5);
    cr_assert_str_eq(fl_config_entry(e, "seed")->value, "7");
    cr_assert_eq(fl_config_entry(e, "seed")->line, 6);

    /* Dotted names are ordinary section names. */
    const fl_cfg_section *f1 = fl_config_section(c, "flow.1");
    cr_assert_not_null(f1);
    cr_assert_eq(f1->line, 7);
    cr_assert_str_eq(fl_config_entry(f1, "type")->value, "affine-coupling");
    cr_assert_str_eq(fl_config_entry(f1, "hidden")->value, "32, 32", "inline comment kept");
    const fl_cfg_section *f2 = fl_config_section(c, "flow.2");
    cr_assert_not_null(f2);
    cr_assert_eq(f2->line, 11);
    cr_assert_str_eq(fl_config_entry(f2, "type")->value, "reverse", "blanks are trimmed");

    cr_assert_null(fl_config_section(c, "flow"));
    cr_assert_null(fl_config_entry(f1, "repeat"));
    fl_config_free(c);
}

/* The name rules the parser, --set and the [sweep] keys share. */
Test(parse, section_and_key_name_rules)
{
    cr_assert(fl_config_valid_section("flow.1"));
    cr_assert(fl_config_valid_section("my-data_2"));
    cr_assert_not(fl_config_valid_section(""));
    cr_assert_not(fl_config_valid_section("Train"));
    cr_assert_not(fl_config_valid_section("a b"));
    cr_assert(fl_config_valid_key("lr_decay_steps"));
    cr_assert_not(fl_config_valid_key(""));
    cr_assert_not(fl_config_valid_key("flow.1"));
    cr_assert_not(fl_config_valid_key("a-b"));
}

Test(parse, empty_text_is_an_empty_config)
{
    fl_config *c = parse_ok("; nothing but a comment\n");
    cr_assert_eq(c->n, 0);
    fl_config_free(c);
}

Test(parse, syntax_error_names_file_and_line)
{
    const char *m = parse_fails("[train]\n"
                                "steps = 10\n"
                                "\n"
                                "this line is not ini\n"
                                "batch = 3\n");
    cr_assert_str_eq(m, "t.ini:4: syntax error: expected '[section]', 'key = value' or a comment");
}

Test(parse, duplicate_key_reports_both_lines)
{
    const char *m = parse_fails("[train]\n"
                                "steps = 10\n"
                                "batch = 3\n"
                                "steps = 20\n");
    cr_assert_str_eq(m, "t.ini:4: [train] key 'steps' is set twice (first on line 2)");
}

Test(parse, duplicate_key_across_a_reopened_section)
{
    const char *m = parse_fails("[train]\nsteps = 1\n[eval]\nbatch = 2\n[train]\nsteps = 3\n");
    cr_assert_str_eq(m, "t.ini:6: [train] key 'steps' is set twice (first on line 2)");
}

Test(parse, key_before_any_section)
{
    const char *m = parse_fails("; header comment\nsteps = 10\n[train]\n");
    cr_assert_str_eq(m, "t.ini:2: key 'steps' appears before any [section]");
}

Test(parse, bad_section_and_key_names)
{
    assert_contains(parse_fails("[Train]\nsteps = 1\n"), "t.ini:2: bad section name [Train]");
    assert_contains(parse_fails("[train]\nSteps = 1\n"), "t.ini:2: [train] bad key name 'Steps'");
}

Test(parse, missing_file_is_an_io_error)
{
    fl_config *c = NULL;
    fl_status st = fl_config_load("/nonexistent/flowlab/exp.ini", &c);
    cr_assert_eq(st, FL_ERR_IO);
    assert_contains(fl_err_msg(), "/nonexistent/flowlab/exp.ini");
}

/* ---- --set -------------------------------------------------------------- */

Test(set, dotted_section_takes_the_last_dot)
{
    fl_config *c = parse_ok("[flow.1]\ntype = affine-coupling\n");
    cr_assert_eq(fl_config_set(c, "flow.1.hidden=32,32"), FL_OK, "%s", fl_err_msg());
    const fl_cfg_section *s = fl_config_section(c, "flow.1");
    const fl_cfg_entry *e = fl_config_entry(s, "hidden");
    cr_assert_not_null(e);
    cr_assert_str_eq(e->value, "32,32");
    cr_assert_eq(e->line, 0, "--set entries have no line");
    cr_assert_null(fl_config_section(c, "flow"), "no section 'flow' may appear");
    cr_assert_null(fl_config_section(c, "flow.1.hidden"));
    fl_config_free(c);
}

Test(set, overrides_a_file_value_and_creates_sections)
{
    fl_config *c = parse_ok("[train]\nsteps = 10\n");
    cr_assert_eq(fl_config_set(c, " train.steps = 25 "), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_config_set(c, "data.test_size=500"), FL_OK, "%s", fl_err_msg());
    const fl_cfg_entry *e = fl_config_entry(fl_config_section(c, "train"), "steps");
    cr_assert_str_eq(e->value, "25");
    cr_assert_eq(e->line, 0);
    cr_assert_eq(fl_config_section(c, "train")->n, 1, "an override replaces, never appends");
    cr_assert_str_eq(fl_config_entry(fl_config_section(c, "data"), "test_size")->value, "500");
    fl_config_free(c);
}

Test(set, malformed_assignments_are_rejected)
{
    static const char *const bad[] = {
        "train.steps",     /* no '=' */
        "steps=10",        /* no section */
        ".steps=10",       /* empty section */
        "train.=10",       /* empty key */
        "Train.steps=10",  /* upper case section */
        "train.st-eps=10", /* '-' is not allowed in keys */
        "=10",
    };
    fl_config *c = parse_ok("[train]\nsteps = 10\n");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fl_err_clear();
        fl_status st = fl_config_set(c, bad[i]);
        cr_assert_eq(st, FL_ERR_INVALID, "--set %s was accepted", bad[i]);
        assert_contains(fl_err_msg(), "--set");
        assert_contains(fl_err_msg(), bad[i]);
    }
    cr_assert_str_eq(fl_config_entry(fl_config_section(c, "train"), "steps")->value, "10",
                     "a rejected --set must not change the config");
    fl_config_free(c);
}

Test(set, where_names_the_origin)
{
    fl_config *c = parse_ok("[train]\nsteps = 10\n\n[flow.1]\ntype = reverse\n");
    cr_assert_eq(fl_config_set(c, "flow.1.hidden=8"), FL_OK);
    char buf[256];
    const fl_cfg_section *t = fl_config_section(c, "train");
    const fl_cfg_section *f = fl_config_section(c, "flow.1");
    cr_assert_str_eq(fl_config_where(c, t, fl_config_entry(t, "steps"), buf, sizeof buf),
                     "t.ini:2");
    cr_assert_str_eq(fl_config_where(c, f, fl_config_entry(f, "hidden"), buf, sizeof buf),
                     "--set flow.1.hidden");
    cr_assert_str_eq(fl_config_where(c, f, NULL, buf, sizeof buf), "t.ini:4",
                     "a section is located at its header");
    fl_config_free(c);
}

/* ---- typed validation against a key table ------------------------------- */

static const fl_key keys[] = {
    { "hidden", FL_KEY_INT_LIST, "64,64", 1, 4096, NULL, "hidden widths" },
    { "steps", FL_KEY_INT, NULL, 0, 100, NULL, "optimizer steps" },
    { "lr", FL_KEY_REAL, "1e-3", 0, 1, NULL, "learning rate" },
    { "act", FL_KEY_ENUM, "relu", 0, 0, "relu|tanh|elu", "activation" },
    { "flag", FL_KEY_BOOL, "false", 0, 0, NULL, "a switch" },
    { "label", FL_KEY_STRING, "none", 1, 0, NULL, "free text" },
};

/* Resolves [s] of `text` against `keys`; *out is filled on success. */
static fl_status resolve(const char *text, fl_values *out)
{
    fl_config *c = parse_ok(text);
    const fl_key *tabs[1] = { keys };
    uint32_t ns[1] = { sizeof keys / sizeof keys[0] };
    fl_status st = fl_values_resolve(c, "s", tabs, ns, 1, out);
    fl_config_free(c);
    return st;
}

static const char *resolve_fails(const char *text)
{
    fl_values v;
    fl_err_clear();
    fl_status st = resolve(text, &v);
    cr_assert_eq(st, FL_ERR_INVALID, "expected FL_ERR_INVALID for:\n%s", text);
    return fl_err_msg();
}

Test(values, defaults_are_filled_and_typed)
{
    fl_values v;
    cr_assert_eq(resolve("[s]\nsteps = 12\n", &v), FL_OK, "%s", fl_err_msg());
    cr_assert_str_eq(v.section, "s");
    cr_assert_eq(v.n, 6, "every key gets a value");
    cr_assert_eq(fl_values_get(&v, "steps")->i, 12);
    cr_assert_float_eq(fl_values_get(&v, "lr")->r, 1e-3, 1e-15);
    cr_assert_str_eq(fl_values_get(&v, "lr")->text, "1e-3");
    cr_assert_eq(fl_values_get(&v, "act")->i, 0);
    cr_assert_str_eq(fl_values_get(&v, "act")->text, "relu");
    cr_assert_eq(fl_values_get(&v, "flag")->i, 0);
    cr_assert_str_eq(fl_values_get(&v, "label")->text, "none");
    const fl_value *h = fl_values_get(&v, "hidden");
    cr_assert_eq(h->nlist, 2);
    cr_assert_eq(h->list[0], 64);
    cr_assert_eq(h->list[1], 64);
    cr_assert_null(fl_values_get(&v, "nope"));
    fl_values_free(&v);
}

Test(values, int_lists_enums_and_reals_parse)
{
    fl_values v;
    cr_assert_eq(resolve("[s]\nsteps = 0\nhidden = 8, 16,32\nact = elu\nlr = 0.5\n", &v), FL_OK,
                 "%s", fl_err_msg());
    const fl_value *h = fl_values_get(&v, "hidden");
    cr_assert_eq(h->nlist, 3);
    cr_assert_eq(h->list[0], 8);
    cr_assert_eq(h->list[1], 16);
    cr_assert_eq(h->list[2], 32);
    cr_assert_eq(fl_values_get(&v, "act")->i, 2, "enum value is the choice's index");
    cr_assert_float_eq(fl_values_get(&v, "lr")->r, 0.5, 1e-15);
    cr_assert_eq(fl_values_get(&v, "steps")->i, 0, "range bounds are inclusive");
    fl_values_free(&v);
}

Test(values, bool_forms)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (int i = 0; i < 4; i++) {
        for (int want = 0; want < 2; want++) {
            char text[128];
            snprintf(text, sizeof text, "[s]\nsteps = 1\nflag = %s\n", want ? yes[i] : no[i]);
            fl_values v;
            cr_assert_eq(resolve(text, &v), FL_OK, "%s", fl_err_msg());
            cr_assert_eq(fl_values_get(&v, "flag")->i, want, "flag = %s", want ? yes[i] : no[i]);
            fl_values_free(&v);
        }
    }
    assert_contains(resolve_fails("[s]\nsteps = 1\nflag = maybe\n"), "expected true or false");
}

Test(values, unknown_key_suggests_the_closest)
{
    cr_assert_str_eq(resolve_fails("[s]\nsteps = 1\nhiden = 32\n"),
                     "t.ini:3: [s] unknown key 'hiden'; did you mean 'hidden'?");
}

Test(values, unknown_key_far_from_everything_has_no_suggestion)
{
    const char *m = resolve_fails("[s]\nsteps = 1\nzzzzzzzz = 32\n");
    assert_contains(m, "t.ini:3: [s] unknown key 'zzzzzzzz'");
    assert_not_contains(m, "did you mean");
}

Test(values, missing_required_key)
{
    const char *m = resolve_fails("[s]\nlr = 0.1\n");
    assert_contains(m, "t.ini:1");
    assert_contains(m, "missing required key 'steps'");
}

Test(values, wrong_type)
{
    cr_assert_str_eq(resolve_fails("[s]\nsteps = abc\n"),
                     "t.ini:2: [s] steps = 'abc': expected an integer");
    assert_contains(resolve_fails("[s]\nsteps = 1\nlr = fast\n"), "expected a finite number");
    assert_contains(resolve_fails("[s]\nsteps = 1\nlr = nan\n"), "expected a finite number");
    assert_contains(resolve_fails("[s]\nsteps = 2.5\n"), "expected an integer");
}

Test(values, out_of_range_names_the_range)
{
    const char *m = resolve_fails("[s]\nsteps = 500\n");
    assert_contains(m, "t.ini:2: [s] steps = '500'");
    assert_contains(m, "[0, 100]");
    assert_contains(resolve_fails("[s]\nsteps = 1\nlr = 2\n"), "[0, 1]");
    /* too many digits for an integer is out of range too */
    cr_assert_str_eq(resolve_fails("[s]\nsteps = 99999999999999999999\n"),
                     "t.ini:2: [s] steps = '99999999999999999999': expected an integer in [0, 100]");
    m = resolve_fails("[s]\nsteps = 1\nhidden = 8,0\n");
    assert_contains(m, "t.ini:3: [s] hidden = '8,0'");
    assert_contains(m, "[1, 4096]");
}

Test(values, bad_int_lists)
{
    assert_contains(resolve_fails("[s]\nsteps = 1\nhidden = 8,x\n"), "comma-separated integers");
    assert_contains(resolve_fails("[s]\nsteps = 1\nhidden = 8,\n"), "comma-separated integers");
}

Test(values, bad_enum_lists_the_choices)
{
    const char *m = resolve_fails("[s]\nsteps = 1\nact = sigmoid\n");
    assert_contains(m, "t.ini:3: [s] act = 'sigmoid'");
    assert_contains(m, "expected one of relu,tanh,elu");
}

Test(values, set_entries_are_located_by_their_set)
{
    fl_config *c = parse_ok("[s]\nsteps = 1\n");
    cr_assert_eq(fl_config_set(c, "s.steps=1000"), FL_OK);
    const fl_key *tabs[1] = { keys };
    uint32_t ns[1] = { sizeof keys / sizeof keys[0] };
    fl_values v;
    cr_assert_eq(fl_values_resolve(c, "s", tabs, ns, 1, &v), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "--set s.steps: [s] steps = '1000'");
    fl_config_free(c);
}

Test(values, closest_name)
{
    static const char *const names[] = { "train", "eval", "data", "experiment" };
    cr_assert_str_eq(fl_closest("trian", names, 4), "train");
    cr_assert_str_eq(fl_closest("experimnt", names, 4), "experiment");
    cr_assert_null(fl_closest("zebra", names, 4));
    static const char *const kinds[] = { "elbo", "iwae", "gaussian-diag", "gaussian-full" };
    cr_assert_str_eq(fl_closest("IWAE", kinds, 4), "iwae");
    cr_assert_str_eq(fl_closest("gaussian-diagonal", kinds, 4), "gaussian-diag");
    cr_assert_null(fl_closest("gau", kinds, 4));
}

/* ---- whole experiments, with the real plugins --------------------------- */


/* coupling_moons_ini with the first occurrence of `from` replaced by `to`. */
static char *edited(const char *from, const char *to)
{
    const char *p = strstr(coupling_moons_ini, from);
    cr_assert_not_null(p, "'%s' not in the base config", from);
    return fl_strfmt("%.*s%s%s", (int)(p - coupling_moons_ini), coupling_moons_ini, to, p + strlen(from));
}

/* Builds the edited experiment, expecting status `want`; returns the message. */
static const char *experiment_fails(const char *from, const char *to, fl_status want)
{
    fl_registry *r = load_builtin_plugins();
    char *text = edited(from, to);
    fl_experiment *e = NULL;
    fl_err_clear();
    fl_status st = experiment_from_text(r, "exp.ini", text, NULL, &e);
    cr_assert_eq(st, want, "expected status %d, got %d (%s)", want, st, fl_err_msg());
    cr_assert_null(e);
    free(text);
    fl_registry_free(r);
    return fl_err_msg();
}

Test(experiment, base_config_builds)
{
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "exp.ini", coupling_moons_ini, NULL, &e), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(fl_density_flows(e)->n, 2, "repeat = 2 gives two layers");
    cr_assert_eq(e->info.dim, 2);
    cr_assert_eq(e->batch, 64);
    cr_assert_eq(e->seed, 3);
    cr_assert_gt(e->arena.total, 0);
    fl_experiment_free(e);
    fl_registry_free(r);
}

Test(experiment, unknown_section_suggests_train)
{
    cr_assert_str_eq(experiment_fails("[train]", "[trian]", FL_ERR_INVALID),
                     "exp.ini:13: unknown section [trian]; did you mean [train]?");
}

Test(experiment, unknown_section_from_set_names_the_set)
{
    fl_registry *r = load_builtin_plugins();
    static const char *const sets[] = { "trian.steps=5", NULL };
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "exp.ini", coupling_moons_ini, sets, &e), FL_ERR_INVALID);
    cr_assert_str_eq(fl_err_msg(),
                     "--set trian.steps: unknown section [trian]; did you mean [train]?");
    fl_registry_free(r);
}

Test(experiment, unknown_flow_type_suggests_the_closest)
{
    const char *m = experiment_fails("type = affine-coupling", "type = afine-coupling",
                                     FL_ERR_NOT_FOUND);
    assert_contains(m, "exp.ini:9: [flow.1] type = 'afine-coupling': no such flow");
    assert_contains(m, "did you mean 'affine-coupling'?");
}

Test(experiment, unknown_data_type)
{
    const char *m = experiment_fails("type = moons", "type = moonz", FL_ERR_NOT_FOUND);
    assert_contains(m, "exp.ini:5: [data] type = 'moonz': no such data set");
    assert_contains(m, "did you mean 'moons'?");
    m = experiment_fails("type = moons", "type = imagenet", FL_ERR_NOT_FOUND);
    assert_contains(m, "exp.ini:5: [data] type = 'imagenet': no such data set");
    assert_not_contains(m, "did you mean");
}

Test(experiment, a_wrong_component_type_is_found_before_the_data_loads)
{
    /* the data set could not load (no such csv file): the flow type's typo
     * is still what is reported, so it was checked first */
    const char *m = experiment_fails(
        "type = moons\ntest_size = 200\n\n[flow.1]\ntype = affine-coupling",
        "type = csv\npath = /nonexistent/x.csv\n\n[flow.1]\ntype = afine-coupling",
        FL_ERR_NOT_FOUND);
    assert_contains(m, "exp.ini:9: [flow.1] type = 'afine-coupling': no such flow");
}

Test(experiment, bad_value_in_flow_section)
{
    const char *m = experiment_fails("hidden = 16,16", "hidden = 16,abc", FL_ERR_INVALID);
    assert_contains(m, "exp.ini:11: [flow.1] hidden = '16,abc'");
    assert_contains(m, "comma-separated integers");
}

Test(experiment, unknown_key_in_a_component_section)
{
    const char *m = experiment_fails("hidden = 16,16", "hiden = 16,16", FL_ERR_INVALID);
    assert_contains(m, "exp.ini:11: [flow.1] unknown key 'hiden'; did you mean 'hidden'?");
}

Test(experiment, bad_value_from_set)
{
    fl_registry *r = load_builtin_plugins();
    static const char *const sets[] = { "flow.1.hidden=0", NULL };
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "exp.ini", coupling_moons_ini, sets, &e), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "--set flow.1.hidden: [flow.1] hidden = '0'");
    fl_registry_free(r);
}

Test(experiment, missing_data_type)
{
    assert_contains(experiment_fails("type = moons\n", "", FL_ERR_INVALID),
                    "[data] missing required key 'type'");
}

Test(experiment, resolved_config_has_defaults_and_rebuilds_identically)
{
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "exp.ini", coupling_moons_ini, NULL, &e), FL_OK, "%s",
                 fl_err_msg());
    fl_buf b = { 0 };
    cr_assert_eq(fl_experiment_resolved(e, &b), FL_OK);
    assert_contains(b.data, "\nbeta2 = 0.999\n");
    assert_contains(b.data, "\nzero_init = true\n");
    assert_contains(b.data, "\nnoise = 0.05\n");
    assert_contains(b.data, "[flow.1]\ntype = affine-coupling\nrepeat = 2\n");
    assert_contains(b.data, "\nhidden = 16,16\n");
    /* One section per [flow.N] as written, not per repeated copy. */
    const char *first = strstr(b.data, "[flow.1]");
    cr_assert_null(strstr(first + 1, "[flow.1]"), "[flow.1] written twice:\n%s", b.data);

    fl_experiment *e2 = NULL;
    cr_assert_eq(experiment_from_text(r, "config.ini", b.data, NULL, &e2), FL_OK,
                 "the resolved config does not rebuild: %s\n%s", fl_err_msg(), b.data);
    cr_assert_eq(e2->arena.total, e->arena.total);
    cr_assert_eq(e2->arena.n, e->arena.n);
    cr_assert_eq(fl_density_flows(e2)->n, fl_density_flows(e)->n);
    cr_assert_eq(memcmp(e2->arena.theta, e->arena.theta, e->arena.total * sizeof(fl_real)), 0,
                 "same config and seed must give the same initial parameters");

    /* Resolving is idempotent: the rebuilt experiment resolves to the same text
     * except for the first line, which names the source file. */
    fl_buf b2 = { 0 };
    cr_assert_eq(fl_experiment_resolved(e2, &b2), FL_OK);
    cr_assert_str_eq(strchr(b2.data, '\n'), strchr(b.data, '\n'));
    fl_buf_free(&b);
    fl_buf_free(&b2);
    fl_experiment_free(e2);
    fl_experiment_free(e);
    fl_registry_free(r);
}

/* The iwae schedule's length and its learning rates count passes the same
 * way: on drawn data (moons) a pass is one step, so 2 rounds = 1 + 3 steps,
 * the last three at lr x 10^(-1/7). */
Test(experiment, iwae_schedule_length_and_lr_agree)
{
    fl_registry *r = load_builtin_plugins();
    static const char *const sets[] = { "train.schedule=iwae", "train.iwae_rounds=2",
                                        "train.lr=1e-2", NULL };
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "exp.ini", coupling_moons_ini, sets, &e), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(fl_experiment_steps(e), 4);
    cr_assert_float_eq(fl_experiment_lr(e, 0), 1e-2, 1e-15);
    for (uint64_t step = 1; step < 4; step++)
        cr_assert_float_eq(fl_experiment_lr(e, step), 1e-2 * pow(10.0, -1.0 / 7.0), 1e-15,
                           "step %llu", (unsigned long long)step);
    fl_experiment_free(e);
    fl_registry_free(r);
}

/* ---- values that were once changed without a word (issue 13) ----------- */

SUITE(inputs);

/* "[s]\nsteps = 1\n" + KEY SEP VALUE, where VALUE is `n` x's, + "\n". */
static char *line_of(const char *key, const char *sep, size_t n)
{
    char *v = calloc(n + 1, 1);
    cr_assert_not_null(v);
    memset(v, 'x', n);
    char *t = fl_strfmt("[s]\nsteps = 1\n%s%s%s\n", key, sep, v);
    free(v);
    cr_assert_not_null(t);
    return t;
}

Test(inputs, over_long_line_is_refused_with_file_line_and_limit)
{
    size_t max = fl_config_max_line();
    cr_assert_geq(max, 100, "inih's line limit %zu", max);
    /* one byte over: once cut to `max` bytes without a word */
    char *text = line_of("label", " = ", max - 8 + 1);
    const char *m = parse_fails(text);
    char want[160];
    snprintf(want, sizeof want, "t.ini:3: line is %zu bytes long;", max + 1);
    assert_contains(m, want);
    snprintf(want, sizeof want, "reads at most %zu", max);
    assert_contains(m, want);
    free(text);
    /* a CRLF line of exactly `max` bytes is whole */
    text = line_of("label", " = ", max - 8);
    text[strlen(text) - 1] = '\r';
    char *crlf = fl_strfmt("%s\n", text);
    fl_values v;
    fl_config *c = parse_ok(crlf);
    cr_assert_eq(strlen(fl_config_entry(fl_config_section(c, "s"), "label")->value), max - 8);
    const fl_key *tabs[1] = { keys };
    uint32_t ns[1] = { sizeof keys / sizeof keys[0] };
    cr_assert_eq(fl_values_resolve(c, "s", tabs, ns, 1, &v), FL_OK, "%s", fl_err_msg());
    fl_values_free(&v);
    fl_config_free(c);
    free(crlf);
    free(text);
}

Test(inputs, earlier_syntax_error_wins_over_a_long_line)
{
    size_t max = fl_config_max_line();
    char *v = calloc(max + 10, 1);
    memset(v, 'x', max + 9);
    char *text = fl_strfmt("[s]\nnot a key\nlabel = %s\n", v);
    assert_contains(parse_fails(text), "t.ini:2: syntax error");
    free(text);
    free(v);
}

Test(inputs, nul_byte_in_a_file_is_refused_with_its_line)
{
    char path[] = "/tmp/flowlab_nul_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    static const char text[] = "[s]\nsteps = 1\nlabel = ab\0cd\n[t]\nx = 1\n";
    cr_assert_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    fl_config *c = NULL;
    cr_assert_eq(fl_config_load(path, &c), FL_ERR_INVALID);
    cr_assert_null(c);
    char *want = fl_strfmt("%s:3: contains a NUL byte", path);
    assert_contains(fl_err_msg(), want);
    free(want);
    unlink(path);
}

/* A value that fits in the file but not in the config.ini a run writes
 * back ("key = value"), or comes from --set, is refused at validation. */
Test(inputs, values_that_would_not_read_back_are_refused)
{
    size_t max = fl_config_max_line();
    /* "label=" + value fits; "label = " + value is two bytes over */
    char *text = line_of("label", "=", max - 6);
    assert_contains(resolve_fails(text), "t.ini:3: [s] label: value is");
    free(text);

    static const char *const bad[] = { "s.label=a\nb", "s.label=a ;b", "s.label=;b" };
    static const char *const why[] = { "line break", "comment", "comment" };
    for (size_t i = 0; i < 3; i++) {
        fl_config *c = parse_ok("[s]\nsteps = 1\n");
        cr_assert_eq(fl_config_set(c, bad[i]), FL_OK);
        const fl_key *tabs[1] = { keys };
        uint32_t ns[1] = { sizeof keys / sizeof keys[0] };
        fl_values v;
        cr_assert_eq(fl_values_resolve(c, "s", tabs, ns, 1, &v), FL_ERR_INVALID, "%s", bad[i]);
        assert_contains(fl_err_msg(), "--set s.label: [s] label:");
        assert_contains(fl_err_msg(), why[i]);
        fl_config_free(c);
    }
    /* a ';' inside a word is kept, as inih keeps it */
    fl_values v;
    cr_assert_eq(resolve("[s]\nsteps = 1\nlabel = a;b\n", &v), FL_OK, "%s", fl_err_msg());
    cr_assert_str_eq(fl_values_get(&v, "label")->text, "a;b");
    fl_values_free(&v);
}

Test(inputs, reals_fl_real_cannot_hold_are_refused)
{
    assert_contains(resolve_fails("[s]\nsteps = 1\nlr = 1e-400\n"), "too small for fl_real");
    /* below fl_real's smallest normal number: 0 or a subnormal in a model */
    const char *tiny = sizeof(fl_real) == sizeof(float) ? "1e-39" : "1e-310";
    char *text = fl_strfmt("[s]\nsteps = 1\nlr = %s\n", tiny);
    const char *m = resolve_fails(text);
    assert_contains(m, "t.ini:3: [s] lr = '");
    assert_contains(m, "too small for fl_real");
    free(text);
    fl_values v;
    cr_assert_eq(resolve("[s]\nsteps = 1\nlr = 0\n", &v), FL_OK, "0 is exact: %s", fl_err_msg());
    fl_values_free(&v);
}

Test(inputs, an_integer_just_past_a_large_maximum_is_refused)
{
    /* [experiment] seed is in [0, 2^62]; through double, 2^62 + 1 passed */
    const char *m = experiment_fails("seed = 3", "seed = 4611686018427387905", FL_ERR_INVALID);
    assert_contains(m, "exp.ini:2: [experiment] seed = '4611686018427387905'");
    assert_contains(m, "expected an integer in");
    fl_registry *r = load_builtin_plugins();
    char *text = edited("seed = 3", "seed = 4611686018427387904");
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "exp.ini", text, NULL, &e), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    free(text);
    fl_registry_free(r);
}

/* Comments lose nothing when cut: a long one is accepted, as sweeps rely
 * on (their [sweep] lines reach the INI parser commented out). */
Test(inputs, a_long_comment_line_is_fine)
{
    size_t max = fl_config_max_line();
    char *v = calloc(max + 100, 1);
    memset(v, 'x', max + 99);
    char *text = fl_strfmt("; %s\n[s]\n  # %s\nsteps = 1\n", v, v);
    fl_config *c = parse_ok(text);
    cr_assert_str_eq(fl_config_entry(fl_config_section(c, "s"), "steps")->value, "1");
    cr_assert_eq(fl_config_entry(fl_config_section(c, "s"), "steps")->line, 4);
    fl_config_free(c);
    free(text);
    free(v);
}

/* Issue 13 (found by tests/fuzz/fuzz_config.c): inih keeps a section name
 * in a 50-byte buffer and cut a longer one without a word, so a long
 * [name] (or a --set creating one, written to config.ini) became another
 * section. */
Test(inputs, over_long_section_name_is_refused)
{
    size_t max = fl_config_max_section();
    cr_assert_geq(max, 20, "inih's section limit %zu", max);
    char name[512];
    cr_assert_lt(max + 2, sizeof name);
    memset(name, 'a', max + 1);
    name[max + 1] = 0;
    /* one character over: refused, naming the line and the limit */
    char *text = fl_strfmt("[s]\nx = 1\n[%s]\nk = v\n", name);
    const char *m = parse_fails(text);
    char want[160];
    snprintf(want, sizeof want, "t.ini:3: section name is %zu characters long", max + 1);
    assert_contains(m, want);
    snprintf(want, sizeof want, "keeps at most %zu", max);
    assert_contains(m, want);
    free(text);
    /* exactly `max`: kept whole, with its key */
    name[max] = 0;
    text = fl_strfmt("[%s]\nk = v\n", name);
    fl_config *c = parse_ok(text);
    cr_assert_eq(c->n, 1);
    cr_assert_str_eq(c->s[0].name, name);
    cr_assert_str_eq(fl_config_entry(&c->s[0], "k")->value, "v");
    /* --set: refused over the limit, accepted at it */
    name[max] = 'a';
    char *set = fl_strfmt("%s.k=w", name);
    cr_assert_eq(fl_config_set(c, set), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "section name is");
    free(set);
    name[max] = 0;
    set = fl_strfmt("%s.k=w", name);
    cr_assert_eq(fl_config_set(c, set), FL_OK, "%s", fl_err_msg());
    cr_assert_str_eq(fl_config_entry(&c->s[0], "k")->value, "w");
    free(set);
    fl_config_free(c);
    free(text);
}

/* Issue 13 (found by tests/fuzz/fuzz_config.c): a --set value with a form
 * feed or vertical tab at an end kept it, and config.ini read it back
 * without (inih trims every isspace character). */
Test(set, value_is_trimmed_as_inih_trims_a_file_value)
{
    fl_config *c = parse_ok("[s]\nk = v\n");
    cr_assert_eq(fl_config_set(c, "s.name=\f\vabc\r\f"), FL_OK, "%s", fl_err_msg());
    cr_assert_str_eq(fl_config_entry(fl_config_section(c, "s"), "name")->value, "abc");
    cr_assert_eq(fl_config_set(c, "s.n= \f7"), FL_OK, "%s", fl_err_msg());
    cr_assert_str_eq(fl_config_entry(fl_config_section(c, "s"), "n")->value, "7");
    fl_config_free(c);
}
