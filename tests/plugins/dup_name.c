/* dup_name.c - name clashes. Built twice:
 *   dup_name.so   registers "dup-first", then "affine-coupling", which the
 *                 built-in coupling plugin already has. Its init ignores the
 *                 registrar's status and returns FL_OK: the host must refuse
 *                 the plugin anyway.
 *   dup_twice.so  (-DDUP_TWICE) registers "dup-twice" twice and passes the
 *                 error on, as a well-behaved plugin does. */
#include "test_flow.h"

#ifdef DUP_TWICE

TEST_IDENTITY_FLOW(twice_flow, "dup-twice", NULL, 0)

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_FLOW, &twice_flow.base);
    return st == FL_OK ? r->add(r, FL_KIND_FLOW, &twice_flow.base) : st;
}

FL_PLUGIN("dup-twice", "1.0.0", init)

#else

TEST_IDENTITY_FLOW(first_flow, "dup-first", NULL, 0)
TEST_IDENTITY_FLOW(clash_flow, "affine-coupling", NULL, 0)

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    (void)r->add(r, FL_KIND_FLOW, &first_flow.base);
    (void)r->add(r, FL_KIND_FLOW, &clash_flow.base);
    return FL_OK;
}

FL_PLUGIN("dup-name", "1.0.0", init)

#endif
