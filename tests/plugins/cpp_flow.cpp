// cpp_flow.cpp - a flow plugin written in C++, built against include/ only.
//
//   cpp-affine:  y = x * exp(s) + b    (s, b learned vectors of size dim)
//                log|det dy/dx| = sum_j s_j for every row
//
// It is what docs/plugin-abi.md ("Writing a plugin in C++") describes: the
// ABI is C, so everything the host sees is a C function pointer in a
// constant class table and the one extern "C" entry FL_PLUGIN defines. The
// layer itself is an ordinary C++ class; a template turns its member
// functions into the ABI's callbacks, and no exception ever leaves them (a
// C caller cannot unwind one: it would terminate the host).
//
//   g++ -std=c++17 -O2 -shared -fPIC -fvisibility=hidden -fvisibility-inlines-hidden
//       -Wl,--version-script=plugins/plugin.map -I include cpp_flow.cpp -o cpp_flow.so
//
// tests/cpp_plugin.sh runs it through `flowlab check` and a short training
// run, in the float and the double build (fl_real throughout, never float).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <vector>

#include <flowlab/flowlab.h>

namespace {

// Runs `f`, turning the exceptions C++ code may throw into a status and the
// host's error message: nothing may unwind into the C host.
template <typename F>
fl_status guarded(const fl_host *host, fl_ctx *cx, F &&f) noexcept
{
    try {
        return f();
    } catch (const std::bad_alloc &) {
        host->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    } catch (const std::exception &e) {
        host->error(cx, "%s", e.what());
        return FL_ERR_INTERNAL;
    } catch (...) {
        host->error(cx, "unknown C++ exception");
        return FL_ERR_INTERNAL;
    }
}

class AffineFlow {
public:
    AffineFlow(const fl_host *host, fl_ctx *cx, const fl_flow_shape &shape)
        : host_(host), cx_(cx), dim_(shape.dim), scale_(host->cfg_bool(cx, "scale") != 0),
          e_(shape.dim)  // exp(s) of the current call: sized once, here
    {
    }

    // [create]: the parameters are requested here and only here.
    fl_status request_parameters()
    {
        const double sd = host_->cfg_real(cx_, "init_std");
        const fl_init init = sd > 0 ? FL_INIT_NORMAL : FL_INIT_ZERO;
        if (scale_) {
            const fl_param_spec s = { "s", dim_, init, 0, 0, sd, 0 };
            const fl_status st = host_->param(cx_, &s, &s_off_);
            if (st != FL_OK) return st;
        }
        const fl_param_spec b = { "b", dim_, init, 0, 0, sd, 0 };
        return host_->param(cx_, &b, &b_off_);
    }

    fl_status forward(const fl_flow_fwd &a)
    {
        const fl_real *b = a.theta + b_off_;
        const fl_real sum_s = load_scale(a.theta, +1);
        for (std::uint32_t r = 0; r < a.n; r++) {
            const fl_real *x = a.x + std::size_t{r} * dim_;
            fl_real *y = a.y + std::size_t{r} * dim_;
            for (std::uint32_t j = 0; j < dim_; j++) y[j] = x[j] * e_[j] + b[j];
            a.logdet[r] += sum_s;
        }
        return FL_OK;
    }

    // dL/dx = dy e^s;  dL/ds_j = sum_r (dy_rj x_rj e^s_j + dlogdet_r);  dL/db_j = sum_r dy_rj
    fl_status backward(const fl_flow_bwd &a)
    {
        load_scale(a.theta, +1);
        fl_real *ds = scale_ ? a.dtheta + s_off_ : nullptr;
        fl_real *db = a.dtheta + b_off_;
        for (std::uint32_t r = 0; r < a.n; r++) {
            const fl_real *x = a.x + std::size_t{r} * dim_;
            const fl_real *dy = a.dy + std::size_t{r} * dim_;
            fl_real *dx = a.dx + std::size_t{r} * dim_;
            for (std::uint32_t j = 0; j < dim_; j++) {
                dx[j] += dy[j] * e_[j];
                db[j] += dy[j];
                if (ds) ds[j] += dy[j] * x[j] * e_[j] + a.dlogdet[r];
            }
        }
        return FL_OK;  // no context: dc untouched
    }

