/* expr.h - the host's expression service (host->expr_*, ABI 1.4; the
 * plugin's view is include/flowlab/expr.h): graphs of element-wise
 * operations, reductions, column gathers and MLP/conv nodes over a flow
 * layer's x, context and parameters, compiled once with every buffer
 * planned for max_rows, run forward, backward (reverse mode) and inverse.
 * The builders and compile are for the owning component's create (they
 * record the first failure, naming its node, and compile reports it
 * through host->error); the runs allocate nothing and give the same bits
 * for any OpenMP thread count. */
#ifndef FL_EXPR_H
#define FL_EXPR_H

#include <flowlab/expr.h>

/* A graph for the flow layer of `sh`, owned by the caller (host.c hands
 * it to cx, which frees it with the context). NULL on OOM. */
fl_expr *fl_expr_new(fl_ctx *cx, const fl_flow_shape *sh);
void fl_expr_free(fl_expr *g);
/* The fl_host members of the same names (host.h documents them). */
fl_node fl_expr_add_leaf(fl_expr *g, int kind, uint32_t width, size_t offset, const fl_real *values);
fl_node fl_expr_add_op(fl_expr *g, int op, fl_node a, fl_node b, fl_node c, uint32_t k);
fl_node fl_expr_gather(fl_expr *g, fl_node a, uint32_t width, const uint32_t *cols,
                       uint32_t start);
fl_node fl_expr_net(fl_expr *g, fl_mlp *m, fl_conv *c, fl_node in);
fl_node fl_expr_solve(fl_expr *g, fl_node var, fl_node f, fl_node target, double lo, double hi,
                      double tol);
fl_status fl_expr_compile(fl_expr *g, fl_node y, fl_node logdet, uint32_t flags);
fl_status fl_expr_forward(fl_expr *g, const fl_flow_fwd *a);
fl_status fl_expr_backward(fl_expr *g, const fl_flow_bwd *a);
fl_status fl_expr_inverse(fl_expr *g, const fl_flow_inv *a);
const fl_real *fl_expr_value(fl_expr *g, fl_node node, size_t *ld);
/* The width of a node (0 for a bad one): for tests. */
uint32_t fl_expr_width(const fl_expr *g, fl_node node);

#endif
