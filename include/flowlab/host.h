/*
 * flowlab/host.h - the services the host offers a plugin.
 *
 * A plugin links against nothing of flowlab: everything it needs from the
 * host (configuration values, parameters, workspaces, random streams, BLAS,
 * a ready-made MLP and convolutional network, logging) arrives as the function table `fl_host`, handed
 * to the plugin's init and to every create. Together with an `fl_ctx` (the
 * identity of one component instance) it is all a component needs.
 *
 *   static fl_status my_create(const fl_host *h, fl_ctx *cx,
 *                              const fl_flow_shape *sh, void **out)
 *   {
 *       my_flow *f = calloc(1, sizeof *f);
 *       if (!f) return FL_ERR_NOMEM;
 *       f->scale = h->cfg_real(cx, "scale");            // validated already
 *       fl_param_spec w = { "w", sh->dim, FL_INIT_NORMAL, 0, 0, 0.01 };
 *       fl_status st = h->param(cx, &w, &f->w_off);     // offset in theta
 *       if (st != FL_OK) { free(f); return st; }
 *       *out = f;
 *       return FL_OK;
 *   }
 *
 * Lifetimes. The fl_host table lives as long as the process. An fl_ctx lives
 * as long as the component instance it was given to (it is destroyed after
 * the instance's destroy returns), so an instance may keep it for logging.
 *
 * Ownership. Parameters, gradients, workspaces, MLPs and conv nets are owned by the
 * host and freed after the instance is destroyed; a plugin never frees them.
 *
 * When a call is allowed: every member of fl_host below, and every function
 * of the class structs (flow.h, dataset.h, posterior.h, ...), carries one of
 * these tags (CLAP style):
 *
 *   Services of the host (plugin -> host):
 *   [init]        may also be called during the plugin's init, with
 *                 cx == NULL (there is no ctx then).
 *   [create]      only inside the create of the component that owns cx, on
 *                 the thread the host called create on. param, workspace,
 *                 mlp_create and conv_create reserve parameters or memory for the
 *                 instance and are refused afterwards; the cfg_* getters are
 *                 not refused (the values stay readable while cx lives),
 *                 but the contract is create only.
 *   [any]         from create until the instance is destroyed, on any
 *                 thread, but never two calls on the same object (the same
 *                 MLP) at once.
 *   [thread-safe] any time cx lives (or without one, for members that take
 *                 none), on any thread, concurrently with anything,
 *                 including from OpenMP threads a component starts inside
 *                 a call.
 *
 *   Functions of a component (host -> plugin):
 *   [once]        create and destroy: once per instance, from one thread,
 *                 never while another call on the instance runs.
 *   [serial]      the host never overlaps two calls on one instance, but
 *                 may call distinct instances at once, and may call one
 *                 instance from a different thread each time (do not keep
 *                 per-thread state such as thread_local caches).
 *   [concurrent]  may run at the same time as other [concurrent] calls on
 *                 the same instance, from several threads, on disjoint
 *                 outputs: it must not write the instance's own state.
 *
 * Versions: a field of an ABI struct added after ABI 1.0 says so with
 * `since 1.N`. A plugin that also wants to run on older hosts tests for it:
 * FL_HOST_HAS(host, member) for a member of fl_host (which carries its
 * size), FL_ABI_AT_LEAST(host, 1, N) for a field of a struct without a
 * size (shapes, call arguments, info structs the host hands to create).
 */
#ifndef FLOWLAB_HOST_H
#define FLOWLAB_HOST_H

#include "core.h"
#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One component instance's handle into the host. Opaque. */
typedef struct fl_ctx fl_ctx;

/* An MLP owned by the host (see mlp_create). Opaque. */
typedef struct fl_mlp fl_mlp;

/* A convolutional network owned by the host (see conv_create). Opaque.
 * since 1.3 */
typedef struct fl_conv fl_conv;

typedef enum fl_log_level { FL_LOG_DEBUG = 0, FL_LOG_INFO = 1, FL_LOG_WARN = 2, FL_LOG_ERROR = 3 } fl_log_level;

/* Parameter initialisations, applied by the host after all components are
 * created, from a random stream keyed by the seed and the parameter's name. */
