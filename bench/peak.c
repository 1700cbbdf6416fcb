/* peak.c - the machine's GEMM peak, measured where a benchmark runs. */
#include "peak.h"

#include <omp.h>

#include "compute/blas.h"
#include "core/util.h"

double fl_bench_gemm_peak(int threads)
{
    const int n = 1024;
    const size_t per = (size_t)3 * n * n;
    fl_real *a = fl_alloc(per * (size_t)threads * sizeof(fl_real));
    if (!a) return 0;
    for (size_t i = 0; i < per * (size_t)threads; i++) a[i] = (fl_real)(i % 13) * (fl_real)0.01;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = fl_now();
#pragma omp parallel num_threads(threads)
        {
            fl_real *m = a + (size_t)omp_get_thread_num() * per;
            for (int k = 0; k < 4; k++)
                fl_gemm(0, 0, n, n, n, 1, m, n, m + (size_t)n * n, n, 0, m + 2 * (size_t)n * n, n);
        }
        double gf = 4.0 * threads * 2.0 * n * n * n / (fl_now() - t0) / 1e9;
        if (gf > best) best = gf;
    }
    fl_free(a);
    return best;
}
