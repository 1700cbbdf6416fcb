/* mpi.h - which rank runs which cell of a sweep: rank 0's dispatcher (also
 * the loop of a sweep without MPI) and the other ranks' workers, and MPI's
 * start and end. Only mpi.c calls MPI; it is compiled with FL_HAVE_MPI in
 * a build with MPI (-Dmpi), and without it these are the one-process
 * versions. */
#ifndef FL_SWEEP_MPI_H
#define FL_SWEEP_MPI_H

#include "sweep/runner.h"

/* Starts MPI when the process runs under a launcher (mpirun) in a build
 * with MPI, setting *rank and *size; else sets 0 and 1. Returns 1 when MPI
 * is in use (then call fl_sweep_mpi_end before exiting), 0 when not, -1
 * (a usage error, printed) under mpirun with several ranks in a build
 * without MPI. Call once, before the sweep runs. */
int fl_sweep_mpi_start(int *rank, int *size);
/* Rank 0's `value` on every rank (a collective: every rank calls it).
 * Only while MPI is in use. */
int fl_sweep_mpi_bcast(int value);
/* Ends MPI (MPI_Finalize); only after fl_sweep_mpi_start returned 1. */
void fl_sweep_mpi_end(void);

/* Rank 0 (or the only process): hands out the cells in order, one at a
 * time, to its own free slots and to the other ranks as they ask, and
 * records every result (fl_sweep_record) until all are in. */
void fl_sweep_dispatch(fl_sweep_run *x, fl_sweep_slot *slots);
/* Ranks other than 0: asks rank 0 for a cell whenever a slot is free, runs
 * it and sends its result back, until rank 0 says there is none left and
 * the last child has ended. Without MPI there are no such ranks: it
 * returns at once. */
void fl_sweep_work(fl_sweep_run *x, fl_sweep_slot *slots);

#endif
