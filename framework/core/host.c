/* host.c - the fl_host table and component contexts. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The one place core/ reaches up into compute/: the table below names the
 * MLP and conv services and fl_gemm, and a context frees the MLPs and conv
 * nets it owns. Inverting
 * it (compute registering its functions into a mutable table at start-up)
 * would make every entry point - main, each test suite, each bench - call
 * a registration first, and a missed call would show up as a NULL member
 * inside a plugin; naming the functions here keeps the table constant and
 * always complete. Elsewhere only compute/ includes core/, not the reverse. */
#include "compute/blas.h"
#include "compute/conv.h"
#include "compute/mlp.h"
#include "core/hostimpl.h"
#include "core/log.h"
#include "core/util.h"

static _Thread_local char last_error[2048];

const char *fl_host_last_error(void) { return last_error; }
void fl_host_clear_error(void) { last_error[0] = 0; }
void fl_host_set_error(const char *msg) { snprintf(last_error, sizeof last_error, "%s", msg); }

fl_status fl_comp_fail(fl_status st, const char *fmt, ...)
{
    char prefix[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    fl_err("%s: %s", prefix, last_error[0] ? last_error : fl_status_str(st));
    return st;
}

fl_ctx *fl_ctx_new(const char *path, const fl_values *cfg, fl_arena *arena, uint64_t seed)
{
    fl_ctx *cx = calloc(1, sizeof *cx);
    if (!cx) return NULL;
    cx->path = fl_strdup(path);
    if (!cx->path) {
        free(cx);
        return NULL;
    }
    cx->cfg = cfg;
    cx->arena = arena;
    cx->block = arena ? arena->total : 0;
    cx->seed = seed;
    cx->creating = 1;
    return cx;
}

void fl_ctx_end_create(fl_ctx *cx) { cx->creating = 0; }

void fl_ctx_flow_shape(fl_ctx *cx, uint32_t c, uint32_t h, uint32_t w)
{
    cx->flow = 1;
    cx->in_c = cx->out_c = c;
    cx->in_h = cx->out_h = h;
    cx->in_w = cx->out_w = w;
}

void fl_ctx_free(fl_ctx *cx)
{
    if (!cx) return;
    for (size_t i = 0; i < cx->n_ws; i++) fl_free(cx->ws[i]);
    for (size_t i = 0; i < cx->n_mlps; i++) fl_mlp_free(cx->mlps[i]);
    for (size_t i = 0; i < cx->n_convs; i++) fl_conv_free(cx->convs[i]);
    free(cx->ws);
    free(cx->mlps);
    free(cx->convs);
    free(cx->path);
    free(cx);
}

static void h_log(fl_ctx *cx, fl_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fl_log_v(lvl, cx ? cx->path : NULL, fmt, ap);
    va_end(ap);
}

static void h_error(fl_ctx *cx, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)cx; /* callers add the component's path when they report it */
    snprintf(last_error, sizeof last_error, "%s", msg);
}

static const fl_value *cfg_get(fl_ctx *cx, const char *key, fl_key_type want)
{
    const fl_value *v = cx->cfg ? fl_values_get(cx->cfg, key) : NULL;
    if (!v) {
        fl_log(FL_LOG_ERROR, "[%s] asked for undeclared config key '%s' (a plugin bug)", cx->path,
               key);
        return NULL;
    }
    if (v->key->type != want && !(want == FL_KEY_STRING && v->key->type == FL_KEY_ENUM) &&
        !(want == FL_KEY_REAL && v->key->type == FL_KEY_INT) &&
        !(want == FL_KEY_INT && (v->key->type == FL_KEY_ENUM || v->key->type == FL_KEY_BOOL))) {
        fl_log(FL_LOG_ERROR, "[%s] config key '%s' read with the wrong type (a plugin bug)",
               cx->path, key);
        return NULL;
    }
    return v;
}

static int64_t h_cfg_int(fl_ctx *cx, const char *key)
{
    const fl_value *v = cfg_get(cx, key, FL_KEY_INT);
    return v ? v->i : 0;
}

static double h_cfg_real(fl_ctx *cx, const char *key)
{
    const fl_value *v = cfg_get(cx, key, FL_KEY_REAL);
    return v ? v->r : 0.0;
}

static int h_cfg_bool(fl_ctx *cx, const char *key)
{
    const fl_value *v = cfg_get(cx, key, FL_KEY_BOOL);
    return v ? (int)v->i : 0;
}

static const char *h_cfg_str(fl_ctx *cx, const char *key)
{
    const fl_value *v = cfg_get(cx, key, FL_KEY_STRING);
    return v ? v->text : "";
}

static size_t h_cfg_int_list(fl_ctx *cx, const char *key, int64_t *out, size_t cap)
{
    const fl_value *v = cfg_get(cx, key, FL_KEY_INT_LIST);
    if (!v) return 0;
    for (size_t i = 0; i < v->nlist && i < cap; i++) out[i] = v->list[i];
    return v->nlist;
}

