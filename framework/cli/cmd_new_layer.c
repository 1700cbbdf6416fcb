/* cmd_new_layer.c - `flowlab new-layer NAME`: writes a small, working flow
 * layer plugin to start from, and prints the commands that build and check
 * it. The layer (an element-wise affine map) passes `flowlab check` as
 * written, as graphs on the expression service (the default) or by hand
 * with its backward pass (--kind hand); docs/writing-a-layer.md walks
 * through both. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/util.h"

#ifndef FL_SOURCE_INCLUDE_DIR
#define FL_SOURCE_INCLUDE_DIR ""
#endif
#ifndef FL_INSTALL_INCLUDE_DIR
#define FL_INSTALL_INCLUDE_DIR "/usr/local/include"
#endif

static const char usage[] =
    "usage: flowlab new-layer NAME [--dir D] [--kind graph|hand]\n"
    "\n"
    "Writes D/NAME.c (D defaults to the current folder), a flow layer plugin\n"
    "to start from: flow type NAME with '_' as '-', an element-wise affine map\n"
    "y = x * exp(a) + b with one key (init_log_scale). --kind graph (the\n"
    "default) builds it as expression graphs, so the host derives the backward\n"
    "pass; --kind hand writes forward, backward and inverse by hand. Prints the\n"
    "command that builds D/NAME.so and the one that checks it. NAME must be a\n"
    "C identifier (letters, digits, '_'; not starting with a digit), and\n"
    "D/NAME.c must not exist yet.\n";

/* The two starting files. @NAME@ is the file's name, @TYPE@ the flow's. */
static const char graph_src[] =
    "/* @NAME@.c - a flow layer for flowlab as two expression graphs: the host\n"
    " * differentiates the forward graph and runs the inverse one.\n"
    " *\n"
    " *   y = x * exp(a) + b,   logdet = sum_j a_j\n"
    " *\n"
    " * a and b are vectors of `dim` parameters, a starting at the key\n"
    " * init_log_scale (default 0) and b at 0, so by default the layer starts\n"
    " * as the identity. */\n"
    "#include <flowlab/flowlab.h>\n"
    "\n"
    "static const fl_key keys[] = {\n"
    "    { \"init_log_scale\", FL_KEY_REAL, \"0\", -5, 5, NULL,\n"
    "      \"initial value of every log-scale a_j\" },\n"
    "};\n"
    "\n"
    "static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)\n"
    "{\n"
    "    double a0 = h->cfg_real(cx, \"init_log_scale\");\n"
    "    fl_param_spec as = { \"a\", sh->dim, FL_INIT_CONST, 0, 0, a0, 0 };\n"
    "    fl_param_spec bs = { \"b\", sh->dim, FL_INIT_ZERO, 0, 0, 0, 0 };\n"
    "    size_t ao = 0, bo = 0;\n"
    "    /* forward: y = x exp(a) + b, logdet = sum_j a_j */\n"
    "    fl_ex f = fl_ex_begin(h, cx, sh);\n"
    "    fl_node a = fl_ex_param_at(f, &as, &ao), b = fl_ex_param_at(f, &bs, &bo), x = fl_ex_x(f);\n"
    "    fl_node y = fl_ex_add(f, fl_ex_mul(f, x, fl_ex_exp(f, a)), b);\n"
    "    fl_status st = fl_ex_compile(f, y, fl_ex_sum(f, a), 0);\n"
    "    /* inverse, on the same parameters: x = (y - b) exp(-a), logdet = -sum_j a_j */\n"
    "    fl_ex v = fl_ex_begin(h, cx, sh);\n"
    "    fl_node ai = fl_ex_theta(v, ao, sh->dim), bi = fl_ex_theta(v, bo, sh->dim), yi = fl_ex_x(v);\n"
    "    fl_node xi = fl_ex_mul(v, fl_ex_sub(v, yi, bi), fl_ex_exp(v, fl_ex_neg(v, ai)));\n"
    "    if (st == FL_OK) st = fl_ex_compile(v, xi, fl_ex_neg(v, fl_ex_sum(v, ai)), FL_EX_NO_BACKWARD);\n"
    "    return st == FL_OK ? fl_ex_layer_make(f, f.g, v.g, self) : st;\n"
    "}\n"
    "\n"
    "FL_EX_FLOW_PLUGIN(\"@TYPE@\", \"0.1.0\", \"@TYPE@\", \"element-wise affine: y = x*exp(a) + b\",\n"
    "                  keys, 1, FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE,\n"
    "                  create)\n";

