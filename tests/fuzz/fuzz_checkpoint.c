/* fuzz_checkpoint.c - libFuzzer harness of the checkpoint reader
 * (train/checkpoint.c fl_checkpoint_load) against a small arena of three
 * named slices, with an Adam state and a parameter average, loading with
 * and without the average. With FLOWLAB_FUZZ_WRITE_SEEDS=DIR set it writes
 * valid checkpoints of that arena to DIR instead (the seed corpus). */
#include "fuzz_common.h"

#include <math.h>

#include "core/util.h"
#include "train/checkpoint.h"

static fl_arena arena;
static fl_adam adam;
static fl_ema ema;

static void build_arena(void)
{
    const fl_param_spec w = { "flow.1.w", 6, FL_INIT_NORMAL, 0, 0, 0.1, 0 };
    const fl_param_spec b = { "flow.1.b", 3, FL_INIT_CONST, 0, 0, 0.5, 0 };
    const fl_param_spec m = { "flow.2.mean", 2, FL_INIT_ZERO, 0, 0, 0, FL_PARAM_STATE };
    size_t off;
    if (fl_arena_request(&arena, "flow.1.w", &w, NULL, &off) != FL_OK ||
        fl_arena_request(&arena, "flow.1.b", &b, NULL, &off) != FL_OK ||
        fl_arena_request(&arena, "flow.2.mean", &m, NULL, &off) != FL_OK ||
        fl_arena_finalize(&arena, 1) != FL_OK ||
        fl_adam_init(&adam, arena.total, 1e-3, 0.9, 0.999, 1e-8) != FL_OK ||
        fl_ema_init(&ema, arena.total, 0.99) != FL_OK) {
        fprintf(stderr, "fuzz_checkpoint: cannot build the arena: %s\n", fl_err_msg());
        abort();
    }
}

static void write_seeds(const char *dir)
{
    char path[1024];
    fl_real g[64] = { 0 };
    for (size_t i = 0; i < arena.total && i < 64; i++) g[i] = (fl_real)(0.01 * (double)i);
    for (int k = 0; k < 3; k++) {
        fl_adam_step(&adam, arena.theta, g);
        fl_ema_update(&ema, arena.theta);
    }
    snprintf(path, sizeof path, "%s/theta-only.ckpt", dir);
    int bad = fl_checkpoint_save(path, &arena, NULL, NULL, 3) != FL_OK;
    snprintf(path, sizeof path, "%s/adam.ckpt", dir);
    bad |= fl_checkpoint_save(path, &arena, &adam, NULL, 3) != FL_OK;
    snprintf(path, sizeof path, "%s/adam-average.ckpt", dir);
    bad |= fl_checkpoint_save(path, &arena, &adam, &ema, 3) != FL_OK;
    if (bad) fprintf(stderr, "fuzz_checkpoint: %s\n", fl_err_msg());
    exit(bad);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    build_arena();
    const char *seeds = getenv("FLOWLAB_FUZZ_WRITE_SEEDS");
    if (seeds && *seeds) write_seeds(seeds);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_input(data, size, ".ckpt");
    uint64_t step = 0;
    for (int use_average = 0; use_average < 2; use_average++) {
        fl_status st = fl_checkpoint_load(path, &arena, &adam, &ema, use_average, &step);
        if (st != FL_OK) FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a refused file set no message");
    }
    fl_status st = fl_checkpoint_load(path, &arena, NULL, NULL, 0, NULL);
    if (st != FL_OK) FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a refused file set no message");
    return 0;
}