static fl_status h_param(fl_ctx *cx, const fl_param_spec *spec, size_t *offset)
{
    if (!cx->arena) {
        h_error(cx, "this kind of component cannot own parameters");
        return FL_ERR_INVALID;
    }
    if (!cx->creating) {
        h_error(cx, "parameters can be requested only during create");
        return FL_ERR_INTERNAL;
    }
    char *name = fl_strfmt("%s.%s", cx->path, spec->name ? spec->name : "?");
    if (!name) return FL_ERR_NOMEM;
    size_t abs;
    fl_status st = fl_arena_request(cx->arena, name, spec, NULL, &abs);
    if (st != FL_OK) h_error(cx, "%s", fl_err_msg());
    free(name);
    if (st == FL_OK) *offset = abs - cx->block;
    return st;
}

static void *h_workspace(fl_ctx *cx, size_t bytes)
{
    if (!cx->creating) {
        h_error(cx, "workspaces can be requested only during create");
        return NULL;
    }
    void **nw = realloc(cx->ws, (cx->n_ws + 1) * sizeof *nw);
    if (!nw) {
        h_error(cx, "out of memory");
        return NULL;
    }
    cx->ws = nw;
    void *p = fl_alloc(bytes);
    if (!p) {
        h_error(cx, "cannot allocate a workspace of %zu bytes", bytes);
        return NULL;
    }
    cx->ws[cx->n_ws++] = p;
    return p;
}

static fl_rng_key h_rng_key(fl_ctx *cx, const char *name)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", cx->path, name);
    return fl_rng_key_make(cx->seed, buf);
}

static fl_mlp *h_mlp_create(fl_ctx *cx, const fl_mlp_spec *spec, uint32_t max_rows)
{
    if (!cx->creating) {
        h_error(cx, "MLPs can be created only during create");
        return NULL;
    }
    fl_mlp **nm = realloc(cx->mlps, (cx->n_mlps + 1) * sizeof *nm);
    if (!nm) {
        h_error(cx, "out of memory");
        return NULL;
    }
    cx->mlps = nm;
    fl_mlp *m = fl_mlp_create(cx, spec, max_rows);
    if (m) cx->mlps[cx->n_mlps++] = m;
    return m;
}

static fl_conv *h_conv_create(fl_ctx *cx, const fl_conv_spec *spec, uint32_t max_rows)
{
    if (!cx->creating) {
        h_error(cx, "conv nets can be created only during create");
        return NULL;
    }
    fl_conv **nc = realloc(cx->convs, (cx->n_convs + 1) * sizeof *nc);
    if (!nc) {
        h_error(cx, "out of memory");
        return NULL;
    }
    cx->convs = nc;
    fl_conv *c = fl_conv_create(cx, spec, max_rows);
    if (c) cx->convs[cx->n_convs++] = c;
    return c;
}

static fl_status h_flow_output(fl_ctx *cx, uint32_t c, uint32_t h, uint32_t w)
{
    if (!cx->creating || !cx->flow) {
        h_error(cx, "flow_output is for a flow layer's create only");
        return FL_ERR_INTERNAL;
    }
    const uint64_t in = (uint64_t)cx->in_c * cx->in_h * cx->in_w;
    const uint64_t out = (uint64_t)c * h * w;
    if (out == 0 || out > in) {
        h_error(cx, "output shape %ux%ux%u (%llu numbers) does not fit the input %ux%ux%u "
                    "(%llu): a layer may keep or factor out numbers, never add them",
                c, h, w, (unsigned long long)out, cx->in_c, cx->in_h, cx->in_w,
                (unsigned long long)in);
        return FL_ERR_INVALID;
    }
    cx->out_c = c;
    cx->out_h = h;
    cx->out_w = w;
    return FL_OK;
}

static const fl_host table = {
    .struct_size = sizeof(fl_host),
    .abi_major = FL_ABI_MAJOR,
    .abi_minor = FL_ABI_MINOR,
    .log = h_log,
    .error = h_error,
    .cfg_int = h_cfg_int,
    .cfg_real = h_cfg_real,
    .cfg_bool = h_cfg_bool,
    .cfg_str = h_cfg_str,
    .cfg_int_list = h_cfg_int_list,
    .param = h_param,
    .workspace = h_workspace,
    .rng_key = h_rng_key,
    .gemm = fl_gemm,
    .mlp_create = h_mlp_create,
    .mlp_forward = fl_mlp_forward,
    .mlp_backward = fl_mlp_backward,
    .conv_create = h_conv_create,
    .conv_forward = fl_conv_forward,
    .conv_backward = fl_conv_backward,
    .flow_output = h_flow_output,
    .conv_forward_mode = fl_conv_forward_mode,
};

const fl_host *fl_host_table(void) { return &table; }
