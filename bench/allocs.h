/* allocs.h - counts a benchmark's heap allocations while armed.
 *
 * Linking bench/allocs.c into a benchmark interposes malloc, calloc,
 * realloc and aligned_alloc (fl_alloc's allocator); each call made while
 * armed adds one to the count. Used to check that training steps allocate
 * nothing. Not thread-safe to arm from several threads; counting is. */
#ifndef FL_BENCH_ALLOCS_H
#define FL_BENCH_ALLOCS_H

void fl_bench_allocs_arm(int on);
long fl_bench_allocs(void); /* calls counted since the program started */

#endif
