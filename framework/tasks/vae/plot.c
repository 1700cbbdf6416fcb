/* plot.c - pictures of a trained VAE: samples, reconstructions and
 * training curves. */
#include "tasks/vae/vae.h"

#include <stdlib.h>
#include <string.h>

#include "output/imagegrid.h"
#include "output/plot.h"
#include "core/util.h"

static const fl_curve curves[] = {
    { "train_bound", FL_CURVE_BLUE, 0, "blue" },
    { "valid_elbo", FL_CURVE_ORANGE, 0, "orange" },
    { "valid_iwae", FL_CURVE_GREEN, 0, "green" },
};

fl_status fl_plot_vae(fl_experiment *e, const char *dir)
{
    fl_status st = fl_plot_curves(dir, curves, 3, "bound");
    const uint32_t h = e->info.image_h, w = e->info.image_w, D = e->info.dim;
    if (st != FL_OK || !h || !w || (uint64_t)h * w != D) return st;
    const uint32_t ns = 100, nr = 40;
    fl_real *s = fl_alloc((size_t)ns * D * sizeof(fl_real));
    fl_real *r = fl_alloc((size_t)nr * D * sizeof(fl_real));
    fl_real *x = NULL;
    uint64_t nt = 0;
    st = s && r ? FL_OK : FL_ERR_NOMEM;
    if (st == FL_OK) st = fl_vae_sample(e, ns, fl_rng_key_make(0, "plot.samples"), s);
    char *p = NULL;
    if (st == FL_OK && (p = fl_strfmt("%s/samples.png", dir)))
        st = fl_image_grid_png(p, s, ns, h, w, 10, 2);
    free(p);
    p = NULL;
    if (st == FL_OK) st = fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt);
    if (st == FL_OK) {
        /* test images spread over the split (MNIST's test file comes in
         * runs of one digit) */
        uint32_t m = nt < nr ? (uint32_t)nt : nr;
        uint64_t stride = nt / m;
        for (uint32_t i = 0; i < m; i++)
            memmove(x + (size_t)i * D, x + (size_t)(i * stride) * D, D * sizeof(fl_real));
        st = fl_vae_reconstruct(e, x, m, r);
        if (st == FL_OK && (p = fl_strfmt("%s/reconstructions.png", dir)))
            st = fl_image_pairs_png(p, x, r, m, h, w, 10, 2);
        free(p);
    }
    fl_free(x);
    fl_free(s);
    fl_free(r);
    return st;
}
