/* checkpoint.c - atomic, checksummed checkpoints. */
#include "train/checkpoint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/util.h"

static const char MAGIC[8] = { 'F', 'L', 'O', 'W', 'L', 'A', 'B', 'C' };

static void put32(fl_buf *b, uint32_t v) { fl_buf_write(b, &v, 4); }
static void put64(fl_buf *b, uint64_t v) { fl_buf_write(b, &v, 8); }

fl_status fl_checkpoint_save(const char *path, const fl_arena *a, const fl_adam *opt,
                             const fl_ema *ema, uint64_t step)
{
    return fl_checkpoint_save_run(path, a, opt, ema, step, NULL);
}

fl_status fl_checkpoint_save_run(const char *path, const fl_arena *a, const fl_adam *opt,
                                 const fl_ema *ema, uint64_t step, const fl_checkpoint_run *run)
{
    const fl_checkpoint_run none = { 0, 0, 0, 0, 0, 0 };
    if (!run) run = &none;
    fl_buf b = { 0 };
    fl_buf_write(&b, MAGIC, 8);
    put32(&b, FL_CHECKPOINT_VERSION);
    put32(&b, (uint32_t)sizeof(fl_real));
    put64(&b, step);
    put64(&b, a->total);
    put32(&b, (uint32_t)a->n);
    int has_ema = ema && ema->avg && ema->n == a->total;
    put32(&b, (opt != NULL) | (has_ema ? 2u : 0u));
    for (size_t i = 0; i < a->n; i++) {
        uint32_t len = (uint32_t)strlen(a->p[i].name);
        put32(&b, len);
        fl_buf_write(&b, a->p[i].name, len);
        put64(&b, a->p[i].offset);
        put64(&b, a->p[i].size);
    }
    fl_buf_write(&b, a->theta, a->total * sizeof(fl_real));
    if (opt) {
        put64(&b, opt->t);
        fl_buf_write(&b, opt->m, a->total * sizeof(fl_real));
        fl_buf_write(&b, opt->v, a->total * sizeof(fl_real));
    }
    if (has_ema) {
        put64(&b, ema->t);
        fl_buf_write(&b, &ema->decay, sizeof(double));
        fl_buf_write(&b, ema->avg, a->total * sizeof(fl_real));
    }
    put64(&b, run->config_hash);
    fl_buf_write(&b, &run->interval_sum, sizeof(double));
    put64(&b, run->interval_n);
    fl_buf_write(&b, &run->best, sizeof(double));
    put64(&b, run->best_step);
    put64(&b, run->bad_evals);
    if (b.failed) {
        fl_buf_free(&b);
        fl_err("%s: out of memory while writing the checkpoint", path);
        return FL_ERR_NOMEM;
    }
    uint32_t crc = (uint32_t)crc32_z(0L, (const Bytef *)b.data, b.len);
    put32(&b, crc);
    fl_status st = b.failed ? FL_ERR_NOMEM : fl_write_atomic(path, b.data, b.len);
    fl_buf_free(&b);
    return st;
}

typedef struct reader {
    const char *p;
    size_t left;
} reader;

static int get(reader *r, void *out, size_t n)
{
    if (r->left < n) return 0;
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
    return 1;
}

fl_status fl_checkpoint_load(const char *path, fl_arena *a, fl_adam *opt, fl_ema *ema,
                             int use_average, uint64_t *step)
{
    return fl_checkpoint_load_run(path, a, opt, ema, use_average, step, NULL);
}

/* The size of the run record at the end of a file (before the checksum):
 * version 2 config hash, interval sum, interval count; version 3 also the
 * best validation figure, its step and the evaluations since. */
#define RUN_RECORD 24u
static size_t run_record(uint32_t version)
{
    return version >= 3 ? RUN_RECORD + 24u : version >= 2 ? RUN_RECORD : 0;
}

