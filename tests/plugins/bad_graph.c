/* bad_graph.c - a flow layer whose expression graph multiplies x (width 4
 * in the test) by a parameter of width 2: its create fails, and the stack's
 * message names the layer and node 3 (test_expr.c). */
#include <flowlab/flowlab.h>

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    fl_ex e = fl_ex_begin(h, cx, sh);
    fl_param_spec a = { "a", sh->dim, FL_INIT_ZERO, 0, 0, 0, 0 };
    fl_param_spec b = { "b", 2, FL_INIT_ZERO, 0, 0, 0, 0 };
    fl_node x = fl_ex_x(e), pa = fl_ex_param(e, &a), pb = fl_ex_param(e, &b);
    fl_node y = fl_ex_add(e, fl_ex_mul(e, x, pb), pa);
    fl_status st = fl_ex_compile(e, y, fl_ex_sum(e, pa), 0);
    return st == FL_OK ? fl_ex_layer_make(e, e.g, NULL, self) : st;
}

FL_EX_FLOW_PLUGIN("bad-graph", "1.0.0", "bad-graph", "a graph with a shape error", NULL, 0,
                  FL_FLOW_CHEAP_FORWARD, create)
