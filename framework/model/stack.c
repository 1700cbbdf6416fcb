/* stack.c - building flow stacks from [flow.N] sections and running them. */
#include "model/stack.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crash.h"
#include "core/hostimpl.h"
#include "core/log.h"
#include "core/util.h"

const fl_key fl_flow_host_keys[] = {
    { "type", FL_KEY_STRING, NULL, 0, 0, NULL, "flow component (see `flowlab plugins`)" },
    { "repeat", FL_KEY_INT, "1", 1, 100000, NULL, "how many copies of this layer to stack" },
    { "permute", FL_KEY_ENUM, "none", 0, 0, "none|reverse|random",
      "permutation inserted between the repeated copies" },
};
const uint32_t fl_flow_host_nkeys = 3;

fl_stack *fl_stack_new(fl_arena *arena, uint64_t seed, uint32_t dim, uint32_t ctx_dim,
                       uint32_t max_rows)
{
    fl_stack *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->arena = arena;
    s->seed = seed;
    s->dim = dim;
    s->ctx_dim = ctx_dim;
    s->max_rows = max_rows;
    s->c = s->cur_c = dim;
    s->h = s->cur_h = 1;
    s->w = s->cur_w = 1;
    return s;
}

fl_status fl_stack_set_image(fl_stack *s, uint32_t c, uint32_t h, uint32_t w)
{
    if (s->n || (uint64_t)c * h * w != s->dim) {
        fl_err("internal: image shape %ux%ux%u set on a stack of dim %u with %zu layers", c, h,
               w, s->dim, s->n);
        return FL_ERR_INVALID;
    }
    s->c = s->cur_c = c;
    s->h = s->cur_h = h;
    s->w = s->cur_w = w;
    return FL_OK;
}

void fl_stack_free(fl_stack *s)
{
    if (!s) return;
    for (size_t i = s->n; i-- > 0;) {
        fl_layer *l = &s->L[i];
        if (l->self) l->cls->destroy(l->self);
        fl_ctx_free(l->cx);
        fl_values_free(&l->cfg);
    }
    if (s->act)
        for (size_t i = 1; i <= s->n; i++) fl_free(s->act[i]);
    free(s->act);
    fl_free(s->g0);
    fl_free(s->g1);
    fl_free(s->z);
    fl_free(s->dz);
    fl_free(s->out);
    free(s->L);
    free(s);
}

fl_status fl_stack_push(fl_stack *s, const fl_flow_class *cls, const char *path, fl_values *cfg,
                        uint32_t index)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        fl_layer *nl = realloc(s->L, cap * sizeof *nl);
        if (!nl) {
            fl_values_free(cfg);
            return FL_ERR_NOMEM;
        }
        s->L = nl;
        s->cap = cap;
    }
    fl_layer *l = &s->L[s->n];
    memset(l, 0, sizeof *l);
    l->cls = cls;
    l->cfg = *cfg;
    memset(cfg, 0, sizeof *cfg);
    s->n++; /* owned from here on: freed with the stack even on failure */
    l->cx = fl_ctx_new(path, &l->cfg, s->arena, s->seed);
    if (!l->cx) return FL_ERR_NOMEM;
    l->block = l->cx->block;
    l->in_c = s->cur_c;
    l->in_h = s->cur_h;
    l->in_w = s->cur_w;
    fl_ctx_flow_shape(l->cx, l->in_c, l->in_h, l->in_w);
    fl_flow_shape sh = { l->in_c * l->in_h * l->in_w, s->ctx_dim, s->max_rows, index,
                         (uint32_t)(s->n - 1), l->in_c, l->in_h, l->in_w };
    fl_host_clear_error();
    fl_crash_enter(path, cls->base.name, "create");
    fl_status st = cls->create(fl_host_table(), l->cx, &sh, &l->self);
    fl_crash_leave();
    fl_ctx_end_create(l->cx);
    if (st != FL_OK) {
        l->self = NULL;
        return fl_comp_fail(st, "[%s] %s: cannot create", path, cls->base.name);
    }
    l->out_c = l->cx->out_c;
    l->out_h = l->cx->out_h;
    l->out_w = l->cx->out_w;
    /* host->flow_output guarantees 0 < out_dim <= in_dim */
    l->in_dim = sh.dim;
    l->out_dim = l->out_c * l->out_h * l->out_w;
    l->zdim = l->in_dim - l->out_dim;
    l->zoff = s->zdim;
    s->zdim += l->zdim;
    s->cur_c = l->out_c;
    s->cur_h = l->out_h;
    s->cur_w = l->out_w;
    return FL_OK;
}

