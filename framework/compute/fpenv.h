/* fpenv.h - the floating-point environment of the threads that compute:
 * flush-to-zero and denormals-are-zero.
 *
 * Denormal (subnormal) floats are below 2^-126 in float (2^-1022 in double);
 * many x86 cores take a microcode assist on every operation that makes or
 * reads one, which made the IWAE k=50 step 3.4x slower on an Intel Xeon
 * (issue 14, docs/performance.md). With the flush on, such results become
 * zero (FTZ) and such inputs are read as zero (DAZ): a value that would
 * have been a denormal loses its last bits of relative precision, which no
 * loss, bound or gradient flowlab computes can see at its printed precision
 * but which changes bits of the outputs where denormals occurred. */
#ifndef FL_FPENV_H
#define FL_FPENV_H

/* Sets (on = 1) or clears (on = 0) flush-to-zero and denormals-are-zero in
 * the calling thread and in every thread of the OpenMP team that the next
 * parallel region uses (omp_get_max_threads() of them); threads created
 * later inherit the calling thread's setting. Call from the main thread,
 * outside parallel regions, after the thread count is set (fl_experiment_new
 * and `flowlab run` do). Returns 1 when the setting took effect, 0 where the
 * architecture has no such mode (then it is a no-op). */
int fl_fpenv_flush_denormals(int on);

/* 1 when the calling thread flushes denormals (both FTZ and DAZ set), 0
 * when it does not. Any thread, any time. */
int fl_fpenv_flushing(void);

#endif
