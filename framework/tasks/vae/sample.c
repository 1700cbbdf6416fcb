/* sample.c - the vae task's samples and pictures: decoder means of prior
 * samples, reconstructions, and the table's sample and plot hooks. */
#include "tasks/vae/vae.h"

#include <stdio.h>
#include <string.h>

#include "core/util.h"
#include "tasks/task_vae.h"

fl_status fl_vae_sample(fl_experiment *e, uint32_t n, fl_rng_key key, fl_real *out)
{
    fl_vae *v = fl_vae_of(e);
    if (n > v->Rmax) n = v->Rmax;
    const uint32_t Lt = v->two ? v->L2 : v->L1;
    fl_real *eps = v->two ? v->eps2 : v->eps, *z = v->two ? v->z2 : v->z0;
    fl_rng_normal(key, 0, 0, (size_t)n * Lt, eps);
    fl_part_enter(&v->prior, "sample");
    fl_status st = v->prc->sample(v->prior.self, n, fl_vae_theta(e, v->prior.cx), eps, z);
    fl_crash_leave();
    if (st != FL_OK) return fl_comp_fail(st, "prior %s", v->prior.rec->cls.base.name);
    const fl_real *z1 = z;
    if (v->two) {
        /* z1 = mean of p(z1|z2) */
        fl_vae_net_forward(e, &v->dec2, n, z, v->G2);
        fl_part_enter(&v->lik2, "mean");
        st = v->lc2->mean(v->lik2.self, n, fl_vae_theta(e, v->lik2.cx), v->G2, v->dz1b);
        fl_crash_leave();
        if (st != FL_OK) return fl_comp_fail(st, "likelihood %s", v->lik2.rec->cls.base.name);
        z1 = v->dz1b;
    }
    fl_vae_net_forward(e, &v->dec, n, z1, v->Lg);
    fl_part_enter(&v->lik, "mean");
    st = v->lc->mean(v->lik.self, n, fl_vae_theta(e, v->lik.cx), v->Lg, out);
    fl_crash_leave();
    if (st != FL_OK) return fl_comp_fail(st, "likelihood %s", v->lik.rec->cls.base.name);
    return FL_OK;
}

fl_status fl_vae_reconstruct(fl_experiment *e, const fl_real *x, uint32_t n, fl_real *out)
{
    fl_vae *v = fl_vae_of(e);
    if (n > v->Rmax) n = v->Rmax;
    fl_real *means = fl_alloc((size_t)n * v->L1 * sizeof(fl_real));
    if (!means) return FL_ERR_NOMEM;
    fl_status st = fl_vae_posterior_means(e, x, n, (uint32_t)fl_exp_int(&e->eval, "au_samples"), means);
    if (st == FL_OK) {
        fl_vae_net_forward(e, &v->dec, n, means, v->Lg);
        fl_part_enter(&v->lik, "mean");
        st = v->lc->mean(v->lik.self, n, fl_vae_theta(e, v->lik.cx), v->Lg, out);
        fl_crash_leave();
        if (st != FL_OK) st = fl_comp_fail(st, "likelihood %s", v->lik.rec->cls.base.name);
    }
    fl_free(means);
    return st;
}


uint32_t fl_vae_sample_dim(const fl_experiment *e) { return e->info.dim; }

/* Decoder means of prior samples, in chunks the model was sized for. */
fl_status fl_vae_sample_cmd(fl_experiment *e, uint64_t n, uint64_t seed, fl_real *out)
{
    const uint32_t chunk = 1000;
    fl_status st = FL_OK;
    for (uint64_t i = 0; st == FL_OK && i < n; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        char nm[64];
        snprintf(nm, sizeof nm, "sample.%lld", (long long)(i / chunk));
        st = fl_vae_sample(e, m, fl_rng_key_make(seed, nm), out + (size_t)i * e->info.dim);
    }
    return st;
}

fl_status fl_vae_plot_cmd(fl_experiment *e, const char *dir, const char **files)
{
    *files = "{samples,reconstructions,curves}.png";
    return fl_plot_vae(e, dir);
}
