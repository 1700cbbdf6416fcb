/* mpi.c - which rank runs which cell of a sweep (mpi.h): rank 0's
 * dispatcher, which is also the whole loop of a sweep without MPI, the
 * other ranks' workers, and MPI's start and end. The only file that calls
 * MPI: compiled with FL_HAVE_MPI and linked with MPI in a build with it
 * (-Dmpi, framework/meson.build); without it the same functions serve one
 * process. The processes themselves are sweep/runner.c's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef FL_HAVE_MPI
#include <mpi.h>
#endif

#include "core/util.h"
#include "sweep/mpi.h"
#include "sweep/runner.h"

int fl_sweep_mpi_start(int *rank, int *size)
{
    *rank = 0;
    *size = 1;
#ifndef FL_HAVE_MPI
    const char *ranks = getenv("OMPI_COMM_WORLD_SIZE");
    if (ranks && atoi(ranks) > 1) {
        fprintf(stderr, "flowlab: error: sweep under mpirun, but this flowlab was built without "
                        "MPI (meson setup -Dmpi=enabled, with libopenmpi-dev)\n");
        return -1;
    }
    return 0;
#else
    /* Only under a launcher: a plain run must not start MPI's runtime. */
    int mpi = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
    if (mpi && MPI_Init(NULL, NULL) != MPI_SUCCESS) mpi = 0;
    if (mpi) {
        MPI_Comm_rank(MPI_COMM_WORLD, rank);
        MPI_Comm_size(MPI_COMM_WORLD, size);
    }
    return mpi;
#endif
}

int fl_sweep_mpi_bcast(int value)
{
#ifdef FL_HAVE_MPI
    MPI_Bcast(&value, 1, MPI_INT, 0, MPI_COMM_WORLD);
#endif
    return value;
}

void fl_sweep_mpi_end(void)
{
#ifdef FL_HAVE_MPI
    MPI_Finalize();
#endif
}

/* ---- scheduling: one loop for rank 0 (or the only process), one for the
 * other ranks ------------------------------------------------------------ */

#ifdef FL_HAVE_MPI
enum { TAG_UP = 7101, TAG_CELL = 7102 };
enum { MSG_REQUEST = 1, MSG_RESULT = 2 };
typedef struct wire {
    int32_t kind, cell;
    fl_cell_result r;
} wire;
#endif

void fl_sweep_dispatch(fl_sweep_run *x, fl_sweep_slot *slots)
{
    size_t next = 0;
#ifdef FL_HAVE_MPI
    int stops = 0;
    size_t remote = 0;
#endif
    for (;;) {
        int progress = 0;
#ifdef FL_HAVE_MPI
        for (int flag = 1; x->size > 1 && flag;) {
            MPI_Status ms;
            MPI_Iprobe(MPI_ANY_SOURCE, TAG_UP, MPI_COMM_WORLD, &flag, &ms);
            if (!flag) break;
            wire w;
            MPI_Recv(&w, (int)sizeof w, MPI_BYTE, ms.MPI_SOURCE, TAG_UP, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
            if (w.kind == MSG_REQUEST) {
                int32_t c = next < x->s->n_cells ? (int32_t)next++ : -1;
                MPI_Send(&c, 1, MPI_INT32_T, ms.MPI_SOURCE, TAG_CELL, MPI_COMM_WORLD);
                if (c < 0) stops++;
                else remote++;
            } else {
                fl_sweep_record(x, (size_t)w.cell, &w.r);
                remote--;
            }
            progress = 1;
        }
#endif
        fl_sweep_slot *sl;
        while (next < x->s->n_cells && (sl = fl_sweep_free_slot(x, slots))) {
            fl_cell_result r;
            size_t c = next++;
            if (!fl_sweep_start_cell(x, c, sl, &r)) fl_sweep_record(x, c, &r);
            progress = 1;
        }
        progress += fl_sweep_reap(x, slots, fl_sweep_record);
        int finished = next >= x->s->n_cells && !fl_sweep_busy(x, slots);
#ifdef FL_HAVE_MPI
        finished = finished && stops == x->size - 1 && remote == 0;
#endif
        if (finished) break;
        if (!progress) fl_sweep_nap();
    }
}

#ifdef FL_HAVE_MPI
static void send_result(fl_sweep_run *x, size_t c, const fl_cell_result *r)
{
    (void)x;
    wire w = { .kind = MSG_RESULT, .cell = (int32_t)c, .r = *r };
    MPI_Send(&w, (int)sizeof w, MPI_BYTE, 0, TAG_UP, MPI_COMM_WORLD);
}

void fl_sweep_work(fl_sweep_run *x, fl_sweep_slot *slots)
{
    int stopped = 0;
    for (;;) {
        int progress = 0;
        fl_sweep_slot *sl;
        while (!stopped && (sl = fl_sweep_free_slot(x, slots))) {
            wire w = { .kind = MSG_REQUEST, .cell = -1 };
            int32_t c;
            MPI_Send(&w, (int)sizeof w, MPI_BYTE, 0, TAG_UP, MPI_COMM_WORLD);
            MPI_Recv(&c, 1, MPI_INT32_T, 0, TAG_CELL, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            if (c < 0) {
                stopped = 1;
                break;
            }
            fl_cell_result r;
            if (!fl_sweep_start_cell(x, (size_t)c, sl, &r)) send_result(x, (size_t)c, &r);
            progress = 1;
        }
        progress += fl_sweep_reap(x, slots, send_result);
        if (stopped && !fl_sweep_busy(x, slots)) break;
        if (!progress) fl_sweep_nap();
    }
}
#else
void fl_sweep_work(fl_sweep_run *x, fl_sweep_slot *slots)
{
    (void)x, (void)slots; /* one process, rank 0: no other ranks to work for */
}
#endif
