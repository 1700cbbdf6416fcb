/* fuzz_common.h - what the libFuzzer harnesses share: writing one input to
 * a private file in /dev/shm (the readers under test take paths), and
 * failing loudly when a property the harness checks does not hold. */
#ifndef FL_FUZZ_COMMON_H
#define FL_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property of the code under test does not hold: say which and abort,
 * so libFuzzer saves the input as a crash. */
#define FUZZ_CHECK(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz check failed: %s: ", #cond);                 \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* The path of this process's input file with name suffix `suffix` (e.g.
 * ".csv"), rewritten with `size` bytes of `data`. The file lives in
 * /dev/shm (memory) when it exists, else $TMPDIR or /tmp; one per process
 * and suffix, removed at exit. Returns a static buffer. */
static char fuzz_path_buf[4][512];
static int fuzz_path_n;
static void fuzz_unlink_all(void)
{
    for (int i = 0; i < fuzz_path_n; i++) unlink(fuzz_path_buf[i]);
}

static inline const char *fuzz_write_input(const uint8_t *data, size_t size, const char *suffix)
{
    static char path[512];
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(path, sizeof path, "%s/flowlab-fuzz-%ld%s", dir, (long)getpid(), suffix);
    int known = 0;
    for (int i = 0; i < fuzz_path_n; i++) known |= !strcmp(fuzz_path_buf[i], path);
    if (!known && fuzz_path_n < 4) {
        if (fuzz_path_n == 0) atexit(fuzz_unlink_all);
        snprintf(fuzz_path_buf[fuzz_path_n++], sizeof fuzz_path_buf[0], "%s", path);
    }
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
    return path;
}

#endif