typedef struct sect {
    long n;
    const fl_cfg_section *s;
} sect;

static int cmp_sect(const void *a, const void *b)
{
    long x = ((const sect *)a)->n, y = ((const sect *)b)->n;
    return (x > y) - (x < y);
}

/* Validates a flow section and returns its class; *cfg gets the values. */
static fl_status resolve_flow(const fl_registry *reg, const fl_config *cfg, const char *name,
                              const char *type_override, const fl_flow_class **cls,
                              fl_values *vals)
{
    const fl_cfg_section *sec = fl_config_section(cfg, name);
    const char *type = type_override;
    char where[512];
    if (!type) {
        fl_cfg_entry *e = fl_config_entry(sec, "type");
        if (!e) {
            fl_config_where(cfg, sec, NULL, where, sizeof where);
            fl_err("%s: [%s] missing required key 'type' (a flow; `flowlab plugins` lists them)",
                   where, name);
            return FL_ERR_INVALID;
        }
        type = e->value;
        const fl_comp_rec *rec = fl_registry_find(reg, FL_KIND_FLOW, type);
        if (!rec) {
            const char *near = fl_registry_suggest(reg, FL_KIND_FLOW, type);
            fl_config_where(cfg, sec, e, where, sizeof where);
            if (near)
                fl_err("%s: [%s] type = '%s': no such flow; did you mean '%s'?", where, name, type,
                       near);
            else
                fl_err("%s: [%s] type = '%s': no such flow (`flowlab plugins` lists them)", where,
                       name, type);
            return FL_ERR_NOT_FOUND;
        }
        *cls = &rec->cls.flow;
        const fl_key *tabs[2] = { fl_flow_host_keys, rec->cls.base.keys };
        uint32_t ns[2] = { fl_flow_host_nkeys, rec->cls.base.n_keys };
        return fl_values_resolve(cfg, name, tabs, ns, 2, vals);
    }
    const fl_comp_rec *rec = fl_registry_find(reg, FL_KIND_FLOW, type);
    if (!rec) {
        fl_err("flow '%s' (needed for 'permute') is not loaded", type);
        return FL_ERR_NOT_FOUND;
    }
    *cls = &rec->cls.flow;
    const fl_key *tabs[1] = { rec->cls.base.keys };
    uint32_t ns[1] = { rec->cls.base.n_keys };
    return fl_values_resolve(cfg, "", tabs, ns, 1, vals);
}

fl_status fl_stack_from_config(fl_stack *s, const fl_registry *reg, const fl_config *cfg)
{
    sect *ss = calloc(cfg->n + 1, sizeof *ss);
    if (!ss) return FL_ERR_NOMEM;
    size_t m = 0;
    for (size_t i = 0; i < cfg->n; i++) {
        const char *nm = cfg->s[i].name;
        if (strcmp(nm, "flow") == 0) ss[m++] = (sect){ 0, &cfg->s[i] };
        else if (strncmp(nm, "flow.", 5) == 0) {
            char *end;
            long k = strtol(nm + 5, &end, 10);
            if (*end || end == nm + 5 || k < 0) {
                char where[512];
                fl_config_where(cfg, &cfg->s[i], NULL, where, sizeof where);
                fl_err("%s: bad section name [%s]: flow sections are [flow] or [flow.N], N >= 0",
                       where, nm);
                free(ss);
                return FL_ERR_INVALID;
            }
            ss[m++] = (sect){ k, &cfg->s[i] };
        }
    }
    qsort(ss, m, sizeof *ss, cmp_sect);
    for (size_t i = 1; i < m; i++)
        if (ss[i].n == ss[i - 1].n) {
            fl_err("%s: sections [%s] and [%s] have the same position", cfg->path,
                   ss[i - 1].s->name, ss[i].s->name);
            free(ss);
            return FL_ERR_INVALID;
        }
    fl_status st = FL_OK;
    for (size_t i = 0; i < m && st == FL_OK; i++) {
        const char *name = ss[i].s->name;
        const fl_flow_class *cls;
        fl_values v;
        st = resolve_flow(reg, cfg, name, NULL, &cls, &v);
        if (st != FL_OK) break;
        int64_t repeat = fl_values_get(&v, "repeat")->i;
        int64_t perm = fl_values_get(&v, "permute")->i;
        for (int64_t r = 0; r < repeat && st == FL_OK; r++) {
            fl_values copy;
            if (r + 1 < repeat) {
                /* Each copy owns its values; re-resolve (cheap, validated). */
                st = resolve_flow(reg, cfg, name, NULL, &cls, &copy);
                if (st != FL_OK) break;
            } else {
                copy = v;
                memset(&v, 0, sizeof v);
            }
            char path[300];
            snprintf(path, sizeof path, repeat > 1 ? "%s.%lld" : "%s", name, (long long)r);
            st = fl_stack_push(s, cls, path, &copy, (uint32_t)r);
            if (st != FL_OK && st != FL_ERR_NOMEM) { /* say where the section is */
                char where[512], *m = fl_strdup(fl_err_msg());
                fl_config_where(cfg, fl_config_section(cfg, name), NULL, where, sizeof where);
                if (m) fl_err("%s: %s", where, m);
                free(m);
            }
            if (st == FL_OK && perm && r + 1 < repeat) {
                const fl_flow_class *pc;
                fl_values pv;
                st = resolve_flow(reg, cfg, name, perm == 1 ? "reverse" : "permute", &pc, &pv);
                snprintf(path, sizeof path, "%s.%lld.perm", name, (long long)r);
                if (st == FL_OK) st = fl_stack_push(s, pc, path, &pv, (uint32_t)r);
            }
        }
        fl_values_free(&v);
    }
    free(ss);
    return st;
}

