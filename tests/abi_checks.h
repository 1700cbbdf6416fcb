/* abi_checks.h - run-time checks of the struct-size macros (FL_STRUCT_HAS,
 * FL_HOST_HAS, FL_CLASS_HAS, FL_ABI_AT_LEAST), written in the common subset
 * of C and C++ so that abi_c.c and abi_cxx.cpp run the same code. Returns
 * the number of failed checks and prints each. */
#ifndef ABI_CHECKS_H
#define ABI_CHECKS_H

#include <stdio.h>
#include <string.h>

#include <flowlab/flowlab.h>

#define ABI_CHECK(cond)                                                            \
    do {                                                                           \
        if (!(cond)) {                                                             \
            printf("FAIL: %s (%s:%d)\n", #cond, __FILE__, __LINE__);               \
            failed++;                                                              \
        }                                                                          \
    } while (0)

static int abi_check_macros(void)
{
    int failed = 0;
    fl_host h;
    memset(&h, 0, sizeof h);
    h.abi_major = 1;
    h.abi_minor = 4;

    /* A host of today's size has every member. */
    h.struct_size = sizeof(fl_host);
    ABI_CHECK(FL_HOST_HAS(&h, struct_size));
    ABI_CHECK(FL_HOST_HAS(&h, log));
    ABI_CHECK(FL_HOST_HAS(&h, mlp_backward));
    ABI_CHECK(FL_STRUCT_HAS(&h, fl_host, gemm));
    ABI_CHECK(FL_HOST_HAS(&h, conv_create));
    ABI_CHECK(FL_HOST_HAS(&h, conv_backward));
    ABI_CHECK(FL_HOST_HAS(&h, flow_output));
    ABI_CHECK(FL_HOST_HAS(&h, conv_forward_mode));

    /* A 1.4 host of the scaffold (c85f2e8): its table ends with
     * flow_output, before conv_forward_mode (also since 1.4). */
    h.struct_size = offsetof(fl_host, flow_output) + sizeof(void *);
    ABI_CHECK(FL_HOST_HAS(&h, flow_output));
    ABI_CHECK(!FL_HOST_HAS(&h, conv_forward_mode));

    /* A 1.3 host: its table ends with conv_backward, before flow_output
     * (since 1.4). */
    h.struct_size = offsetof(fl_host, conv_backward) + sizeof(void *);
    ABI_CHECK(FL_HOST_HAS(&h, conv_backward));
    ABI_CHECK(!FL_HOST_HAS(&h, flow_output));

    /* A 1.2 host: its table ends with mlp_backward, before the conv
     * service (since 1.3), which an up-to-date plugin must test for. */
    h.struct_size = offsetof(fl_host, mlp_backward) + sizeof(void *);
    ABI_CHECK(FL_HOST_HAS(&h, mlp_backward));
    ABI_CHECK(!FL_HOST_HAS(&h, conv_create));
    ABI_CHECK(!FL_HOST_HAS(&h, conv_forward));
    ABI_CHECK(!FL_HOST_HAS(&h, conv_backward));
    ABI_CHECK(offsetof(fl_host, conv_create) == offsetof(fl_host, mlp_backward) + sizeof(void *));

    /* A (hypothetical) host whose table ends before gemm. */
    h.struct_size = offsetof(fl_host, gemm);
    ABI_CHECK(FL_HOST_HAS(&h, rng_key));
    ABI_CHECK(!FL_HOST_HAS(&h, gemm));
    ABI_CHECK(!FL_HOST_HAS(&h, mlp_backward));
    /* One byte short of the whole member is not enough. */
    h.struct_size = offsetof(fl_host, gemm) + sizeof(void *) - 1;
    ABI_CHECK(!FL_HOST_HAS(&h, gemm));

    ABI_CHECK(FL_ABI_AT_LEAST(&h, 1, 0));
    ABI_CHECK(FL_ABI_AT_LEAST(&h, 1, 2));
    ABI_CHECK(FL_ABI_AT_LEAST(&h, 1, 3));
    ABI_CHECK(FL_ABI_AT_LEAST(&h, 1, 4));
    ABI_CHECK(!FL_ABI_AT_LEAST(&h, 1, 5));
    ABI_CHECK(!FL_ABI_AT_LEAST(&h, 2, 0));

    /* A flow class built before order was appended (ABI 1.0's 88 bytes on
     * LP64), and one of today's size. */
    fl_flow_class fc;
    memset(&fc, 0, sizeof fc);
    fc.base.struct_size = offsetof(fl_flow_class, inverse) + sizeof(void *);
    ABI_CHECK(FL_CLASS_HAS(&fc, fl_flow_class, inverse));
    ABI_CHECK(!FL_CLASS_HAS(&fc, fl_flow_class, order));
    fc.base.struct_size = sizeof(fl_flow_class);
    ABI_CHECK(FL_CLASS_HAS(&fc, fl_flow_class, order));

    /* The headers' version is the one the docs describe. */
    ABI_CHECK(FL_ABI_MAJOR == 1 && FL_ABI_MINOR == 4);
    return failed;
}

#endif