typedef enum fl_init {
    FL_INIT_ZERO = 0,
    FL_INIT_CONST = 1,    /* every entry = value */
    FL_INIT_NORMAL = 2,   /* N(0, value^2) */
    FL_INIT_UNIFORM = 3,  /* U(-value, value) */
    FL_INIT_GLOROT = 4,   /* U(-a, a), a = sqrt(6 / (fan_in + fan_out)) */
    FL_INIT_FANIN = 5     /* U(-a, a), a = 1 / sqrt(fan_in): PyTorch's Linear default */
} fl_init;

/* Flags of a parameter request. */
enum {
    /* Not trained: state such as batch norm's running statistics. Its
     * gradient stays zero (so Adam leaves it alone), it is saved in
     * checkpoints, and the layer itself updates it during FL_MODE_TRAIN
     * forward calls through fl_flow_fwd.theta. */
    FL_PARAM_STATE = 1u << 0
};

/* A request for `size` parameters named `name` (unique within the
 * component; the host prefixes the component's path, e.g. "flow.3.s.W0"). */
typedef struct fl_param_spec {
    const char *name;
    size_t size;
    fl_init init;
    uint32_t fan_in, fan_out;  /* for FL_INIT_GLOROT, FL_INIT_FANIN */
    double value;              /* for CONST, NORMAL, UNIFORM */
    uint32_t flags;            /* FL_PARAM_* */
} fl_param_spec;

typedef enum fl_act {
    FL_ACT_LINEAR = 0,
    FL_ACT_RELU = 1,
    FL_ACT_TANH = 2,
    FL_ACT_ELU = 3,
    FL_ACT_SOFTPLUS = 4,
    FL_ACT_SIGMOID = 5
} fl_act;

/* A multilayer perceptron: in -> hidden[0] -> ... -> out, `act` after every
 * hidden layer, linear output. `init` picks the scheme of every layer:
 * FL_INIT_GLOROT (Glorot-uniform weights, zero biases) or FL_INIT_FANIN
 * (weights and biases U(+-1/sqrt(fan_in)), PyTorch's default). `out_init`
 * FL_INIT_ZERO zeroes the last layer (weights and biases) so a flow starts
 * at the identity; any other value leaves it to `init`. `out_bias`, when
 * given, sets the last layer's initial biases (e.g. the logit of the data
 * mean for a Bernoulli decoder). Optional MADE masks: masks[l] is a
 * (fan_in x fan_out) 0/1 matrix for layer l, row-major, copied by the host;
 * the host multiplies by a pre-masked copy of W, so each layer stays one
 * GEMM. NULL masks = dense. */
typedef struct fl_mlp_spec {
    const char *name;          /* parameter prefix, e.g. "s" */
    uint32_t in, out;
    uint32_t n_hidden;
    const uint32_t *hidden;    /* n_hidden widths */
    fl_act act;
    fl_init init;              /* FL_INIT_GLOROT or FL_INIT_FANIN */
    fl_init out_init;          /* FL_INIT_ZERO = identity start, else as init */
    const uint8_t *const *masks; /* NULL, or n_hidden+1 masks */
    const fl_real *out_bias;   /* NULL, or `out` initial output biases */
} fl_mlp_spec;

/* The layers of a convolutional network (fl_conv_layer.op). since 1.3 */
typedef enum fl_conv_op {
    FL_CONV_3X3 = 1,    /* 3x3 convolution, same padding (zeros), stride 1 or 2 */
    FL_CONV_1X1 = 2,    /* 1x1 convolution (a matrix product per pixel), stride 1 */
    FL_CONV_RESNET = 3, /* ResNet block: x + conv3x3(act(conv3x3(x))), channels kept */
    FL_CONV_ACT = 4,    /* activation of the previous layer's output */
    /* since 1.4: nearest-neighbour 2x upsampling, h x w -> 2h x 2w, output
     * pixel (y, x) = input pixel (y / 2, x / 2); no parameters */
    FL_CONV_UPSAMPLE = 5,
    /* since 1.4: batch normalisation per channel, y = gamma (x - mu) /
     * sqrt(var + eps) + beta, with learned gamma (init 1) and beta (init 0).
     * FL_MODE_TRAIN: mu, var are the batch's (biased, over the n*h*w pixels
     * of the call) and the running averages NAME.mean<k>, NAME.var<k>
     * (FL_PARAM_STATE, init 0 and 1) move towards them, r = 0.9 r + 0.1 *
     * batch (var unbiased); FL_MODE_EVAL: mu, var are the running averages.
     * eps = 1e-5. (PyTorch's BatchNorm2d defaults.) See conv_forward_mode. */
    FL_CONV_BATCHNORM = 6
} fl_conv_op;

