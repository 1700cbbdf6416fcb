# mpi.sh - sourced by the shell tests that run flowlab under mpirun
# (test_mpi.sh, test_sweep.sh mpi): need_mpi exits 77 (skipped) without an
# MPI build (FLOWLAB_MPI, set by meson test) or mpirun, and lets Open MPI
# run as root (CI runs as root).
need_mpi() {
    if [ "${FLOWLAB_MPI:-false}" != true ]; then
        echo "skip: flowlab is built without MPI"
        exit 77
    fi
    if ! command -v mpirun >/dev/null; then
        echo "skip: no mpirun"
        exit 77
    fi
    if [ "$(id -u)" = 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
}
