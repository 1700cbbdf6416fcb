/* dist.c - one training run over several processes (dist.h): row blocks,
 * the chain that sums them in block order, agreement on failures, and the
 * line a rank prints when the job is stopped. No MPI here: the messages go
 * through the transport the executable installs (train/dist_mpi.c). */
#include "train/dist.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"

static const fl_dist_transport *tp; /* NULL: one process */
static int shared;                  /* the last error came from an agreement */
static uint64_t traffic[2];         /* bytes this rank sent, received */

/* The transport's calls, counted (a broadcast as the root's send or a
 * receive elsewhere, whatever tree the transport uses inside). */
static void t_send(const void *b, size_t n, int to)
{
    traffic[0] += n;
    tp->send(b, n, to);
}
static void t_recv(void *b, size_t n, int from)
{
    traffic[1] += n;
    tp->recv(b, n, from);
}
static void t_bcast(void *b, size_t n, int root)
{
    traffic[tp->rank == root ? 0 : 1] += n;
    tp->bcast(b, n, root);
}

void fl_dist_traffic(uint64_t *sent, uint64_t *received)
{
    *sent = traffic[0];
    *received = traffic[1];
}

void fl_dist_use(const fl_dist_transport *t) { tp = t && t->size > 1 ? t : NULL; }
int fl_dist_rank(void) { return tp ? tp->rank : 0; }
int fl_dist_size(void) { return tp ? tp->size : 1; }
int fl_dist_error_shared(void) { return shared; }

void fl_dist_block_rows(uint32_t B, uint32_t G, uint32_t g, uint32_t *p0, uint32_t *n)
{
    const uint64_t a = (uint64_t)g * B / G, b = (uint64_t)(g + 1) * B / G;
    *p0 = (uint32_t)a;
    *n = (uint32_t)(b - a);
}

void fl_dist_my_blocks(uint32_t G, uint32_t *first, uint32_t *end)
{
    const uint64_t r = (uint64_t)fl_dist_rank(), N = (uint64_t)fl_dist_size();
    *first = (uint32_t)(r * G / N);
    *end = (uint32_t)((r + 1) * G / N);
}

/* ---- the gradient's chain ------------------------------------------------ */

/* Pieces of the parameter vector in flight along the chain: rank r adds
 * piece c while rank r + 1 adds piece c - 1. */
enum { PIECE = 1 << 16 };

fl_status fl_dist_grad_init(fl_dist_grad *r, size_t n, uint32_t G)
{
    memset(r, 0, sizeof *r);
    uint32_t first, end;
    fl_dist_my_blocks(G, &first, &end);
    r->n = n;
    r->own = end - first;
    r->vals = calloc(r->own ? r->own : 1, sizeof *r->vals);
    if (!r->vals) return FL_ERR_NOMEM;
    const int single = fl_dist_size() == 1;
    if (single && r->own == 1) return FL_OK; /* the step is today's: nothing to sum */
    r->sum = fl_alloc(n * sizeof(fl_real));
    if (!r->sum) return FL_ERR_NOMEM;
    if (fl_dist_rank() > 0 && r->own > 1) {
        r->held = fl_alloc((size_t)(r->own - 1) * n * sizeof(fl_real));
        if (!r->held) return FL_ERR_NOMEM;
    }
    return FL_OK;
}

void fl_dist_grad_free(fl_dist_grad *r)
{
    fl_free(r->sum);
    fl_free(r->held);
    free(r->vals);
    memset(r, 0, sizeof *r);
}

static void add_into(fl_real *restrict s, const fl_real *restrict g, size_t n)
{
    for (size_t i = 0; i < n; i++) s[i] += g[i];
}

void fl_dist_grad_add(fl_dist_grad *r, uint32_t i, const fl_real *grad, double value)
{
    r->vals[i] = value;
    if (fl_dist_rank() == 0) {
        if (!r->sum) return;
        if (i == 0) memcpy(r->sum, grad, r->n * sizeof(fl_real));
        else add_into(r->sum, grad, r->n);
    } else if (i + 1 < r->own) {
        memcpy(r->held + (size_t)i * r->n, grad, r->n * sizeof(fl_real));
    }
}

