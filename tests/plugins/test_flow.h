/* test_flow.h - a trivial identity flow for the deliberately broken test
 * plugins: each needs a well-formed component to register, so that the
 * host's refusal can be pinned on the one thing the plugin gets wrong.
 *
 *   TEST_IDENTITY_FLOW(my_class, "my-name", my_keys, n_keys)
 *
 * Built against include/flowlab only, like any out-of-tree plugin. */
#ifndef TEST_FLOW_H
#define TEST_FLOW_H

#include <flowlab/flowlab.h>

static int test_flow_token;

static fl_status test_flow_create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh,
                                  void **self)
{
    (void)h;
    (void)cx;
    (void)sh;
    *self = &test_flow_token; /* no state: any non-NULL handle will do */
    return FL_OK;
}

static void test_flow_destroy(void *self) { (void)self; }

static fl_status test_flow_forward(void *self, const fl_flow_fwd *a)
{
    (void)self;
    (void)a;
    return FL_OK;
}

static fl_status test_flow_backward(void *self, const fl_flow_bwd *a)
{
    (void)self;
    (void)a;
    return FL_OK;
}

#define TEST_IDENTITY_FLOW(var, name_, keys_, n_keys_)                               \
    static const fl_flow_class var = {                                              \
        .base = { sizeof(fl_flow_class), name_, "test flow (does nothing)", keys_,   \
                  n_keys_ },                                                        \
        .flags = 0,                                                                 \
        .create = test_flow_create,                                                 \
        .destroy = test_flow_destroy,                                               \
        .forward = test_flow_forward,                                               \
        .backward = test_flow_backward,                                             \
        .inverse = NULL,                                                            \
    };

#endif
