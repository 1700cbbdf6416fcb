/* crash.c - the handler behind crash.h: one line on stderr, then the
 * signal's own course.
 *
 * Only async-signal-safe calls in the handler, except dladdr, which names
 * the shared object of the faulting instruction: it may block if the crash
 * happened inside the dynamic loader itself, a case flowlab never puts a
 * component in (plugins are loaded before any marked call). */
#define _GNU_SOURCE
#include "core/crash.h"

#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

const char *volatile fl_crash_section;
const char *volatile fl_crash_class;
const char *volatile fl_crash_call;
volatile uint64_t fl_crash_step;

static const int signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
static struct sigaction previous[sizeof signals / sizeof *signals];

/* Appends s to buf[*n..cap) (cut at cap). */
static void put(char *buf, size_t *n, size_t cap, const char *s)
{
    while (s && *s && *n < cap) buf[(*n)++] = *s++;
}

static void put_uint(char *buf, size_t *n, size_t cap, uint64_t v)
{
    char d[24];
    int k = 0;
    do d[k++] = (char)('0' + v % 10); while ((v /= 10) && k < 24);
    while (k > 0 && *n < cap) buf[(*n)++] = d[--k];
}

static const char *signame(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV (a bad memory access)";
    case SIGBUS: return "SIGBUS (a bad memory access)";
    case SIGFPE: return "SIGFPE (an arithmetic fault)";
    case SIGILL: return "SIGILL (an illegal instruction)";
    default: return "SIGABRT (aborted)";
    }
}

/* The instruction that faulted (0 where unknown). */
static void *fault_pc(void *uctx)
{
#if defined(__x86_64__) && defined(REG_RIP)
    return uctx ? (void *)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RIP] : NULL;
#elif defined(__aarch64__)
    return uctx ? (void *)((ucontext_t *)uctx)->uc_mcontext.pc : NULL;
#else
    (void)uctx;
    return NULL;
#endif
}

static void handler(int sig, siginfo_t *si, void *uctx)
{
    char line[1024];
    size_t n = 0, cap = sizeof line - 1;
    const char *section = fl_crash_section;
    if (isatty(STDERR_FILENO)) put(line, &n, cap, "\n"); /* after a progress line */
    put(line, &n, cap, "flowlab: error: ");
    put(line, &n, cap, signame(sig));
    if (section) {
        put(line, &n, cap, " in [");
        put(line, &n, cap, section);
        put(line, &n, cap, "] ");
        put(line, &n, cap, fl_crash_class);
        put(line, &n, cap, " ");
        put(line, &n, cap, fl_crash_call);
    }
    Dl_info info;
    void *pc = sig == SIGABRT ? NULL : fault_pc(uctx);
    if (pc && dladdr(pc, &info) && info.dli_fname) {
        const char *base = strrchr(info.dli_fname, '/');
        put(line, &n, cap, section ? ", in " : " in ");
        put(line, &n, cap, base ? base + 1 : info.dli_fname);
    }
    uint64_t step = fl_crash_step;
    if (step) {
        put(line, &n, cap, " at step ");
        put_uint(line, &n, cap, step);
    }
    put(line, &n, cap, section ? "; the plugin crashed the process"
                               : "; flowlab crashed (please report it)");
    put(line, &n, cap, "; files written before it are intact (a run keeps its last checkpoint)\n");
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;

    /* Once only: the previous disposition takes over. A fault re-executes
     * the instruction and arrives there; abort() raises again itself. */
    for (size_t i = 0; i < sizeof signals / sizeof *signals; i++)
        if (signals[i] == sig) sigaction(sig, &previous[i], NULL);
    /* A signal sent (kill, raise, abort) rather than a fault is not
     * repeated by returning: send it again, delivered once this returns. */
    if (!si || si->si_code <= 0) raise(sig);
}

void fl_crash_install(void)
{
    static int done;
    if (done) return;
    done = 1;
    static char altstack[1 << 16]; /* room for the handler after a stack overflow */
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof signals / sizeof *signals; i++)
        sigaction(signals[i], &sa, &previous[i]);
}
