/* bad_major.c - an entry from a future ABI major. The entry is written out
 * by hand (FL_PLUGIN would stamp the right version). Its init registers a
 * flow, which must never become visible: the host may not even call it. */
#include "test_flow.h"

TEST_IDENTITY_FLOW(major_flow, "bad-major-flow", NULL, 0)

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_FLOW, &major_flow.base);
}

FL_EXPORT extern const fl_plugin_entry flowlab_plugin_entry;
FL_EXPORT const fl_plugin_entry flowlab_plugin_entry = {
    FL_ABI_MAJOR + 1, FL_ABI_MINOR, (uint32_t)sizeof(fl_real), "bad-major", "1.0.0", init,
};
