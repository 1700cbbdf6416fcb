/* blas.c - the one place that talks to CBLAS (fl_gemm and its flop counter),
 * and the process's BLAS/OpenMP thread and wait-policy set-up. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <omp.h>

#include "compute/blas.h"

/* OpenBLAS extensions (declared in its cblas.h; repeated for other CBLAS). */
extern char *openblas_get_corename(void);
extern void openblas_set_num_threads(int num_threads);

/* Floating-point operations issued through fl_gemm, for benchmarks. */
static uint64_t gemm_flops;

uint64_t fl_gemm_flops(void) { return __atomic_load_n(&gemm_flops, __ATOMIC_RELAXED); }

/* Products computed elsewhere (the MLP service's own kernel) count too. */
void fl_gemm_count(uint64_t flops) { __atomic_fetch_add(&gemm_flops, flops, __ATOMIC_RELAXED); }

void fl_gemm(int trans_a, int trans_b, int m, int n, int k, fl_real alpha, const fl_real *a,
             int lda, const fl_real *b, int ldb, fl_real beta, fl_real *c, int ldc)
{
    __atomic_fetch_add(&gemm_flops, 2ull * (uint64_t)m * (uint64_t)n * (uint64_t)k,
                       __ATOMIC_RELAXED);
#ifdef FL_REAL_DOUBLE
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

const char *fl_blas_core(void) { return openblas_get_corename(); }

void fl_runtime_init(void)
{
    /* flowlab parallelises over fixed tiles itself (see mlp.c); BLAS stays
     * on one thread so results do not depend on the thread count and the
     * cores are never oversubscribed. */
    static int done;
    if (!done) {
        /* Some OpenBLAS builds also set OpenMP's thread count here. */
        int omp_threads = omp_get_max_threads();
        openblas_set_num_threads(1);
        omp_set_num_threads(omp_threads);
        /* A parallel region inside another (a flow running its two nets
         * side by side) runs on its thread alone: tiles stay the same. */
        omp_set_max_active_levels(1);
        done = 1;
    }
}

/* Idle and total jiffies of all CPUs (/proc/stat), 0 on failure. */
static int cpu_times(unsigned long long *idle, unsigned long long *total)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[8] = { 0 };
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 4) return 0;
    *idle = v[3] + v[4];
    *total = 0;
    for (int i = 0; i < 8; i++) *total += v[i];
    return 1;
}

/* The 1-minute load average, used before, still counts the run that just
 * ended, so back-to-back runs waited passively on an idle machine. */
static double seconds(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Cores not used by other processes over the last 100 ms (-1 if unknown):
 * idle ones plus what this process itself used (OpenBLAS's threads spin
 * for a while after the library loads). */
static double idle_cores(long cores)
{
    unsigned long long i0, t0, i1, t1;
    if (!cpu_times(&i0, &t0)) return -1;
    double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    struct timespec d = { 0, 100 * 1000 * 1000 };
    nanosleep(&d, NULL);
    double w1 = seconds(CLOCK_MONOTONIC), c1 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    if (!cpu_times(&i1, &t1) || t1 <= t0 || w1 <= w0) return -1;
    return (double)cores * (double)(i1 - i0) / (double)(t1 - t0) + (c1 - c0) / (w1 - w0);
}

/* How idle OpenMP threads wait between parallel regions matters a lot on
 * two cores. Spinning briefly (GOMP_SPINCOUNT=20000) costs nothing on an
 * idle machine and saves the ~27 us wake-up of a sleeping thread per
 * region (quickstart: ~1000 vs ~600 steps/s); but when another process
 * holds a core, spinning threads steal it from the one doing the work
 * (measured 2x to 30x slower). libgomp reads its policy once, before
 * main, so when the user has chosen none flowlab restarts itself with one:
 * a short spin when the cores were idle over the last 100 ms (all but
 * half of one: /proc/stat counts 10 ms ticks), else passive waiting.
 * Results never depend on the policy, only the time does; set
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT yourself to choose. */
void fl_choose_wait_policy(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") || getenv("FLOWLAB_REEXEC"))
        return;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double idle = idle_cores(cores);
    if (idle < 0) { /* no /proc/stat: the load average */
        double load = 1e9;
        FILE *f = fopen("/proc/loadavg", "r");
        if (f) {
            if (fscanf(f, "%lf", &load) != 1) load = 1e9;
            fclose(f);
        }
        idle = (double)cores - load;
    }
    if (cores >= 2 && idle >= (double)cores - 0.5) setenv("GOMP_SPINCOUNT", "20000", 1);
    else setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("FLOWLAB_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: go on with the default policy */
}

