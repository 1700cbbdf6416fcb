/* crash.h - the last words of a process a component crashed.
 *
 * A plugin that dereferences a bad pointer or aborts inside a run cannot be
 * isolated the way a crash in its entry point is (core/registry.c probes
 * those in a child): its state is the run's. What flowlab can do is say
 * which component it was. Callers mark the component they are about to
 * call (its config section, class and entry point); when a fatal signal
 * arrives, the handler writes one line naming them, the shared object the
 * faulting instruction is in and the training step, then lets the signal
 * take its usual course (a core dump, a sanitizer's report, exit status
 * 128 + signal). Files are always written atomically, so the run directory
 * keeps its last checkpoint (docs/reliability.md). */
#ifndef FL_CRASH_H
#define FL_CRASH_H

#include <stdint.h>

/* Installs the handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT (on
 * an alternate stack, so a stack overflow is named too), chaining to the
 * handler that was there before (a sanitizer's). Call once from main before
 * any plugin runs; idempotent. */
void fl_crash_install(void);

/* What the process is doing, read by the handler. The strings are borrowed
 * and must outlive the mark (a component's ctx path and class name do).
 * Main thread; components are called from it (their parallel regions run
 * inside the call, so a worker's crash is still inside the mark). */
extern const char *volatile fl_crash_section; /* "flow.3", NULL = no component */
extern const char *volatile fl_crash_class;   /* "affine-coupling" */
extern const char *volatile fl_crash_call;    /* "forward" */
extern volatile uint64_t fl_crash_step;       /* the training step (1-based, as messages
                                                 count); 0 = not training */

/* Marks the call about to be made into a component (section, class, entry
 * point); fl_crash_leave when it returns. */
static inline void fl_crash_enter(const char *section, const char *cls, const char *call)
{
    fl_crash_class = cls;
    fl_crash_call = call;
    fl_crash_section = section;
}
static inline void fl_crash_leave(void) { fl_crash_section = 0; }

#endif