/* One layer of an fl_conv_spec. since 1.3 */
typedef struct fl_conv_layer {
    fl_conv_op op;
    uint32_t channels;  /* 3X3, 1X1: output channels; RESNET: channels between
                           its two convolutions (0 = its input's); ACT,
                           UPSAMPLE, BATCHNORM: 0 */
    uint32_t stride;    /* 3X3: 1 or 2 (0 means 1); others: 0 or 1 */
    fl_act act;         /* ACT: RELU, ELU or TANH; RESNET: the one between its
                           convolutions (RELU, ELU or TANH); others: LINEAR */
} fl_conv_layer;

/* Flags of an fl_conv_spec. since 1.3 */
enum {
    /* Weight normalization (Salimans & Kingma 2016, as in Real NVP and
     * IAF) of every convolution but a zero-initialised last one: W's
     * column of output channel j is g_j v_j / |v_j|, with v and g trained
     * (v as FL_INIT_FANIN, g = 1). */
    FL_CONV_WEIGHT_NORM = 1u << 0,
    /* The last layer, which must then be a convolution, starts with zero
     * weights and biases (Glow's zero-initialised output layer): the net
     * outputs 0 until trained, so a coupling layer starts at the identity.
     * It is never weight-normalised (|v| = 0). */
    FL_CONV_ZERO_LAST = 1u << 1
};

/*
 * A convolutional network over images of c channels x h rows x w columns,
 * one image per row of the caller's matrices, stored NHWC: element (ch, y,
 * x) of an image is at (y * w + x) * c + ch, so a pixel's channels are
 * contiguous (a 1x1 convolution is then one matrix product over all
 * pixels of the batch, with no copy). Layers run in order; a 3x3
 * convolution with stride 2 gives (h + 1) / 2 x (w + 1) / 2 pixels, an
 * upsampling 2h x 2w. The output has the last convolution's channels.
 * Every convolution has biases; weights and biases start as FL_INIT_FANIN
 * (U(+-1/sqrt(fan_in)), fan_in = taps x input channels) unless the flags
 * say otherwise. An activation follows the layer before it (after a ResNet
 * block's skip sum); it cannot come first or twice in a row. Optional
 * `mask`: h*w*c multipliers (NHWC, e.g. a checkerboard of 0/1) applied to
 * the input before the first layer, at no extra pass; the host copies it.
 *
 * The host reads only the first struct_size bytes: set struct_size =
 * sizeof(fl_conv_spec), so later minors may append fields. since 1.3
 */
typedef struct fl_conv_spec {
    uint32_t struct_size;        /* sizeof(fl_conv_spec) */
    const char *name;            /* parameter prefix, e.g. "st" */
    uint32_t c, h, w;            /* input shape: channels, height, width */
    uint32_t n_layers;
    const fl_conv_layer *layers; /* n_layers layers, copied by the host */
    uint32_t flags;              /* FL_CONV_* */
    const fl_real *mask;         /* NULL, or h*w*c input multipliers (NHWC) */
} fl_conv_spec;

/*
 * The host function table. Append-only: fields are never removed or
 * reordered. Every member up to mlp_backward is ABI 1.0; a member added
 * later says `since 1.N` (the conv_* members: 1.3; flow_output and
 * conv_forward_mode: 1.4), and a plugin that may
 * meet an older host tests it with FL_HOST_HAS(host, member) before using
 * it. The tags are explained at the
 * top of this file.
 */
