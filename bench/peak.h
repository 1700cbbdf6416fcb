/* peak.h - the machine's GEMM peak, measured where a benchmark runs. */
#ifndef FL_BENCH_PEAK_H
#define FL_BENCH_PEAK_H

/* Best of 3: GFLOP/s of 1024^3 sgemm (dgemm in the double build) through
 * fl_gemm, 4 products per thread, one independent product per thread at a
 * time (what the row-tiled kernels do). Adds to fl_gemm_flops. */
double fl_bench_gemm_peak(int threads);

#endif