/* The run record of a checked file of `version` (zeros for version 1). */
static void read_run_record(const char *data, size_t size, uint32_t version,
                            fl_checkpoint_run *run)
{
    memset(run, 0, sizeof *run);
    if (version < 2) return;
    const char *p = data + size - 4 - run_record(version);
    memcpy(&run->config_hash, p, 8);
    memcpy(&run->interval_sum, p + 8, 8);
    memcpy(&run->interval_n, p + 16, 8);
    if (version < 3) return;
    memcpy(&run->best, p + 24, 8);
    memcpy(&run->best_step, p + 32, 8);
    memcpy(&run->bad_evals, p + 40, 8);
}

fl_status fl_checkpoint_peek(const char *path, uint64_t *step, fl_checkpoint_run *run)
{
    char *data;
    size_t size;
    fl_status st = fl_read_file(path, &data, &size);
    if (st != FL_OK) return st;
    uint32_t version = 0;
    if (size >= 12) memcpy(&version, data + 8, 4);
    if (size < 24 + 4 + run_record(version) || memcmp(data, MAGIC, 8) != 0) {
        free(data);
        fl_err("%s: not a flowlab checkpoint (bad magic or truncated)", path);
        return FL_ERR_FORMAT;
    }
    memcpy(&version, data + 8, 4);
    uint32_t crc_file, crc = (uint32_t)crc32_z(0L, (const Bytef *)data, size - 4);
    memcpy(&crc_file, data + size - 4, 4);
    if (version < 1 || version > FL_CHECKPOINT_VERSION) {
        free(data);
        fl_err("%s: checkpoint format version %u, this flowlab reads versions 1 to %u", path,
               version, FL_CHECKPOINT_VERSION);
        return FL_ERR_FORMAT;
    }
    if (crc != crc_file) {
        free(data);
        fl_err("%s: checkpoint is corrupt (checksum mismatch: a damaged or truncated file)",
               path);
        return FL_ERR_FORMAT;
    }
    memcpy(step, data + 16, 8);
    read_run_record(data, size, version, run);
    free(data);
    return FL_OK;
}