typedef struct fl_host {
    /* [thread-safe] [init] read-only data: sizeof(fl_host) of the host, and
     * its FL_ABI_MAJOR, FL_ABI_MINOR. */
    uint32_t struct_size;
    uint32_t abi_major, abi_minor;  /* [thread-safe] [init] */

    /* [thread-safe] [init] Printf-style logging, one line on stderr,
     * prefixed with the component's path. `cx` may be NULL (during a
     * plugin's init). The format is checked like printf's; to log text that
     * is not a literal, pass "%s" and the text. */
    void (*log)(fl_ctx *cx, fl_log_level lvl, const char *fmt, ...) FL_PRINTF_FORMAT(3, 4);

    /* [thread-safe] [init] Sets the message that goes with the error status
     * a component is about to return; the host prints it with the
     * component's path, so do not repeat the path. `cx` may be NULL during
     * init. The message is kept per thread: set it on the thread the host
     * called in on, the one that returns the status (a message set on an
     * OpenMP thread started inside the call is not seen). */
    void (*error)(fl_ctx *cx, const char *fmt, ...) FL_PRINTF_FORMAT(2, 3);

    /* [create] Validated configuration values of this component's INI
     * section (or defaults). Asking for a key the component did not declare
     * is a bug: the host logs it and returns 0 / "" / NULL. cfg_str's result
     * lives as long as the ctx. cfg_int_list stores at most `cap` values in
     * `out` and returns how many the key holds. */
    int64_t (*cfg_int)(fl_ctx *cx, const char *key);                 /* [create] */
    double (*cfg_real)(fl_ctx *cx, const char *key);                 /* [create] */
    int (*cfg_bool)(fl_ctx *cx, const char *key);                    /* [create] */
    const char *(*cfg_str)(fl_ctx *cx, const char *key);             /* [create] */
    size_t (*cfg_int_list)(fl_ctx *cx, const char *key, int64_t *out, size_t cap); /* [create] */

    /* [create] Requests parameters (reserves them in the host's parameter
     * arena); on success *offset is their position inside this component's
     * parameter block (the `theta` passed to every call). All of one
     * component's parameters are contiguous, in request order. After create
     * it returns FL_ERR_INTERNAL; for a data set (which has no parameter
     * block) FL_ERR_INVALID. */
    fl_status (*param)(fl_ctx *cx, const fl_param_spec *spec, size_t *offset);

    /* [create] A zeroed, 64-byte aligned scratch buffer of `bytes`, owned by
     * the host and stable until the instance is destroyed. Size it for the
     * largest call (max_rows); never allocate in forward/backward. NULL on
     * OOM, and after create. */
    void *(*workspace)(fl_ctx *cx, size_t bytes);

    /* [thread-safe] Random stream `name` of this component: derived from the
     * experiment seed and the component's path, so it is stable across runs.
     * A pure function of (seed, path, name); needs a ctx (not [init]). */
    fl_rng_key (*rng_key)(fl_ctx *cx, const char *name);

    /* [thread-safe] C = alpha * op(A) op(B) + beta * C, row-major, as
     * cblas_?gemm (nonzero trans_a/trans_b = transposed). BLAS itself runs
     * on the calling thread, so calls from several threads do not
     * oversubscribe the cores. */
    void (*gemm)(int trans_a, int trans_b, int m, int n, int k, fl_real alpha,
                 const fl_real *a, int lda, const fl_real *b, int ldb, fl_real beta,
                 fl_real *c, int ldc);

    /* [create] Creates an MLP whose parameters (reserved like param's, so
     * not for data sets) and workspace (for `max_rows` rows) belong to this
     * component. NULL on error (message already set), and after create. */
    fl_mlp *(*mlp_create)(fl_ctx *cx, const fl_mlp_spec *spec, uint32_t max_rows);

    /* [any] out (n x spec.out) = MLP(in (n x spec.in)), n <= max_rows;
     * caches activations (and keeps `in`) for mlp_backward. `theta` is the
     * component's parameter block. Distinct MLPs may run at once on
     * different threads (affine-coupling runs its s and t nets side by
     * side); one MLP runs one call at a time. */
    void (*mlp_forward)(fl_mlp *m, const fl_real *theta, uint32_t n, const fl_real *in,
                        fl_real *out);

    /* [any] Given dout (n x out) for the last mlp_forward of the same MLP on
     * the same rows: dtheta += d/dtheta, and din += d/din when din is not
     * NULL. */
    void (*mlp_backward)(fl_mlp *m, const fl_real *theta, fl_real *dtheta, uint32_t n,
                         const fl_real *dout, fl_real *din);

    /* since 1.3 [create] Creates a convolutional network (fl_conv_spec) for
     * up to `max_rows` images per call. Its parameters are reserved like
     * param's (so not for data sets), named NAME.W<u> and NAME.b<u> for its
     * u-th convolution (a ResNet block has two), NAME.v<u> and NAME.g<u>
     * instead of W with FL_CONV_WEIGHT_NORM, and (since 1.4) NAME.gamma<k>,
     * NAME.beta<k>, NAME.mean<k>, NAME.var<k> for its k-th batch norm
     * (numbered apart from the convolutions); its buffers belong to the host
     * and are freed with the instance. NULL on error, with the message set
     * (a bad spec names the layer and what is wrong), and after create. */
    fl_conv *(*conv_create)(fl_ctx *cx, const fl_conv_spec *spec, uint32_t max_rows);

    /* since 1.3 [any] out (n x out_h*out_w*out_c, NHWC) = the network of
     * in (n x h*w*c, NHWC), n <= max_rows; `theta` is the component's
     * block. Batch norm layers (since 1.4) use their running averages
     * here (FL_MODE_EVAL); training calls conv_forward_mode. Caches what conv_backward needs and keeps the `in` pointer
     * (leave in unchanged until then). Allocates nothing; bit-identical
     * results for any OpenMP thread count. One call at a time per network;
     * distinct networks may run at once on different threads (a call from
     * inside a parallel region runs on its thread). */
    void (*conv_forward)(fl_conv *c, const fl_real *theta, uint32_t n, const fl_real *in,
                         fl_real *out);

    /* since 1.3 [any] Given dout for the last conv_forward of the same
     * network on the same rows and theta: dtheta += d/dtheta, and din +=
     * d/din (mask included) when din is not NULL (as mlp_backward; dout is
     * read only). Allocates nothing; bit-identical for any thread count. */
    void (*conv_backward)(fl_conv *c, const fl_real *theta, fl_real *dtheta, uint32_t n,
                          const fl_real *dout, fl_real *din);

    /* since 1.4 [create] For a flow layer only: its output y has shape
     * c x h x w (NHWC) instead of its input's. c * h * w must be at most
     * the input's dim; when smaller, the remaining dim - c*h*w numbers of
     * each row are factored out through fl_flow_fwd.z (flow.h). A layer
     * that does not call it keeps its input's shape. FL_ERR_INVALID (with
     * the message set) for a bad shape, FL_ERR_INTERNAL outside create or
     * for a component that is not a flow layer. */
    fl_status (*flow_output)(fl_ctx *cx, uint32_t c, uint32_t h, uint32_t w);

    /* since 1.4 [any] conv_forward in a mode, for nets with
     * FL_CONV_BATCHNORM layers (for other nets the same as conv_forward).
     * FL_MODE_TRAIN normalises with the batch's statistics and, when
     * `state` is not NULL, updates the running averages in `state`: the
     * component's block made writable, normally the same pointer as theta
     * (fl_flow_fwd.theta in a training forward); pass NULL where the block
     * is read-only (an inverse in FL_MODE_TRAIN recomputes the batch's
     * statistics but must not move the averages). FL_MODE_EVAL uses the
     * running averages and ignores state. conv_backward differentiates the
     * last forward in its mode (through the batch statistics in TRAIN).
     * conv_forward is this call with FL_MODE_EVAL. Allocates nothing;
     * bit-identical for any thread count. */
    void (*conv_forward_mode)(fl_conv *c, const fl_real *theta, fl_real *state, fl_mode mode,
                              uint32_t n, const fl_real *in, fl_real *out);
} fl_host;

