/*
 * flowlab/core.h - the scalar type, ABI version, status codes, component kinds.
 *
 * Every other flowlab header includes this one. It defines nothing that needs
 * linking: a plugin built against include/flowlab alone uses only inline code
 * from here and the function table the host hands it (see host.h).
 *
 *   #include <flowlab/core.h>
 *   fl_real x = 0;                      // float, or double with -DFL_REAL_DOUBLE
 *   fl_status st = FL_OK;
 *   if (st != FL_OK) puts(fl_status_str(st));
 *
 * Thread-safety: everything here is pure and reentrant.
 */
#ifndef FLOWLAB_CORE_H
#define FLOWLAB_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version. A plugin with a different major is refused; a newer minor on
 * either side is fine: structs grow only by appending fields, and a field
 * added after 1.0 is marked `since 1.N` where it is declared. Structs that
 * start with their own size (fl_host, the class structs) say by it which
 * fields they have (FL_STRUCT_HAS); for the others the ABI minor of the
 * other side does (FL_ABI_AT_LEAST in host.h).
 *   1.0  the first release: flows, data sets, the host table.
 *   1.1  the posterior, estimator, likelihood, prior and target class
 *        structs; fl_dataset_info.flags (FL_DATA_BINARIZE_DYNAMIC).
 *   1.2  the first flag of fl_likelihood_class.flags (FL_LIK_CONCURRENT_LOGP).
 *   1.3  the convolution service: fl_host.conv_create, conv_forward,
 *        conv_backward and fl_conv_spec (host.h).
 *   1.4  shaped flows: fl_flow_shape.c, h, w, FL_FLOW_SHAPED, the factored-out
 *        part z of fl_flow_fwd/bwd/inv and fl_host.flow_output (flow.h,
 *        host.h); fl_dataset_info.image_c (dataset.h); the conv service's
 *        FL_CONV_UPSAMPLE, FL_CONV_BATCHNORM and fl_host.conv_forward_mode. */
#define FL_ABI_MAJOR 1
#define FL_ABI_MINOR 4

/* The end of `member` of struct `type`, in bytes from the start. */
#ifdef __cplusplus
#define FL_MEMBER_END(type, member) (offsetof(type, member) + sizeof(type::member))
#else
#define FL_MEMBER_END(type, member) (offsetof(type, member) + sizeof(((type *)0)->member))
#endif

/* Whether the struct at `ptr`, of a type that begins with its own size
 * (`uint32_t struct_size`, e.g. fl_host), has `member`: its struct_size
 * covers the member, so the other side was built with it. E.g.
 *
 *   if (FL_STRUCT_HAS(host, fl_host, gemm)) ...      // see FL_HOST_HAS
 *
 * Class structs keep their size in base.struct_size: FL_CLASS_HAS
 * (component.h). */
#define FL_STRUCT_HAS(ptr, type, member)                                           \
    (FL_MEMBER_END(type, member) <= (ptr)->struct_size)

/* The scalar type of all parameters, activations and data. float by default
 * (speed); meson -Dreal=double builds host and plugins with double. The
 * plugin entry records sizeof(fl_real) so the two never mix. */
#ifdef FL_REAL_DOUBLE
typedef double fl_real;
#define FL_REAL_NAME "double"
#else
typedef float fl_real;
#define FL_REAL_NAME "float"
#endif

/* Symbol visibility for the one exported plugin entry. */
#if defined(__GNUC__) || defined(__clang__)
#define FL_EXPORT __attribute__((visibility("default")))
#else
#define FL_EXPORT
#endif

/* Printf-style format checking of the host's log and error (GCC, clang);
 * nothing for other compilers. */
#if defined(__GNUC__) || defined(__clang__)
#define FL_PRINTF_FORMAT(fmt_, first_) __attribute__((format(printf, fmt_, first_)))
#else
#define FL_PRINTF_FORMAT(fmt_, first_)
#endif

/* Status codes returned by every fallible ABI function. */
typedef enum fl_status {
    FL_OK = 0,
    FL_ERR_INVALID = 1,     /* bad argument or configuration value */
    FL_ERR_NOMEM = 2,       /* allocation failed */
    FL_ERR_IO = 3,          /* file missing, unreadable or unwritable */
    FL_ERR_FORMAT = 4,      /* file present but malformed */
    FL_ERR_UNSUPPORTED = 5, /* operation not provided (e.g. no inverse) */
    FL_ERR_NUMERIC = 6,     /* NaN or infinity produced */
    FL_ERR_ABI = 7,         /* plugin/host ABI mismatch */
    FL_ERR_NOT_FOUND = 8,   /* named component, key or file not found */
    FL_ERR_EXISTS = 9,      /* would overwrite something that exists */
    FL_ERR_INTERNAL = 10    /* broken invariant: a bug */
} fl_status;

/* A short, static, human-readable name for a status. Never NULL. */
static inline const char *fl_status_str(fl_status s)
{
    switch (s) {
    case FL_OK: return "ok";
    case FL_ERR_INVALID: return "invalid argument";
    case FL_ERR_NOMEM: return "out of memory";
    case FL_ERR_IO: return "i/o error";
    case FL_ERR_FORMAT: return "malformed input";
    case FL_ERR_UNSUPPORTED: return "unsupported operation";
    case FL_ERR_NUMERIC: return "non-finite number";
    case FL_ERR_ABI: return "ABI mismatch";
    case FL_ERR_NOT_FOUND: return "not found";
    case FL_ERR_EXISTS: return "already exists";
    case FL_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

/* Component kinds. Values are part of the ABI and never reused; a host that
 * does not know a kind skips that component with a warning and keeps the
 * rest of the plugin, so adding a kind never breaks old plugins or hosts.
 * The class structs are defined in flow.h and dataset.h (ABI 1.0), and in
 * posterior.h, estimator.h, likelihood.h, prior.h and target.h (since 1.1;
 * the values 2 to 6 were reserved in 1.0). */
typedef enum fl_kind {
    FL_KIND_FLOW = 1,
    FL_KIND_POSTERIOR = 2,
    FL_KIND_ESTIMATOR = 3,
    FL_KIND_LIKELIHOOD = 4,
    FL_KIND_PRIOR = 5,
    FL_KIND_TARGET = 6,
    FL_KIND_DATASET = 7
} fl_kind;

/* Whether a call is part of training (batch statistics, dropout, caching for
 * backward) or evaluation (running statistics). */
typedef enum fl_mode { FL_MODE_TRAIN = 0, FL_MODE_EVAL = 1 } fl_mode;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_CORE_H */
