/*
 * flowlab/plugin.h - what a plugin shared object exports.
 *
 * A plugin exports exactly one symbol, `flowlab_plugin_entry`, and nothing
 * else (build with -fvisibility=hidden). The host dlopens it with
 * RTLD_NOW | RTLD_LOCAL, checks the ABI major and sizeof(fl_real), and calls
 * init, which registers the plugin's components:
 *
 *   #include <flowlab/flowlab.h>
 *   extern const fl_flow_class my_flow;           // see flow.h
 *   static fl_status init(const fl_host *host, fl_registrar *r)
 *   {
 *       (void)host;
 *       return r->add(r, FL_KIND_FLOW, &my_flow.base);
 *   }
 *   FL_PLUGIN("my-plugin", "1.0.0", init)
 *
 * Build: cc -O2 -shared -fPIC -fvisibility=hidden -I include my.c -o my.so
 *
 * The host refuses a plugin (one line naming the file and the reason) when
 * the entry is missing, the ABI major or sizeof(fl_real) differ, init fails,
 * or a component is malformed or has a name already taken. A refused plugin
 * registers nothing. A component of a kind the host does not know is
 * skipped with a warning.
 *
 * Rules for plugins: no exit(), no global mutable state, no constructors;
 * report errors through return codes and host->error. The host never
 * dlcloses a plugin while instances of its components live.
 */
#ifndef FLOWLAB_PLUGIN_H
#define FLOWLAB_PLUGIN_H

#include "component.h"
#include "host.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fl_registrar fl_registrar;

/* Handed to init; valid only during init. Not thread-safe: add is [init]
 * (tags in host.h), called on init's own thread. */
struct fl_registrar {
    /* [init] Registers component class `cls` (the fl_component at the start of a
     * kind's class struct, e.g. &my_flow.base) of kind `kind`. The class must
     * have static storage. Returns FL_ERR_INVALID for a malformed class. */
    fl_status (*add)(fl_registrar *r, fl_kind kind, const fl_component *cls);
    void *host_data;  /* private to the host */
};

typedef struct fl_plugin_entry {
    uint32_t abi_major;   /* FL_ABI_MAJOR the plugin was built with */
    uint32_t abi_minor;   /* FL_ABI_MINOR */
    uint32_t real_size;   /* sizeof(fl_real) */
    const char *name;     /* plugin name, e.g. "flows-coupling" */
    const char *version;  /* plugin version, e.g. "1.0.0" */
    /* [once] Registers components. Called once, from one thread, right
     * after load; of the host's services only the [init] ones work here. */
    fl_status (*init)(const fl_host *host, fl_registrar *r);
} fl_plugin_entry;

#define FL_PLUGIN_SYMBOL "flowlab_plugin_entry"

/* Defines the entry with this build's ABI version and fl_real size. In C++
 * the entry gets C language linkage (extern "C"), so its symbol is the plain
 * `flowlab_plugin_entry` and not a mangled name, and `extern` gives the
 * const object the external linkage C++ would otherwise deny it; use the
 * macro at namespace scope. */
#ifdef __cplusplus
#define FL_PLUGIN(name_, version_, init_)                                              \
    extern "C" {                                                                       \
    FL_EXPORT extern const fl_plugin_entry flowlab_plugin_entry = {                    \
        FL_ABI_MAJOR, FL_ABI_MINOR, static_cast<uint32_t>(sizeof(fl_real)), name_,    \
        version_, init_ };                                                             \
    }
#else
#define FL_PLUGIN(name_, version_, init_)                                              \
    FL_EXPORT extern const fl_plugin_entry flowlab_plugin_entry;                       \
    FL_EXPORT const fl_plugin_entry flowlab_plugin_entry = {                           \
        FL_ABI_MAJOR, FL_ABI_MINOR, (uint32_t)sizeof(fl_real), name_, version_, init_ };
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_PLUGIN_H */
