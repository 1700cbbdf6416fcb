/* dist.h - one training run spread over several processes (data
 * parallelism): which rows of a batch each process computes, the gradient
 * summed across processes in a fixed order, and agreement on failures.
 *
 * Fixed row blocks make the result independent of the process count N:
 * [train] grad_blocks = G cuts every batch of B points into G contiguous
 * blocks by a rule of B and G alone (fl_dist_block_rows); each block's
 * gradient of the batch-mean loss is computed on its own, and the blocks
 * are summed in the order ((g0 + g1) + g2) + ..., whichever process holds
 * them. Rank r owns a contiguous run of blocks (fl_dist_my_blocks); the sum
 * travels along a chain (rank r - 1 -> r -> r + 1, each adding its blocks
 * in order, in pipelined pieces of the parameter vector) and the last rank
 * broadcasts the total, so every rank runs the same Adam step on the same
 * numbers. With one process and G = 1 nothing is copied or sent: the step
 * is the computation flowlab always did.
 *
 * The messages go through a transport (fl_dist_transport) that the
 * executable installs when it runs under mpirun (train/dist_mpi.c, the only
 * file that calls MPI); without one every function here serves a single
 * process, so this file and the training loop need no MPI.
 *
 * Collectives (marked so below) must be called by every rank in the same
 * order. Not thread-safe: call from the main thread. */
#ifndef FL_DIST_H
#define FL_DIST_H

#include <stddef.h>
#include <stdint.h>

#include <flowlab/core.h>

/* Point-to-point messages and a broadcast between the ranks of one job.
 * Blocking; `bytes` may exceed INT_MAX (the transport splits). A transport
 * error ends the whole job (MPI's default), so these do not return one. */
typedef struct fl_dist_transport {
    int rank, size;   /* this process's rank and the number of ranks (>= 2) */
    void (*send)(const void *buf, size_t bytes, int to);
    void (*recv)(void *buf, size_t bytes, int from);
    void (*bcast)(void *buf, size_t bytes, int root);
} fl_dist_transport;

/* Installs the transport (not owned; must outlive every call here), or
 * NULL for one process (the default). Call before anything else here. */
void fl_dist_use(const fl_dist_transport *t);
/* This process's rank (0 without a transport) and the number of ranks. */
int fl_dist_rank(void);
int fl_dist_size(void);

/* Block g of G over B points: points [*p0, *p0 + *n). Depends on B, G
 * and g only (block g starts at floor(g * B / G)). Needs 1 <= G <= B. */
void fl_dist_block_rows(uint32_t B, uint32_t G, uint32_t g, uint32_t *p0, uint32_t *n);
/* The blocks this rank computes: [*first, *end) of G (needs N <= G). */
void fl_dist_my_blocks(uint32_t G, uint32_t *first, uint32_t *end);

/* The sum of the blocks' gradients (and step values) across ranks. */
typedef struct fl_dist_grad {
    size_t n;         /* parameters (the arena's total) */
    uint32_t own;     /* blocks this rank computes */
    fl_real *sum;     /* n: the running sum (NULL with one block on one process) */
    fl_real *held;    /* (own - 1) x n: a rank > 0's blocks before the last, kept until
                         the running sum arrives (its last block stays in grad) */
    double *vals;     /* own: the blocks' step values */
} fl_dist_grad;

/* Sizes r for n parameters and G blocks (after fl_dist_use). Allocates
 * the buffers above (nothing for one process with G = 1). FL_ERR_NOMEM. */
fl_status fl_dist_grad_init(fl_dist_grad *r, size_t n, uint32_t G);
void fl_dist_grad_free(fl_dist_grad *r);
/* After the step of own block i (0 = this rank's first) has put its
 * gradient into `grad` and its value into `value`: records them. Rank 0
 * (and a single process) adds the block to the running sum at once; the
 * caller then clears grad for the next block. A rank's last block stays in
 * grad (do not clear it). */
void fl_dist_grad_add(fl_dist_grad *r, uint32_t i, const fl_real *grad, double value);
/* Collective. Sums every rank's blocks in block order into grad (every
 * rank gets the same bits) and the step values likewise into *value.
 * `st` is this rank's status for the step: when any rank failed, every
 * rank returns the first failing rank's status with its fl_err message
 * (fl_dist_error_shared() is then 1) and grad is unspecified. */
fl_status fl_dist_grad_reduce(fl_dist_grad *r, fl_status st, fl_real *grad, double *value);

/* Collective. Every rank's status in; out the status of the lowest rank
 * that failed, with its fl_err message on every rank (fl_dist_error_shared
 * then returns 1, so only rank 0 needs to print it), or FL_OK. */
fl_status fl_dist_agree(fl_status st);
/* 1 once an error has come through fl_dist_agree, fl_dist_grad_reduce or
 * fl_dist_allgather (every rank holds it, so a rank other than 0 need not
 * print it); 0 before. Any time. */
int fl_dist_error_shared(void);
/* Collective. Rank 0's `bytes` bytes of buf on every rank. */
void fl_dist_bcast0(void *buf, size_t bytes);
/* Collective. 1 when every rank passes the same `h` (e.g. a hash of the
 * parameters), else 0 on every rank and *rank set to the lowest rank whose h
 * differs from rank 0's. */
int fl_dist_same(uint64_t h, int *rank);
/* Bytes this rank has sent and received through the transport so far (a
 * broadcast counts once: as sent by its root, received by the others). */
void fl_dist_traffic(uint64_t *sent, uint64_t *received);
/* FNV-1a of n bytes (for fl_dist_same). */
uint64_t fl_dist_hash(const void *p, size_t n);

/* Evaluation over the ranks: n points computed in chunks of `chunk` (the
 * computation's unit, cut from point 0 as one process cuts them, so every
 * point's value is the one process's bits). This rank's points: [*p0, *p1),
 * whole chunks, contiguous in rank order (all of them for one process). */
void fl_dist_share(uint64_t n, uint64_t chunk, uint64_t *p0, uint64_t *p1);
/* Collective. After each rank filled its share (fl_dist_share with the
 * same n and chunk) of rows (n rows of row_bytes): every rank's rows on
 * every rank, so sums over the points run in point order everywhere. `st`
 * is this rank's status, agreed first (fl_dist_agree); rows are then not
 * exchanged. */
fl_status fl_dist_allgather(fl_status st, void *rows, size_t row_bytes, uint64_t n,
                            uint64_t chunk);

/* The message a surviving rank prints when the job is stopped by a signal
 * (mpirun stops every rank once one has died): installs handlers for
 * SIGTERM, SIGINT and SIGHUP that write one line naming this rank, the
 * step and the run directory's last checkpoint, then end the process by
 * the same signal. Only with more than one rank; `exp_path` (the
 * experiment file, for the --resume command it suggests) and `rundir` are
 * copied. */
void fl_dist_watch(const char *exp_path, const char *rundir);
/* Updates that line: the step under way and the last checkpoint written
 * (0 = none). Cheap; called every step. */
void fl_dist_note(uint64_t step, uint64_t saved);

#endif
