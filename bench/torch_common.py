"""torch_common.py - the set-up and the report shared by the PyTorch
references of bench_vae (torch_vae.py, torch_quickstart.py).

PyTorch at its best on this kind of machine: 2 threads, denormals flushed
(torch.set_flush_denormal), the OpenMP build of OpenBLAS (selected for the
child process only by LD_LIBRARY_PATH, the system's libblas alternative
stays as it is), glibc told to keep freed memory (MALLOC_* in the child's
environment), ATen's AVX-512 kernels where the CPU has them
(ATEN_CPU_CAPABILITY, opt-in in 1.13). blas_report() says from inside the process what actually ran:
the BLAS library mapped into it (/proc/self/maps), OpenBLAS's core and
threading, ATen's CPU capability and the allocator settings it saw.
"""
import ctypes
import os


def _avx512():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":")[1].split())
                return {"avx512f", "avx512bw", "avx512dq", "avx512vl", "fma"} <= flags
    return False


# PyTorch 1.13 keeps its AVX-512 kernels opt-in (pytorch issue 80252); here
# they double its IWAE rate (alternating, 2 threads: 280-352 examples/s with
# AVX2, 606-654 with AVX-512). ATen reads this at its first dispatch.
if _avx512():
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx512")

import torch  # noqa: E402 (after ATEN_CPU_CAPABILITY)


def setup():
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    flush = torch.set_flush_denormal(True)
    torch.manual_seed(1)
    return flush


def blas_report(flush):
    """One '#' line: what this process ran (for bench_vae to print)."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "blas" in p or "lapack" in p or "libgomp" in p or "libiomp" in p:
                libs.add(p)
    core = par = "?"
    blas = ",".join(sorted(os.path.basename(os.path.dirname(p)) + "/" + os.path.basename(p)
                           for p in libs if "blas" in p)) or "none"
    for p in libs:
        if "libopenblas" in p:
            lib = ctypes.CDLL(p)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            core = lib.openblas_get_corename().decode()
            par = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(lib.openblas_get_parallel(), "?")
    cap = "?"
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage" in line:
            cap = line.split(":")[-1].strip()
    env = os.environ
    return ("# torch %s threads=%d flush_denormal=%d blas=%s core=%s blas_threading=%s "
            "aten_capability=%s malloc_mmap_threshold=%s malloc_trim_threshold=%s "
            "OPENBLAS_CORETYPE=%s" % (
                torch.__version__, torch.get_num_threads(), int(flush), blas, core, par, cap,
                env.get("MALLOC_MMAP_THRESHOLD_", "unset"), env.get("MALLOC_TRIM_THRESHOLD_", "unset"),
                env.get("OPENBLAS_CORETYPE", "unset")))
