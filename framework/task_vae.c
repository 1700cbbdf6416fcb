/* task_vae.c - variational autoencoders (being written). */
#include "task_vae.h"

#include "util.h"

fl_status fl_vae_build(fl_experiment *e)
{
    fl_err("%s: task = vae is not available in this build yet", e->cfg->path);
    return FL_ERR_UNSUPPORTED;
}

void fl_vae_free(fl_experiment *e) { (void)e; }
