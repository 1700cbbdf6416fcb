/*
 * flowlab/flowlab.h - everything a plugin needs, in one include.
 *
 *   #include <flowlab/flowlab.h>
 *
 * core.h      fl_real, ABI version, status codes, component kinds
 * schema.h    INI key declarations
 * rng.h       counter-based random streams
 * host.h      the host services table handed to plugins
 * component.h the common head of every component class
 * flow.h      flow layers
 * expr.h      the differentiable expression service for flow layers
 * dataset.h   data sets
 * posterior.h amortised posteriors q0(z|x)
 * estimator.h bounds and their gradient weights (ELBO, IWAE, ...)
 * likelihood.h observation models p(x|param)
 * prior.h     priors p(z)
 * target.h    unnormalised targets for variational inference
 * vmath.h     vectorisable exp/log/tanh/sigmoid/softplus (include it yourself)
 * plugin.h    the exported plugin entry
 *
 * C++: every header carries its own extern "C" guard and compiles as C++11
 * or later with -Wall -Wextra -Wpedantic (tests/abi_cxx.cpp checks it), so
 * this file includes them as they are.
 */
#ifndef FLOWLAB_FLOWLAB_H
#define FLOWLAB_FLOWLAB_H

#include "core.h"
#include "schema.h"
#include "rng.h"
#include "host.h"
#include "component.h"
#include "flow.h"
#include "expr.h"
#include "dataset.h"
#include "posterior.h"
#include "estimator.h"
#include "likelihood.h"
#include "prior.h"
#include "target.h"
#include "plugin.h"

#endif /* FLOWLAB_FLOWLAB_H */
