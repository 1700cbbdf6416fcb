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
 * dataset.h   data sets
 * plugin.h    the exported plugin entry
 */
#ifndef FLOWLAB_FLOWLAB_H
#define FLOWLAB_FLOWLAB_H

#include "core.h"
#include "schema.h"
#include "rng.h"
#include "host.h"
#include "component.h"
#include "flow.h"
#include "dataset.h"
#include "plugin.h"

#endif /* FLOWLAB_FLOWLAB_H */
