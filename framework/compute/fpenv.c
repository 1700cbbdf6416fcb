/* fpenv.c - flush-to-zero and denormals-are-zero in every computing thread
 * (fpenv.h). x86 keeps both bits in MXCSR, AArch64 has one (FZ) in FPCR;
 * elsewhere the setting is a no-op. */
#include "compute/fpenv.h"

#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define FL_FP_MODE 0x8040u /* MXCSR bit 15 (FZ) and bit 6 (DAZ) */
static unsigned get_mode(void) { return _mm_getcsr(); }
static void set_mode(unsigned m) { _mm_setcsr(m); }
#elif defined(__aarch64__)
#define FL_FP_MODE (1u << 24) /* FPCR.FZ: flushes inputs and outputs */
static unsigned get_mode(void)
{
    unsigned long r;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(r));
    return (unsigned)r;
}
static void set_mode(unsigned m)
{
    unsigned long r = m;
    __asm__ __volatile__("msr fpcr, %0" : : "r"(r));
}
#endif

#ifdef FL_FP_MODE
static void set_here(int on)
{
    unsigned m = get_mode();
    set_mode(on ? (m | FL_FP_MODE) : (m & ~FL_FP_MODE));
}

int fl_fpenv_flush_denormals(int on)
{
    set_here(on);
    /* libgomp keeps its pool between regions, so setting the bits once in
     * each member of the team lasts for every later region of that size;
     * larger teams get new threads, which inherit the main thread's. */
#pragma omp parallel
    set_here(on);
    return 1;
}

int fl_fpenv_flushing(void) { return (get_mode() & FL_FP_MODE) == FL_FP_MODE; }
#else
int fl_fpenv_flush_denormals(int on)
{
    (void)on;
    return 0;
}

int fl_fpenv_flushing(void) { return 0; }
#endif