    fl_status inverse(const fl_flow_inv &a)
    {
        const fl_real *b = a.theta + b_off_;
        const fl_real sum_s = load_scale(a.theta, -1);  // e_ = exp(-s)
        for (std::uint32_t r = 0; r < a.n; r++) {
            const fl_real *y = a.y + std::size_t{r} * dim_;
            fl_real *x = a.x + std::size_t{r} * dim_;
            for (std::uint32_t j = 0; j < dim_; j++) x[j] = (y[j] - b[j]) * e_[j];
            if (a.logdet) a.logdet[r] -= sum_s;
        }
        return FL_OK;
    }

private:
    // e_ = exp(sign * s) (ones without a scale); returns sum_j s_j.
    fl_real load_scale(const fl_real *theta, int sign)
    {
        fl_real sum = 0;
        for (std::uint32_t j = 0; j < dim_; j++) {
            const fl_real s = scale_ ? theta[s_off_ + j] : fl_real{0};
            e_[j] = std::exp(static_cast<fl_real>(sign) * s);
            sum += s;
        }
        return sum;
    }

    const fl_host *host_;
    fl_ctx *cx_;
    std::uint32_t dim_;
    bool scale_;
    std::size_t s_off_ = 0, b_off_ = 0;
    std::vector<fl_real> e_;
};

// The C callbacks of a layer class L: each one casts `self` back and calls
// the member function, inside guarded() so that no exception escapes.
template <typename L>
struct FlowCallbacks {
    struct Instance {
        const fl_host *host;
        fl_ctx *cx;
        L layer;
    };

    static fl_status create(const fl_host *host, fl_ctx *cx, const fl_flow_shape *shape,
                            void **self) noexcept
    {
        return guarded(host, cx, [&]() -> fl_status {
            std::unique_ptr<Instance> in(new Instance{ host, cx, L(host, cx, *shape) });
            const fl_status st = in->layer.request_parameters();
            if (st != FL_OK) return st;  // unique_ptr frees; the host never calls destroy
            *self = in.release();
            return FL_OK;
        });
    }

    static void destroy(void *self) noexcept { delete static_cast<Instance *>(self); }

    static fl_status forward(void *self, const fl_flow_fwd *a) noexcept
    {
        Instance *in = static_cast<Instance *>(self);
        return guarded(in->host, in->cx, [&] { return in->layer.forward(*a); });
    }

    static fl_status backward(void *self, const fl_flow_bwd *a) noexcept
    {
        Instance *in = static_cast<Instance *>(self);
        return guarded(in->host, in->cx, [&] { return in->layer.backward(*a); });
    }

    static fl_status inverse(void *self, const fl_flow_inv *a) noexcept
    {
        Instance *in = static_cast<Instance *>(self);
        return guarded(in->host, in->cx, [&] { return in->layer.inverse(*a); });
    }
};

using Affine = FlowCallbacks<AffineFlow>;

// constexpr: the tables are constant-initialised, so loading the plugin runs
// no C++ constructor (plugin.h: no constructors, no global mutable state).
constexpr fl_key affine_keys[] = {
    { "scale", FL_KEY_BOOL, "true", 0, 0, nullptr,
      "learn a per-dimension log-scale s (false: y = x + b)" },
    { "init_std", FL_KEY_REAL, "0", 0, 1, nullptr,
      "std of the normal initialisation of s and b; 0 starts at the identity" },
};

constexpr fl_flow_class affine_class = {
    { sizeof(fl_flow_class), "cpp-affine", "y = x * exp(s) + b, elementwise (a C++ plugin)",
      affine_keys, sizeof affine_keys / sizeof affine_keys[0] },
    FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE,
    Affine::create,
    Affine::destroy,
    Affine::forward,
    Affine::backward,
    Affine::inverse,
    nullptr,  // order: not autoregressive
};

fl_status init(const fl_host *host, fl_registrar *r) noexcept
{
    // Every member this plugin calls is ABI 1.0, so FL_HOST_HAS holds on
    // any 1.x host; a plugin using a later member tests it the same way.
    if (!FL_HOST_HAS(host, mlp_backward)) {
        host->error(nullptr, "host table too small (%u bytes)", host->struct_size);
        return FL_ERR_ABI;
    }
    return r->add(r, FL_KIND_FLOW, &affine_class.base);
}

}  // namespace

FL_PLUGIN("test-cpp", "1.0.0", init)