fl_status fl_stack_ready(fl_stack *s)
{
    const size_t R = s->max_rows, fs = sizeof(fl_real);
    size_t sz = R * s->dim * fs;
    s->act = calloc(s->n + 1, sizeof *s->act);
    s->g0 = fl_alloc(sz);
    s->g1 = fl_alloc(sz);
    if (!s->act || !s->g0 || !s->g1) return FL_ERR_NOMEM;
    for (size_t i = 1; i <= s->n; i++)
        if (!(s->act[i] = fl_alloc(R * s->L[i - 1].out_dim * fs))) return FL_ERR_NOMEM;
    if (s->zdim) {
        s->z = fl_alloc(R * s->zdim * fs);
        s->dz = fl_alloc(R * s->zdim * fs);
        s->out = fl_alloc(sz);
        if (!s->z || !s->dz || !s->out) return FL_ERR_NOMEM;
    }
    return FL_OK;
}

/* Layer l's block of z (or dz): n rows of l->zdim; NULL when it keeps all. */
static fl_real *zblock(const fl_stack *s, fl_real *base, const fl_layer *l)
{
    return l->zdim ? base + (size_t)s->max_rows * l->zoff : NULL;
}

/* Rows of [z... | y] (n x dim) from the factored-out blocks at zbase and
 * the last layer's y (n x last_dim). */
static void rows_gather(const fl_stack *s, uint32_t n, const fl_real *zbase, const fl_real *y,
                        uint32_t last_dim, fl_real *rows)
{
    const size_t fs = sizeof(fl_real);
    for (size_t i = 0; i < s->n; i++) {
        const fl_layer *l = &s->L[i];
        if (!l->zdim) continue;
        const fl_real *zb = zbase + (size_t)s->max_rows * l->zoff;
        for (uint32_t r = 0; r < n; r++)
            memcpy(rows + (size_t)r * s->dim + l->zoff, zb + (size_t)r * l->zdim, l->zdim * fs);
    }
    for (uint32_t r = 0; r < n; r++)
        memcpy(rows + (size_t)r * s->dim + s->zdim, y + (size_t)r * last_dim, last_dim * fs);
}

/* The inverse of rows_gather: splits rows of [z... | y] into the blocks. */
static void rows_scatter(const fl_stack *s, uint32_t n, const fl_real *rows, fl_real *zbase,
                         fl_real *y, uint32_t last_dim)
{
    const size_t fs = sizeof(fl_real);
    for (size_t i = 0; i < s->n; i++) {
        const fl_layer *l = &s->L[i];
        if (!l->zdim) continue;
        fl_real *zb = zbase + (size_t)s->max_rows * l->zoff;
        for (uint32_t r = 0; r < n; r++)
            memcpy(zb + (size_t)r * l->zdim, rows + (size_t)r * s->dim + l->zoff, l->zdim * fs);
    }
    for (uint32_t r = 0; r < n; r++)
        memcpy(y + (size_t)r * last_dim, rows + (size_t)r * s->dim + s->zdim, last_dim * fs);
}

static uint64_t g_step; /* fl_stack_set_step */