fl_status fl_checkpoint_load_run(const char *path, fl_arena *a, fl_adam *opt, fl_ema *ema,
                                 int use_average, uint64_t *step, fl_checkpoint_run *run)
{
    char *data;
    size_t size;
    fl_status st = fl_read_file(path, &data, &size);
    if (st != FL_OK) return st;
    reader r = { data, size };
    char magic[8];
    uint32_t version, rsize, n_entries, flags;
    uint64_t st_step, total;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fl_err(__VA_ARGS__);                                                                       \
        free(data);                                                                                \
        return FL_ERR_FORMAT;                                                                      \
    } while (0)
    if (!get(&r, magic, 8) || memcmp(magic, MAGIC, 8) != 0)
        FAIL("%s: not a flowlab checkpoint (bad magic)", path);
    if (!get(&r, &version, 4)) FAIL("%s: checkpoint truncated in its header", path);
    if (version < 1 || version > FL_CHECKPOINT_VERSION)
        FAIL("%s: checkpoint format version %u, this flowlab reads versions 1 to %u", path,
             version, FL_CHECKPOINT_VERSION);
    if (!get(&r, &rsize, 4)) FAIL("%s: checkpoint truncated in its header", path);
    if (rsize != sizeof(fl_real))
        FAIL("%s: checkpoint stores %u-byte reals, this build uses %zu-byte %s", path, rsize,
             sizeof(fl_real), FL_REAL_NAME);
    if (size < 4) FAIL("%s: checkpoint truncated", path);
    uint32_t crc_file;
    memcpy(&crc_file, data + size - 4, 4);
    /* the checksum before the manifest: a damaged byte there would read
     * as another configuration's tensor */
    uint32_t crc = (uint32_t)crc32_z(0L, (const Bytef *)data, size - 4);
    if (crc != crc_file)
        FAIL("%s: checkpoint is corrupt (checksum mismatch: a damaged or truncated file)", path);
    if (!get(&r, &st_step, 8) || !get(&r, &total, 8) || !get(&r, &n_entries, 4) ||
        !get(&r, &flags, 4))
        FAIL("%s: checkpoint truncated in its header", path);
    if (total != a->total || n_entries != a->n)
        FAIL("%s: checkpoint holds %llu parameters in %u tensors, the model has %zu in %zu: it "
             "was made from a different configuration",
             path, (unsigned long long)total, n_entries, a->total, a->n);
    for (uint32_t i = 0; i < n_entries; i++) {
        uint32_t len;
        char name[512];
        uint64_t off, sz;
        if (!get(&r, &len, 4) || len >= sizeof name || !get(&r, name, len) || !get(&r, &off, 8) ||
            !get(&r, &sz, 8))
            FAIL("%s: checkpoint truncated in its manifest", path);
        name[len] = 0;
        const fl_param_rec *p = &a->p[i];
        if (strcmp(name, p->name) != 0 || off != p->offset || sz != p->size)
            FAIL("%s: checkpoint tensor %u is '%s' (%llu values), the model expects '%s' (%zu): "
                 "it was made from a different configuration",
                 path, i, name, (unsigned long long)sz, p->name, p->size);
    }
    const int has_opt = flags & 1u, has_ema = (flags & 2u) != 0;
    size_t body = total * sizeof(fl_real) * (1 + (has_opt ? 2 : 0) + (has_ema ? 1 : 0)) +
                  (has_opt ? 8 : 0) + (has_ema ? 16 : 0) + run_record(version) + 4;
    if (r.left != body)
        FAIL("%s: checkpoint truncated or padded: %zu bytes after the manifest, expected %zu",
             path, r.left, body);
    get(&r, a->theta, total * sizeof(fl_real));
    if (has_opt) {
        uint64_t t;
        get(&r, &t, 8);
        if (opt && opt->n == total) {
            opt->t = t;
            get(&r, opt->m, total * sizeof(fl_real));
            get(&r, opt->v, total * sizeof(fl_real));
        } else {
            r.p += 2 * total * sizeof(fl_real);
            r.left -= 2 * total * sizeof(fl_real);
        }
    }
    if (has_ema) {
        fl_ema tmp = { 0 };
        get(&r, &tmp.t, 8);
        get(&r, &tmp.decay, sizeof(double));
        tmp.n = total;
        /* Copied out: the file offset need not be aligned for fl_real. */
        tmp.avg = malloc((total ? total : 1) * sizeof(fl_real));
        fl_real *live = malloc((total ? total : 1) * sizeof(fl_real));
        if (!tmp.avg || !live) {
            free(tmp.avg);
            free(live);
            free(data);
            return FL_ERR_NOMEM;
        }
        get(&r, tmp.avg, total * sizeof(fl_real));
        if (ema && ema->avg && ema->n == total) {
            ema->t = tmp.t;
            memcpy(ema->avg, tmp.avg, total * sizeof(fl_real));
        }
        if (use_average) {
            /* The average replaces trained parameters, not state. */
            memcpy(live, a->theta, total * sizeof(fl_real));
            fl_ema_get(&tmp, a->theta);
            fl_arena_copy_state(a, a->theta, live);
        }
        free(tmp.avg);
        free(live);
    }
#undef FAIL
    if (run) read_run_record(data, size, version, run);
    if (step) *step = st_step;
    free(data);
    return FL_OK;
}

fl_status fl_params_finite(const fl_arena *a, const char *dir)
{
    for (size_t i = 0; i < a->n; i++) {
        const fl_param_rec *p = &a->p[i];
        for (size_t j = 0; j < p->size; j++)
            if (!isfinite(a->theta[p->offset + j])) {
                fl_err("%s/checkpoint.flc: parameter %s[%zu] is not finite (%g): the run "
                       "diverged; this model cannot be used",
                       dir, p->name, j, (double)a->theta[p->offset + j]);
                return FL_ERR_NUMERIC;
            }
    }
    return FL_OK;
}