/* What travels ahead of the gradient: the first failure and the values. */
typedef struct chain_head {
    int32_t fail_rank;   /* the lowest rank whose step failed; size = none */
    int32_t fail_status; /* its fl_status */
    double value;        /* the running sum of the step values */
} chain_head;

/* The failing rank's message on every rank: fl_err set there, `shared`. */
static fl_status spread_error(int from, fl_status st)
{
    struct { int32_t status; char msg[4000]; } m;
    memset(&m, 0, sizeof m);
    if (fl_dist_rank() == from) {
        m.status = (int32_t)st;
        snprintf(m.msg, sizeof m.msg, "%s", fl_err_msg());
    }
    t_bcast(&m, sizeof m, from);
    fl_err("%s", m.msg);
    shared = 1;
    return (fl_status)m.status;
}

fl_status fl_dist_grad_reduce(fl_dist_grad *r, fl_status st, fl_real *grad, double *value)
{
    double v = r->vals[0];
    if (!tp) { /* one process: the running sum is rank 0's, in block order */
        for (uint32_t i = 1; i < r->own; i++) v += r->vals[i];
        if (st == FL_OK && r->sum) memcpy(grad, r->sum, r->n * sizeof(fl_real));
        *value = v;
        return st;
    }
    const int me = tp->rank, N = tp->size, last = N - 1;
    chain_head h = { N, 0, 0 };
    if (me == 0) {
        for (uint32_t i = 1; i < r->own; i++) v += r->vals[i];
        h.value = v;
    } else {
        t_recv(&h, sizeof h, me - 1);
        for (uint32_t i = 0; i < r->own; i++) h.value += r->vals[i];
    }
    if (st != FL_OK && h.fail_rank == N) {
        h.fail_rank = me;
        h.fail_status = (int32_t)st;
    }
    if (me < last) t_send(&h, sizeof h, me + 1);
    for (size_t c = 0; c < r->n; c += PIECE) {
        const size_t m = r->n - c < PIECE ? r->n - c : PIECE;
        fl_real *s = r->sum + c;
        if (me > 0) {
            t_recv(s, m * sizeof(fl_real), me - 1);
            for (uint32_t i = 0; i + 1 < r->own; i++) add_into(s, r->held + i * r->n + c, m);
            add_into(s, grad + c, m); /* this rank's last block */
        }
        if (me < last) t_send(s, m * sizeof(fl_real), me + 1);
    }
    if (me == last) memcpy(grad, r->sum, r->n * sizeof(fl_real));
    t_bcast(&h, sizeof h, last);
    t_bcast(grad, r->n * sizeof(fl_real), last);
    *value = h.value;
    if (h.fail_rank < N) return spread_error(h.fail_rank, (fl_status)h.fail_status);
    return FL_OK;
}

/* ---- agreement ----------------------------------------------------------- */

/* The smallest of every rank's v, on every rank. */
static int min_int(int v)
{
    int32_t m = v;
    if (tp->rank == 0) {
        for (int r = 1; r < tp->size; r++) {
            int32_t x;
            t_recv(&x, sizeof x, r);
            if (x < m) m = x;
        }
    } else {
        t_send(&m, sizeof m, 0);
    }
    t_bcast(&m, sizeof m, 0);
    return m;
}

fl_status fl_dist_agree(fl_status st)
{
    if (!tp) return st;
    const int first = min_int(st != FL_OK ? tp->rank : tp->size);
    if (first == tp->size) return FL_OK;
    return spread_error(first, st);
}

void fl_dist_bcast0(void *buf, size_t bytes)
{
    if (tp) t_bcast(buf, bytes, 0);
}

int fl_dist_same(uint64_t h, int *rank)
{
    *rank = 0;
    if (!tp) return 1;
    uint64_t h0 = h;
    t_bcast(&h0, sizeof h0, 0);
    const int first = min_int(h != h0 ? tp->rank : tp->size);
    if (first == tp->size) return 1;
    *rank = first;
    return 0;
}