static const char hand_src[] =
    "/* @NAME@.c - a flow layer for flowlab, written by hand: forward, backward\n"
    " * (the vector-Jacobian product) and inverse.\n"
    " *\n"
    " *   y = x * exp(a) + b,   logdet = sum_j a_j\n"
    " *\n"
    " * a and b are vectors of `dim` parameters, a starting at the key\n"
    " * init_log_scale (default 0) and b at 0, so by default the layer starts\n"
    " * as the identity. */\n"
    "#include <math.h>\n"
    "#include <stdlib.h>\n"
    "\n"
    "#include <flowlab/flowlab.h>\n"
    "\n"
    "typedef struct layer {\n"
    "    uint32_t dim;\n"
    "    size_t a_off, b_off;  /* offsets of a and b inside theta */\n"
    "} layer;\n"
    "\n"
    "static const fl_key keys[] = {\n"
    "    { \"init_log_scale\", FL_KEY_REAL, \"0\", -5, 5, NULL,\n"
    "      \"initial value of every log-scale a_j\" },\n"
    "};\n"
    "\n"
    "static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)\n"
    "{\n"
    "    layer *f = calloc(1, sizeof *f);\n"
    "    if (!f) {\n"
    "        h->error(cx, \"out of memory\");\n"
    "        return FL_ERR_NOMEM;\n"
    "    }\n"
    "    f->dim = sh->dim;\n"
    "    double a0 = h->cfg_real(cx, \"init_log_scale\");\n"
    "    fl_param_spec a = { \"a\", sh->dim, FL_INIT_CONST, 0, 0, a0, 0 };\n"
    "    fl_param_spec b = { \"b\", sh->dim, FL_INIT_ZERO, 0, 0, 0, 0 };\n"
    "    fl_status st = h->param(cx, &a, &f->a_off);\n"
    "    if (st == FL_OK) st = h->param(cx, &b, &f->b_off);\n"
    "    if (st != FL_OK) {\n"
    "        free(f);\n"
    "        return st;\n"
    "    }\n"
    "    *self = f;\n"
    "    return FL_OK;\n"
    "}\n"
    "\n"
    "static void destroy(void *self) { free(self); }\n"
    "\n"
    "static fl_status forward(void *self, const fl_flow_fwd *p)\n"
    "{\n"
    "    const layer *f = self;\n"
    "    const fl_real *a = p->theta + f->a_off, *b = p->theta + f->b_off;\n"
    "    fl_real sum_a = 0;\n"
    "    for (uint32_t j = 0; j < f->dim; j++) sum_a += a[j];\n"
    "    for (uint32_t r = 0; r < p->n; r++) {\n"
    "        const fl_real *x = p->x + (size_t)r * f->dim;\n"
    "        fl_real *y = p->y + (size_t)r * f->dim;\n"
    "        for (uint32_t j = 0; j < f->dim; j++) y[j] = x[j] * (fl_real)exp(a[j]) + b[j];\n"
    "        p->logdet[r] += sum_a;\n"
    "    }\n"
    "    return FL_OK;\n"
    "}\n"
    "\n"
    "/* dL/dx_j = dy_j exp(a_j); dL/da_j = sum_r (dy_rj x_rj exp(a_j) + dlogdet_r);\n"
    " * dL/db_j = sum_r dy_rj. Everything is added to what is already there. */\n"
    "static fl_status backward(void *self, const fl_flow_bwd *p)\n"
    "{\n"
    "    const layer *f = self;\n"
    "    const fl_real *a = p->theta + f->a_off;\n"
    "    fl_real *da = p->dtheta + f->a_off, *db = p->dtheta + f->b_off;\n"
    "    for (uint32_t r = 0; r < p->n; r++) {\n"
    "        const fl_real *x = p->x + (size_t)r * f->dim, *dy = p->dy + (size_t)r * f->dim;\n"
    "        fl_real *dx = p->dx + (size_t)r * f->dim;\n"
    "        for (uint32_t j = 0; j < f->dim; j++) {\n"
    "            fl_real e = (fl_real)exp(a[j]);\n"
    "            dx[j] += dy[j] * e;\n"
    "            da[j] += dy[j] * x[j] * e + p->dlogdet[r];\n"
    "            db[j] += dy[j];\n"
    "        }\n"
    "    }\n"
    "    return FL_OK;\n"
    "}\n"
    "\n"
    "static fl_status inverse(void *self, const fl_flow_inv *p)\n"
    "{\n"
    "    const layer *f = self;\n"
    "    const fl_real *a = p->theta + f->a_off, *b = p->theta + f->b_off;\n"
    "    fl_real sum_a = 0;\n"
    "    for (uint32_t j = 0; j < f->dim; j++) sum_a += a[j];\n"
    "    for (uint32_t r = 0; r < p->n; r++) {\n"
    "        const fl_real *y = p->y + (size_t)r * f->dim;\n"
    "        fl_real *x = p->x + (size_t)r * f->dim;\n"
    "        for (uint32_t j = 0; j < f->dim; j++) x[j] = (y[j] - b[j]) * (fl_real)exp(-a[j]);\n"
    "        if (p->logdet) p->logdet[r] -= sum_a;\n"
    "    }\n"
    "    return FL_OK;\n"
    "}\n"
    "\n"
    "static const fl_flow_class layer_class = {\n"
    "    .base = { sizeof(fl_flow_class), \"@TYPE@\", \"element-wise affine: y = x*exp(a) + b\",\n"
    "              keys, sizeof keys / sizeof keys[0] },\n"
    "    .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE,\n"
    "    .create = create,\n"
    "    .destroy = destroy,\n"
    "    .forward = forward,\n"
    "    .backward = backward,\n"
    "    .inverse = inverse,\n"
    "};\n"
    "\n"
    "static fl_status init(const fl_host *host, fl_registrar *r)\n"
    "{\n"
    "    (void)host;\n"
    "    return r->add(r, FL_KIND_FLOW, &layer_class.base);\n"
    "}\n"
    "\n"
    "FL_PLUGIN(\"@TYPE@\", \"0.1.0\", init)\n";

