/* cmd_plugins.c - `flowlab plugins`: components and their keys. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "model/experiment.h"
#include "tasks/task.h"
#include "core/util.h"

static const char usage[] =
    "usage: flowlab plugins [NAME] [--plugin PATH]...\n"
    "\n"
    "Without NAME: every loaded plugin and its components, grouped by kind, and\n"
    "the plugins that were refused with the reason. With NAME: the component's\n"
    "INI keys (type, default, range, help), generated from its schema.\n";

static const char *type_name(fl_key_type t)
{
    switch (t) {
    case FL_KEY_INT: return "int";
    case FL_KEY_REAL: return "real";
    case FL_KEY_BOOL: return "bool";
    case FL_KEY_STRING: return "string";
    case FL_KEY_ENUM: return "enum";
    case FL_KEY_INT_LIST: return "int list";
    }
    return "?";
}

static void flags_str(const fl_comp_rec *c, char *buf, size_t cap)
{
    buf[0] = 0;
    if (c->kind != FL_KIND_FLOW) return;
    uint32_t f = c->cls.flow.flags;
    snprintf(buf, cap, "%s%s%s%s%s%s%s", f & FL_FLOW_HAS_INVERSE ? " inverse" : " no-inverse",
             f & FL_FLOW_CHEAP_FORWARD ? " fast-forward" : "",
             f & FL_FLOW_CHEAP_INVERSE ? " fast-inverse" : "",
             f & FL_FLOW_ACCEPTS_CONTEXT ? " context" : "",
             f & FL_FLOW_BATCH_COUPLED ? " batch-coupled" : "",
             f & FL_FLOW_AUTOREGRESSIVE ? " autoregressive" : "",
             f & FL_FLOW_SHAPED ? " shaped" : "");
}

static void print_keys(const fl_key *keys, uint32_t n);

static void describe(const fl_registry *r, const fl_comp_rec *c)
{
    char fl[128];
    flags_str(c, fl, sizeof fl);
    printf("%s %s  (plugin %s %s, %s)\n  %s\n", fl_kind_name(c->kind), c->cls.base.name,
           r->plugins[c->plugin].name, r->plugins[c->plugin].version, r->plugins[c->plugin].path,
           c->cls.base.summary ? c->cls.base.summary : "");
    if (fl[0]) printf("  properties:%s\n", fl);
    printf("\n  keys of its section (besides 'type'%s):\n",
           c->kind == FL_KIND_FLOW        ? ", 'repeat', 'permute'"
           : c->kind == FL_KIND_ESTIMATOR ? ", 'k' (samples per data point)"
                                          : "");
    print_keys(c->cls.base.keys, c->cls.base.n_keys);
}

static int has_data(const fl_task *t) { return t->model.data; }
static int host_eval(const fl_task *t) { return t->model.eval_keys == NULL; }

/* `flowlab plugins train`: the host's own sections are documented too,
 * each task's from the task table. */
static int describe_section(const char *name)
{
    int found = 0;
    uint32_t n = 0;
    char who[256];
    const fl_key *k = fl_experiment_section_keys(name, &n);
    if (k) {
        if (strcmp(name, "data") == 0) {
            fl_task_names(has_data, who, sizeof who);
            snprintf(who + strlen(who), sizeof who - strlen(who),
                     ", besides the data set's own keys");
        } else if (strcmp(name, "eval") == 0) {
            fl_task_names(host_eval, who, sizeof who);
        } else {
            snprintf(who, sizeof who, "every task");
        }
        printf("section [%s] (the host's; %s)\n", name, who);
        print_keys(k, n);
        found = 1;
    }
    if (strcmp(name, "experiment") == 0) {
        printf("\n  tasks ([experiment] task):\n");
        for (size_t i = 0; fl_task_at(i); i++)
            printf("    %-14s %s\n", fl_task_at(i)->model.name, fl_task_at(i)->model.help);
    }
    for (size_t i = 0; fl_task_at(i); i++) {
        const fl_task *t = fl_task_at(i);
        k = NULL;
        if (strcmp(name, "eval") == 0 && t->model.eval_keys) {
            k = t->model.eval_keys;
            n = t->model.n_eval_keys;
        } else if (t->section_keys) {
            k = t->section_keys(name, &n);
        }
        if (!k) continue;
        printf("%ssection [%s] (the host's; %s)\n", found ? "\n" : "", name, t->model.name);
        print_keys(k, n);
        found = 1;
    }
    if (found && strcmp(name, "eval") == 0)
        printf("\n  Evaluation subsets ([eval] n and valid_n, `flowlab eval --n`) are uniform\n"
               "  random draws of the split's rows from the fixed rng key (rows of the split,\n"
               "  \"eval.subset\"): the same points for every run, seed and model of a data\n"
               "  set, so comparisons stay paired. The split's first rows only with\n"
               "  [eval] pick = first (vae) or `flowlab eval --pick first`.\n");
    return found;
}

