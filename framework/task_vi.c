/* task_vi.c - variational inference of an unnormalised target (in progress
 * on its own branch; main refuses the task until it lands). */
#include "task_vi.h"

#include "util.h"

fl_status fl_vi_build(fl_experiment *e)
{
    fl_err("%s: task = vi is not available in this build yet", e->cfg->path);
    return FL_ERR_UNSUPPORTED;
}

void fl_vi_free(fl_experiment *e) { (void)e; }
