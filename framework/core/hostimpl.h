/* hostimpl.h - the host side of fl_host: component contexts.
 *
 * An fl_ctx ties one component instance to its validated config section,
 * its parameter block in the arena, its random streams and the workspaces
 * MLPs, conv nets and expression graphs it asked for (all freed with the ctx). */
#ifndef FL_HOSTIMPL_H
#define FL_HOSTIMPL_H

#include <flowlab/host.h>

#include "core/config.h"
#include "core/params.h"

struct fl_ctx {
    char *path;               /* "flow.1.3", "data" */
    const fl_values *cfg;     /* validated section (not owned) */
    fl_arena *arena;          /* not owned */
    size_t block;             /* start of this component's parameters */
    uint64_t seed;
    int creating;             /* param/workspace/mlp/cfg allowed */
    void **ws;                /* workspaces (owned) */
    size_t n_ws;
    fl_mlp **mlps;            /* MLPs (owned) */
    size_t n_mlps;
    fl_conv **convs;          /* conv nets (owned) */
    uint32_t *conv_in;        /* n_convs: each net's input width (c*h*w) */
    size_t n_convs;
    fl_expr **exprs;          /* expression graphs (owned) */
    size_t n_exprs;
    /* A flow layer's shapes (host->flow_output): `flow` is set by the stack
     * before create, with in_* the input shape; out_* start equal to it and
     * flow_output changes them. */
    int flow;
    uint32_t in_c, in_h, in_w;
    uint32_t out_c, out_h, out_w;
};

/* The process-wide host table handed to plugins. */
const fl_host *fl_host_table(void);

/* Text of the last host->error() on this thread ("" when none); cleared by
 * fl_host_clear_error before every call into a component that may set it. */
const char *fl_host_last_error(void);
void fl_host_clear_error(void);
/* Sets this thread's last error text: carries a message a component gave on
 * a worker thread (whose own text is thread-local) to the thread that
 * reports the failure. */
void fl_host_set_error(const char *msg);
/* The one place a component's failure becomes the user's message: sets
 * fl_err to PREFIX ": " and the component's own words (its last
 * host->error() on this thread), or the status's text when it said nothing;
 * PREFIX is printf-formatted (e.g. "%s: [%s] %s" with file:line, section
 * and class). Returns st. Any thread. */
fl_status fl_comp_fail(fl_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* A context for a component about to be created. `cfg` must outlive it. */
fl_ctx *fl_ctx_new(const char *path, const fl_values *cfg, fl_arena *arena, uint64_t seed);
/* Marks cx as a flow layer's whose input is c x h x w (before its create):
 * host->flow_output may then set its output shape (cx->out_*). */
void fl_ctx_flow_shape(fl_ctx *cx, uint32_t c, uint32_t h, uint32_t w);
/* The input width of conv net c of cx, 0 when cx does not own it. */
uint32_t fl_ctx_conv_in(const fl_ctx *cx, const fl_conv *c);
/* Ends the create phase: later param/workspace/mlp calls are refused. */
void fl_ctx_end_create(fl_ctx *cx);
/* Frees the ctx and everything it owns (after the instance is destroyed). */
void fl_ctx_free(fl_ctx *cx);

/* The MLP, conv and expression services and fl_gemm behind the table's
 * mlp_*, conv_*, expr_* and gemm members are compute/'s: compute/mlp.h,
 * compute/conv.h, compute/expr.h, compute/blas.h. */

#endif
