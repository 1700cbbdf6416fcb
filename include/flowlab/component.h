/*
 * flowlab/component.h - the header every component class starts with.
 *
 * A component class (flow, dataset, ...) is a plugin-owned static struct
 * whose first member is an fl_component. The host reads `struct_size` and
 * copies at most min(struct_size, sizeof(its own struct)) bytes, so a class
 * struct may grow at the end without breaking older plugins or hosts.
 *
 * Lifetime: the class struct and everything it points to must stay valid
 * while the plugin is loaded (static storage). Thread-safety: read-only.
 */
#ifndef FLOWLAB_COMPONENT_H
#define FLOWLAB_COMPONENT_H

#include "core.h"
#include "schema.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fl_component {
    uint32_t struct_size;  /* sizeof the whole kind-specific class struct */
    const char *name;      /* unique per kind, [a-z0-9_-]{1,63}, e.g. "affine-coupling" */
    const char *summary;   /* one line for `flowlab plugins` */
    const fl_key *keys;    /* INI keys of this component's section */
    uint32_t n_keys;
} fl_component;

/* Whether class `cls` (a pointer to a kind's class struct, e.g.
 * const fl_flow_class *) was built with `member`, from base.struct_size:
 *
 *   if (FL_CLASS_HAS(cls, fl_flow_class, order) && cls->order) ...
 *
 * The host needs no such test for the classes it registered (it copies
 * them into structs of its own size, zero-filling what a plugin lacks);
 * it is for code that reads a class struct directly. */
#define FL_CLASS_HAS(cls, type, member) (FL_MEMBER_END(type, member) <= (cls)->base.struct_size)

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_COMPONENT_H */