void fl_stack_set_step(uint64_t step)
{
    g_step = step;
    fl_crash_step = step; /* a crash names it too */
}

/* Where a stack call runs, for the messages of check_rows. */
static void where_now(fl_mode mode, int inverse, uint32_t row, char *buf, size_t cap)
{
    if (g_step && mode == FL_MODE_TRAIN && !inverse)
        snprintf(buf, cap, "at step %llu, row %u", (unsigned long long)g_step, row);
    else if (g_step)
        snprintf(buf, cap, "in the evaluation after step %llu, row %u",
                 (unsigned long long)g_step, row);
    else
        snprintf(buf, cap, "%s, row %u", inverse ? "in sampling (inverse)" : "in evaluation",
                 row);
}

/* Whether any of m values is NaN or infinite: their exponent bits are all
 * ones, so adding one unit of the exponent's lowest bit carries into the
 * sign bit. Integer operations the compiler vectorizes (isfinite in a loop
 * it does not), so the check costs little beside a layer's own work. */
static int any_nonfinite(const fl_real *y, size_t m)
{
#ifdef FL_REAL_DOUBLE
    const uint64_t E = 0x7ff0000000000000ull, one = 0x0010000000000000ull;
    uint64_t acc = 0, b;
#else
    const uint32_t E = 0x7f800000u, one = 0x00800000u;
    uint32_t acc = 0, b;
#endif
    for (size_t i = 0; i < m; i++) {
        memcpy(&b, &y[i], sizeof b);
        acc |= (b & E) + one;
    }
    return (int)(acc >> (8 * sizeof acc - 1));
}

/* The first non-finite value among n rows of `dim` values (y), of `zdim`
 * values (z, may be NULL) and of logdet (may be NULL): 0 when all are
 * finite, else 1 (output), 2 (logdet) or 3 (z) with its row and value. */
static int first_nonfinite(uint32_t n, uint32_t dim, const fl_real *y, uint32_t zdim,
                           const fl_real *z, const fl_real *logdet, uint32_t *row, double *val)
{
    const size_t m = (size_t)n * dim;
    if (any_nonfinite(y, m))
        for (size_t i = 0; i < m; i++)
            if (!isfinite(y[i])) {
                *row = (uint32_t)(i / dim);
                *val = (double)y[i];
                return 1;
            }
    const size_t mz = (size_t)n * zdim;
    if (z && any_nonfinite(z, mz))
        for (size_t i = 0; i < mz; i++)
            if (!isfinite(z[i])) {
                *row = (uint32_t)(i / zdim);
                *val = (double)z[i];
                return 3;
            }
    if (logdet && any_nonfinite(logdet, n))
        for (uint32_t r = 0; r < n; r++)
            if (!isfinite(logdet[r])) {
                *row = r;
                *val = (double)logdet[r];
                return 2;
            }
    return 0;
}

/* fails with the layer's name when its output (n rows of `dim`), its
 * factored-out part (n rows of `zdim`, z may be NULL) or logdet is not
 * finite (l == NULL: the stack's input, before the first layer runs). */
static fl_status check_rows(const fl_stack *s, const fl_layer *l, fl_mode mode, int inverse,
                            uint32_t n, uint32_t dim, const fl_real *y, uint32_t zdim,
                            const fl_real *z, const fl_real *logdet)
{
    uint32_t row = 0;
    double val = 0;
    int what = first_nonfinite(n, dim, y, zdim, z, logdet, &row, &val);
    if (!what) return FL_OK;
    char where[96];
    where_now(mode, inverse, row, where, sizeof where);
    if (!l) {
        const fl_layer *f = &s->L[inverse ? s->n - 1 : 0];
        fl_err("[%s] %s: non-finite input %s (%g): it comes from before the flow layers "
               "(the data, the base distribution or the encoder)",
               f->cx->path, f->cls->base.name, where, val);
    } else {
        fl_err("[%s] %s: non-finite %s %s (%g)", l->cx->path, l->cls->base.name,
               what == 1 ? "output" : what == 3 ? "factored-out output (z)" : "logdet", where,
               val);
    }
    return FL_ERR_NUMERIC;
}

static fl_status layer_fail(const fl_layer *l, const char *what, fl_status st)
{
    return fl_comp_fail(st, "[%s] %s %s failed", l->cx->path, l->cls->base.name, what);
}