static void print_keys(const fl_key *keys, uint32_t n)
{
    if (!n) printf("    (none)\n");
    for (uint32_t i = 0; i < n; i++) {
        const fl_key *k = &keys[i];
        char range[128] = "";
        if (k->type == FL_KEY_ENUM) snprintf(range, sizeof range, " one of %s", k->choices);
        else if (k->min <= k->max && k->type != FL_KEY_BOOL && k->type != FL_KEY_STRING)
            snprintf(range, sizeof range, " in [%.15g, %.15g]", k->min, k->max);
        printf("    %-14s %s%s, default %s\n        %s\n", k->name, type_name(k->type), range,
               k->def ? k->def : "(required)", k->help);
    }
}

int fl_cmd_plugins(fl_cli *cli, int argc, char **argv)
{
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (argv[i][0] == '-' || name) {
            fprintf(stderr, "flowlab plugins: error: unexpected argument '%s'\n%s", argv[i], usage);
            return FL_EXIT_USAGE;
        } else {
            name = argv[i];
        }
    }
    fl_registry *r;
    fl_status st = fl_cli_registry(cli, &r);
    if (st != FL_OK) return fl_cli_fail(st);
    int rc = FL_EXIT_OK;
    if (name) {
        int found = 0;
        for (size_t i = 0; i < r->n_comps; i++)
            if (strcmp(r->comps[i].cls.base.name, name) == 0) {
                if (found) printf("\n");
                describe(r, &r->comps[i]);
                found = 1;
            }
        if (!found) found = describe_section(name);
        if (!found) {
            const char *near = NULL;
            for (fl_kind k = FL_KIND_FLOW; k <= FL_KIND_DATASET && !near; k++)
                near = fl_registry_suggest(r, k, name);
            const char *host[64] = { "experiment", "train", "eval", "data" };
            size_t nh = 4;
            for (size_t t = 0; fl_task_at(t); t++)
                for (const char *const *sec = fl_task_at(t)->model.sections; *sec && nh < 64; sec++)
                    host[nh++] = *sec;
            if (!near) near = fl_closest(name, host, nh);
            fl_err("no component named '%s'%s%s%s", name, near ? "; did you mean '" : "",
                   near ? near : "", near ? "'?" : "");
            rc = fl_cli_fail(FL_ERR_NOT_FOUND);
        }
    } else {
        for (fl_kind k = FL_KIND_FLOW; k <= FL_KIND_DATASET; k++) {
            int any = 0;
            for (size_t i = 0; i < r->n_comps; i++) {
                const fl_comp_rec *c = &r->comps[i];
                if (c->kind != k) continue;
                if (!any) printf("%ss:\n", fl_kind_name(k));
                any = 1;
                printf("  %-18s %s\n", c->cls.base.name, c->cls.base.summary ? c->cls.base.summary : "");
            }
            if (any) printf("\n");
        }
        printf("plugins:\n");
        for (size_t i = 0; i < r->n_plugins; i++)
            printf("  %-18s %-8s %s\n", r->plugins[i].name, r->plugins[i].version, r->plugins[i].path);
        for (size_t i = 0; i < r->n_refused; i++) printf("  refused: %s\n", r->refused[i]);
        printf("\n`flowlab plugins NAME` documents a component's keys, and `flowlab plugins "
               "train` (experiment, eval, data, encoder, decoder, vi) the host's sections.\n");
    }
    fl_registry_free(r);
    return rc;
}