/* `tmpl` with @NAME@ and @TYPE@ replaced, written to `f`. */
static void expand(FILE *f, const char *tmpl, const char *name, const char *type)
{
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "@NAME@", 6) == 0) {
            fputs(name, f);
            p += 6;
        } else if (strncmp(p, "@TYPE@", 6) == 0) {
            fputs(type, f);
            p += 6;
        } else {
            fputc(*p++, f);
        }
    }
}

/* The folder of include/flowlab/flowlab.h: the source tree's while it is
 * there (a build tree), else the installed one. */
static const char *include_dir(void)
{
    char probe[PATH_MAX];
    snprintf(probe, sizeof probe, "%s/flowlab/flowlab.h", FL_SOURCE_INCLUDE_DIR);
    if (FL_SOURCE_INCLUDE_DIR[0] && access(probe, R_OK) == 0) return FL_SOURCE_INCLUDE_DIR;
    return FL_INSTALL_INCLUDE_DIR;
}

int fl_cmd_new_layer(fl_cli *cli, int argc, char **argv)
{
    (void)cli;
    const char *name = NULL, *dir = ".", *kind = "graph";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc) {
            kind = argv[++i];
        } else if (argv[i][0] != '-' && !name) {
            name = argv[i];
        } else {
            fprintf(stderr, "flowlab new-layer: error: unexpected argument '%s'\n%s", argv[i],
                    usage);
            return FL_EXIT_USAGE;
        }
    }
    if (!name) {
        fprintf(stderr, "flowlab new-layer: error: give the layer's NAME\n%s", usage);
        return FL_EXIT_USAGE;
    }
    size_t len = strlen(name);
    if (len > 64 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
                        != len || (name[0] >= '0' && name[0] <= '9')) {
        fprintf(stderr,
                "flowlab new-layer: error: NAME '%s' is not a C identifier (letters, digits "
                "and '_', not starting with a digit, at most 64)\n", name);
        return FL_EXIT_USAGE;
    }
    if (strcmp(kind, "graph") != 0 && strcmp(kind, "hand") != 0) {
        fprintf(stderr, "flowlab new-layer: error: --kind '%s': expected graph or hand\n", kind);
        return FL_EXIT_USAGE;
    }
    char real_dir[PATH_MAX];
    struct stat sb;
    if (!realpath(dir, real_dir) || stat(real_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "flowlab new-layer: error: --dir %s: not a folder\n", dir);
        return FL_EXIT_IO;
    }
    char *src = fl_strfmt("%s/%s.c", real_dir, name), *so = fl_strfmt("%s/%s.so", real_dir, name);
    char *type = fl_strdup(name);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) snprintf(exe, sizeof exe, "flowlab");
    else exe[n] = 0;
    int rc = FL_EXIT_OK;
    if (!src || !so || !type) {
        fprintf(stderr, "flowlab new-layer: error: out of memory\n");
        rc = FL_EXIT_FAILURE;
    }
    for (char *p = type; p && *p; p++)
        if (*p == '_') *p = '-';
    /* O_EXCL: never overwrite a file, even one that appears meanwhile. */
    int fd = rc ? -1 : open(src, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (!rc && fd < 0) {
        const int err = errno;
        rc = err == EEXIST ? FL_EXIT_USAGE : FL_EXIT_IO;
        if (err == EEXIST)
            fprintf(stderr, "flowlab new-layer: error: %s already exists; choose another NAME "
                            "or remove it\n", src);
        else fprintf(stderr, "flowlab new-layer: error: %s: %s\n", src, strerror(err));
    }
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (fd >= 0 && !f) close(fd);
    if (f) {
        expand(f, strcmp(kind, "hand") == 0 ? hand_src : graph_src, name, type);
        int bad = ferror(f);
        if (fclose(f) != 0 || bad) {
            fprintf(stderr, "flowlab new-layer: error: %s: cannot write: %s\n", src,
                    strerror(errno));
            rc = FL_EXIT_IO;
        }
    } else if (!rc) {
        rc = FL_EXIT_IO;
    }
    if (!rc) {
        printf("wrote %s: flow '%s', an element-wise affine layer %s\n", src, type,
               strcmp(kind, "hand") == 0 ? "written by hand" : "as expression graphs");
        printf("build it:\n  cc -std=c11 -O2 -shared -fPIC -fvisibility=hidden -I %s%s %s -o %s "
               "-lm\n", include_dir(), sizeof(fl_real) == 8 ? " -DFL_REAL_DOUBLE" : "", src, so);
        printf("check it:\n  %s check --plugin %s\n", exe, so);
    }
    free(src);
    free(so);
    free(type);
    return rc;
}