fl_status fl_stack_forward(fl_stack *s, uint32_t n, fl_mode mode, const fl_real *x,
                           const fl_real *c, fl_real *logdet, const fl_real **u)
{
    s->act[0] = (fl_real *)x; /* read-only: layers get it as const input */
    fl_host_clear_error();
    if (s->check && s->n) {
        fl_status st = check_rows(s, NULL, mode, 0, n, s->dim, x, 0, NULL, logdet);
        if (st != FL_OK) return st;
    }
    for (size_t i = 0; i < s->n; i++) {
        fl_layer *l = &s->L[i];
        fl_real *z = zblock(s, s->z, l);
        fl_flow_fwd a = { n, mode, s->arena->theta + l->block, s->act[i], s->act[i + 1], logdet,
                          c, z };
        fl_crash_enter(l->cx->path, l->cls->base.name, "forward");
        fl_status st = l->cls->forward(l->self, &a);
        fl_crash_leave();
        if (st != FL_OK) return layer_fail(l, "forward", st);
        if (s->check && (st = check_rows(s, l, mode, 0, n, l->out_dim, s->act[i + 1], l->zdim, z,
                                         logdet)) != FL_OK)
            return st;
    }
    if (s->zdim) { /* [z of each factoring layer | y of the last] */
        rows_gather(s, n, s->z, s->act[s->n], s->L[s->n - 1].out_dim, s->out);
        *u = s->out;
    } else {
        *u = s->act[s->n];
    }
    return FL_OK;
}

fl_status fl_stack_backward(fl_stack *s, uint32_t n, fl_mode mode, const fl_real *c,
                            const fl_real *du, const fl_real *dlogdet, fl_real *dx, fl_real *dc)
{
    const fl_real *dy = du;
    fl_real *bufs[2] = { s->g0, s->g1 };
    fl_host_clear_error();
    if (s->zdim) {
        /* The last layer's dy goes to the buffer its own dx does not use
         * (layer n-2 overwrites it only after reading layer n-1's dx). */
        fl_real *dyl = bufs[s->n & 1];
        rows_scatter(s, n, du, s->dz, dyl, s->L[s->n - 1].out_dim);
        dy = dyl;
    }
    for (size_t i = s->n; i-- > 0;) {
        fl_layer *l = &s->L[i];
        fl_real *out = (i == 0 && dx) ? dx : bufs[i & 1];
        if (out != dx) memset(out, 0, (size_t)n * l->in_dim * sizeof(fl_real));
        fl_flow_bwd a = { n, mode, s->arena->theta + l->block, s->arena->grad + l->block,
                          s->act[i], s->act[i + 1], c, dy, dlogdet, out, dc,
                          zblock(s, s->z, l), zblock(s, s->dz, l) };
        fl_crash_enter(l->cx->path, l->cls->base.name, "backward");
        fl_status st = l->cls->backward(l->self, &a);
        fl_crash_leave();
        if (st != FL_OK) return layer_fail(l, "backward", st);
        dy = out;
    }
    return FL_OK;
}

fl_status fl_stack_inverse(fl_stack *s, uint32_t n, fl_mode mode, const fl_real *u,
                           const fl_real *c, fl_real *x, fl_real *logdet)
{
    const fl_real *y = u;
    fl_host_clear_error();
    if (s->check && s->n) {
        fl_status st = check_rows(s, NULL, mode, 1, n, s->dim, u, 0, NULL, logdet);
        if (st != FL_OK) return st;
    }
    if (s->zdim && s->n) {
        /* act[n] is not written below: it holds the last layer's y */
        rows_scatter(s, n, u, s->z, s->act[s->n], s->L[s->n - 1].out_dim);
        y = s->act[s->n];
    }
    for (size_t i = s->n; i-- > 0;) {
        fl_layer *l = &s->L[i];
        if (!(l->cls->flags & FL_FLOW_HAS_INVERSE)) {
            fl_err("[%s] %s has no inverse: this model cannot be sampled", l->cx->path,
                   l->cls->base.name);
            return FL_ERR_UNSUPPORTED;
        }
        fl_real *out = i == 0 ? x : s->act[i];
        fl_flow_inv a = { n, mode, s->arena->theta + l->block, y, out, logdet, c,
                          zblock(s, s->z, l) };
        fl_crash_enter(l->cx->path, l->cls->base.name, "inverse");
        fl_status st = l->cls->inverse(l->self, &a);
        fl_crash_leave();
        if (st != FL_OK) return layer_fail(l, "inverse", st);
        if (s->check &&
            (st = check_rows(s, l, mode, 1, n, l->in_dim, out, 0, NULL, logdet)) != FL_OK)
            return st;
        y = out;
    }
    return FL_OK;
}