/* Whether `host` provides `member`: its struct_size covers the member, e.g.
 *
 *   if (FL_HOST_HAS(host, mlp_backward))     // a 1.0 member: always true
 *       host->mlp_backward(m, theta, dtheta, n, dout, din);
 *   if (!FL_HOST_HAS(host, conv_create)) {   // since 1.3: absent before
 *       host->error(cx, "needs a host with ABI 1.3 or later (conv nets)");
 *       return FL_ERR_UNSUPPORTED;
 *   }
 *
 * A member marked `since 1.N` may be absent from an older host, so a plugin
 * that may run on one tests it first and falls back (or fails its create
 * with a message) without it. */
#define FL_HOST_HAS(host, member) FL_STRUCT_HAS(host, fl_host, member)

/* Whether the host's ABI is major.minor or newer (same major). Fields added
 * in minor N to a struct without a struct_size (shapes, call arguments and
 * the info structs create fills) exist only when FL_ABI_AT_LEAST(host, 1, N)
 * holds: read or write them only then. */
#define FL_ABI_AT_LEAST(host, major, minor)                                        \
    ((host)->abi_major == (major) && (host)->abi_minor + 1u > (minor))
/* (abi_minor + 1 > minor, not abi_minor >= minor: the same test without
 * -Wtype-limits' "always true" for minor 0) */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_HOST_H */
