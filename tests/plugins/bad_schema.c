/* bad_schema.c - a flow whose key table is malformed: the default of 'n'
 * (500) lies outside its declared range [0, 10]. It registers a valid flow
 * first, which must not survive the refusal. */
#include "test_flow.h"

static const fl_key bad_keys[] = {
    { "width", FL_KEY_INT, "4", 1, 64, NULL, "a well-formed key" },
    { "n", FL_KEY_INT, "500", 0, 10, NULL, "default out of range" },
};

TEST_IDENTITY_FLOW(fine_flow, "bad-schema-fine", NULL, 0)
TEST_IDENTITY_FLOW(schema_flow, "bad-schema", bad_keys, 2)

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_FLOW, &fine_flow.base);
    return st == FL_OK ? r->add(r, FL_KIND_FLOW, &schema_flow.base) : st;
}

FL_PLUGIN("bad-schema", "1.0.0", init)
