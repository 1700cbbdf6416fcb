/* dist_mpi.c - MPI under `flowlab run` and `flowlab eval` (dist_mpi.h):
 * starts MPI when the process runs under mpirun and installs the
 * transport of train/dist.h. With sweep/mpi.c the only files calling MPI;
 * built into the executable only (framework/meson.build), with
 * FL_HAVE_MPI in a build with MPI; without it a launch with several ranks
 * is refused and one process runs as always. */
#include "train/dist_mpi.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef FL_HAVE_MPI
#include <mpi.h>
#endif

#include "train/dist.h"

/* Whether this process was started by another flowlab (a sweep's cell,
 * sweep/runner.c): it inherits the launcher's variables from its parent
 * rank but is not a rank itself. */
static int child_of_flowlab(void)
{
    char self[PATH_MAX], parent[PATH_MAX], link[64];
    snprintf(link, sizeof link, "/proc/%ld/exe", (long)getppid());
    ssize_t a = readlink("/proc/self/exe", self, sizeof self - 1);
    ssize_t b = readlink(link, parent, sizeof parent - 1);
    return a > 0 && a == b && memcmp(self, parent, (size_t)a) == 0;
}

/* Under a launcher (mpirun sets these): a plain run never starts MPI. */
static int launched(int *ranks)
{
    const char *s = getenv("OMPI_COMM_WORLD_SIZE");
    if (!s) s = getenv("PMI_SIZE");
    *ranks = s ? atoi(s) : 0;
    return (s || getenv("PMIX_RANK") || getenv("PMI_RANK")) && !child_of_flowlab();
}

#ifdef FL_HAVE_MPI
/* Messages above INT_MAX bytes go in pieces. */
static const size_t MAXMSG = (size_t)INT_MAX / 2;

static void mpi_send(const void *buf, size_t bytes, int to)
{
    const char *p = buf;
    do {
        size_t m = bytes < MAXMSG ? bytes : MAXMSG;
        MPI_Send(p, (int)m, MPI_BYTE, to, 7201, MPI_COMM_WORLD);
        p += m;
        bytes -= m;
    } while (bytes);
}

static void mpi_recv(void *buf, size_t bytes, int from)
{
    char *p = buf;
    do {
        size_t m = bytes < MAXMSG ? bytes : MAXMSG;
        MPI_Recv(p, (int)m, MPI_BYTE, from, 7201, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        p += m;
        bytes -= m;
    } while (bytes);
}

static void mpi_bcast(void *buf, size_t bytes, int root)
{
    char *p = buf;
    do {
        size_t m = bytes < MAXMSG ? bytes : MAXMSG;
        MPI_Bcast(p, (int)m, MPI_BYTE, root, MPI_COMM_WORLD);
        p += m;
        bytes -= m;
    } while (bytes);
}

static fl_dist_transport transport = { 0, 1, mpi_send, mpi_recv, mpi_bcast };
static int started;
#endif

int fl_dist_mpi_start(const char *cmd)
{
    int ranks;
    if (!launched(&ranks)) return 0;
#ifndef FL_HAVE_MPI
    if (ranks > 1) {
        fprintf(stderr, "flowlab %s: error: run under mpirun with %d ranks, but this flowlab "
                        "was built without MPI (meson setup -Dmpi=enabled, with "
                        "libopenmpi-dev)\n", cmd, ranks);
        return -1;
    }
    return 0;
#else
    (void)cmd;
    (void)ranks;
    /* A rank waiting for the chain yields its core instead of spinning:
     * on a machine shared with other work (or more ranks than cores) the
     * spinning took the core from the rank being waited for, 3-4x slower
     * per step; with a core per rank it costs nothing. The user's own
     * setting (environment or mpirun --mca) wins. */
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) return 0;
    started = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &transport.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &transport.size);
    fl_dist_use(&transport);
    return 1;
#endif
}

void fl_dist_mpi_end(void)
{
#ifdef FL_HAVE_MPI
    if (!started) return;
    fl_dist_use(NULL);
    MPI_Finalize();
    started = 0;
#endif
}
