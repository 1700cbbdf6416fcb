/* dist_mpi.h - MPI for `flowlab run` and `flowlab eval` (data parallelism,
 * train/dist.h). Built into the executable only, so flowlab_core (the
 * tests' library) needs no MPI. */
#ifndef FL_DIST_MPI_H
#define FL_DIST_MPI_H

/* Under a launcher (mpirun) in a build with MPI: starts MPI and installs
 * its transport (fl_dist_use); returns 1 (call fl_dist_mpi_end before
 * exiting). Outside a launcher: 0, nothing started. Under mpirun with
 * several ranks in a build without MPI: prints why ("flowlab CMD: error:
 * ...") and returns -1 (exit FL_EXIT_USAGE). Call once, first thing. */
int fl_dist_mpi_start(const char *cmd);
/* Ends MPI after fl_dist_mpi_start returned 1 (a collective: every rank
 * calls it); no-op otherwise. */
void fl_dist_mpi_end(void);

#endif
