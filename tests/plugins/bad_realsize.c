/* bad_realsize.c - claims the other fl_real size (8 in a float build, 4 in
 * a double build), so it is refused by either host. */
#include "test_flow.h"

TEST_IDENTITY_FLOW(realsize_flow, "bad-realsize-flow", NULL, 0)

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_FLOW, &realsize_flow.base);
}

FL_EXPORT extern const fl_plugin_entry flowlab_plugin_entry;
FL_EXPORT const fl_plugin_entry flowlab_plugin_entry = {
    FL_ABI_MAJOR, FL_ABI_MINOR, sizeof(fl_real) == 4 ? 8 : 4, "bad-realsize", "1.0.0", init,
};
