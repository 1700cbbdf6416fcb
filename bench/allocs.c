/* allocs.c - the allocation counter of allocs.h: the benchmark's own
 * definitions of the allocation functions, passing each call on to the C
 * library's (found with dlsym(RTLD_NEXT)). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#include "allocs.h"

static int armed;
static long count;

static void counted(void)
{
    if (__atomic_load_n(&armed, __ATOMIC_RELAXED)) __atomic_fetch_add(&count, 1, __ATOMIC_RELAXED);
}

void fl_bench_allocs_arm(int on) { __atomic_store_n(&armed, on, __ATOMIC_RELAXED); }

long fl_bench_allocs(void) { return __atomic_load_n(&count, __ATOMIC_RELAXED); }

void *malloc(size_t n)
{
    static void *(*real)(size_t);
    if (!real) real = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    counted();
    return real(n);
}

/* Through malloc, not dlsym: glibc's dlsym itself may call calloc. */
void *calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) return NULL;
    void *p = malloc(n * size);
    if (p) memset(p, 0, n * size);
    return p;
}

void *realloc(void *p, size_t n)
{
    static void *(*real)(void *, size_t);
    if (!real) real = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    counted();
    return real(p, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    static void *(*real)(size_t, size_t);
    if (!real) real = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    counted();
    return real(align, n);
}
