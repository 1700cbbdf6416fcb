/* bad_noentry.c - a valid shared object that is not a flowlab plugin: it
 * exports a function, but no flowlab_plugin_entry. */
__attribute__((visibility("default"))) int not_a_flowlab_plugin(int x);

int not_a_flowlab_plugin(int x) { return x + 1; }
