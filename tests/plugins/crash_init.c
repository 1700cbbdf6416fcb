/* crash_init.c - plugins that never return from their entry point: with
 * -DCRASH_EXIT it calls exit(3), with -DCRASH_ABORT abort(), with
 * -DCRASH_HANG it never returns, else it writes through a bad pointer. The host must refuse them and carry on (issue
 * 13, plugin isolation). */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_flow.h"

TEST_IDENTITY_FLOW(crash_flow, "crash-flow", NULL, 0)

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
#if defined(CRASH_EXIT)
    exit(3);
#elif defined(CRASH_HANG)
    for (;;) pause();
#elif defined(CRASH_ABORT)
    abort();
#else
    /* Not NULL: UBSan would stop a store to NULL with abort() first. A
     * small address is never mapped. */
    volatile int *volatile p = (volatile int *)(uintptr_t)16;
    *p = 1;
#endif
    return r->add(r, FL_KIND_FLOW, &crash_flow.base);
}

FL_PLUGIN("crash-init", "1.0.0", init)