uint64_t fl_dist_hash(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* ---- evaluation ---------------------------------------------------------- */

static void share_of(int r, int N, uint64_t n, uint64_t chunk, uint64_t *p0, uint64_t *p1)
{
    const uint64_t chunks = (n + chunk - 1) / chunk;
    const uint64_t c0 = chunks * (uint64_t)r / (uint64_t)N;
    const uint64_t c1 = chunks * (uint64_t)(r + 1) / (uint64_t)N;
    *p0 = c0 * chunk < n ? c0 * chunk : n;
    *p1 = c1 * chunk < n ? c1 * chunk : n;
}

void fl_dist_share(uint64_t n, uint64_t chunk, uint64_t *p0, uint64_t *p1)
{
    share_of(fl_dist_rank(), fl_dist_size(), n, chunk ? chunk : 1, p0, p1);
}

fl_status fl_dist_allgather(fl_status st, void *rows, size_t row_bytes, uint64_t n,
                            uint64_t chunk)
{
    if (!tp) return st;
    st = fl_dist_agree(st);
    if (st != FL_OK) return st;
    char *b = rows;
    uint64_t p0, p1;
    if (tp->rank == 0) {
        for (int r = 1; r < tp->size; r++) {
            share_of(r, tp->size, n, chunk ? chunk : 1, &p0, &p1);
            if (p1 > p0) t_recv(b + p0 * row_bytes, (p1 - p0) * row_bytes, r);
        }
    } else {
        fl_dist_share(n, chunk, &p0, &p1);
        if (p1 > p0) t_send(b + p0 * row_bytes, (p1 - p0) * row_bytes, 0);
    }
    t_bcast(rows, n * row_bytes, 0);
    return FL_OK;
}

/* ---- the line of a stopped rank ------------------------------------------ */

/* Two lines, so the handler always reads a complete one: `cur` flips after
 * the other is written. */
static char line[2][1400];
static size_t line_len[2];
static volatile sig_atomic_t cur;
static char *watched;            /* the run directory (owned) */
static char *watched_exp;        /* the experiment file (owned) */
static const char *erase = "";   /* clears rank 0's progress line on a terminal */
static uint64_t noted_step = UINT64_MAX, noted_saved = UINT64_MAX;

static void on_stop(int sig)
{
    const int c = cur;
    if (write(STDERR_FILENO, line[c], line_len[c]) < 0) { /* nothing left to do */ }
    signal(sig, SIG_DFL);
    raise(sig);
}

void fl_dist_note(uint64_t step, uint64_t saved)
{
    if (!watched || (step == noted_step && saved == noted_saved)) return;
    noted_step = step;
    noted_saved = saved;
    const int n = !cur;
    int len;
    if (saved)
        len = snprintf(line[n], sizeof line[n],
                       "%sflowlab: rank %d: stopping at step %llu: the job was stopped (another "
                       "rank died, or mpirun was interrupted); %s keeps its last checkpoint (step "
                       "%llu): continue with flowlab run %s --out %s --resume (under any "
                       "mpirun -n up to [train] grad_blocks)\n",
                       erase, fl_dist_rank(), (unsigned long long)step, watched,
                       (unsigned long long)saved, watched_exp, watched);
    else
        len = snprintf(line[n], sizeof line[n],
                       "%sflowlab: rank %d: stopping at step %llu: the job was stopped (another "
                       "rank died, or mpirun was interrupted); %s has no checkpoint yet (set "
                       "[train] checkpoint_every), so --resume starts it afresh\n",
                       erase, fl_dist_rank(), (unsigned long long)step, watched);
    line_len[n] = len < 0 ? 0 : (size_t)len < sizeof line[n] ? (size_t)len : sizeof line[n] - 1;
    cur = n;
}

void fl_dist_watch(const char *exp_path, const char *rundir)
{
    if (!tp || watched) return;
    watched_exp = fl_strdup(exp_path ? exp_path : "EXP.ini");
    watched = fl_strdup(rundir ? rundir : "the run directory");
    if (!watched || !watched_exp) {
        free(watched);
        free(watched_exp);
        watched = watched_exp = NULL;
        return;
    }
    if (isatty(STDERR_FILENO)) erase = "\r\033[K";
    fl_dist_note(0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}
