/* fuzz_sweep.c - libFuzzer harness of the sweep expander (sweep/sweep.c):
 * the input is an experiment file with a [sweep] section, read by
 * fl_sweep_load (a NUL byte must be refused, as fl_config_load does); every cell
 * it expands to must have a value for each axis and a safe, unique run
 * directory name, and the base text must keep the line count. */
#include "fuzz_common.h"

#include "sweep/sweep.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = 0;
    const char *path = fuzz_write_input(data, size, ".ini");
    fl_sweep *s = NULL;
    fl_status st = fl_sweep_load(path, &s);
    /* a NUL byte would cut the text: what follows it would be lost */
    FUZZ_CHECK(st != FL_OK || !memchr(data, 0, size), "a file with a NUL byte was accepted");
    if (st != FL_OK) {
        FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a refused sweep set no message");
        free(text);
        return 0;
    }
    FUZZ_CHECK(s->n_cells <= FL_SWEEP_MAX_CELLS, "%zu cells", s->n_cells);
    FUZZ_CHECK(s->n_cells <= s->n_product, "%zu cells of %zu", s->n_cells, s->n_product);
    FUZZ_CHECK(s->base && count_lines(s->base) == count_lines(text),
               "the base text lost or gained lines");
    for (size_t a = 0; a < s->n_axes; a++)
        FUZZ_CHECK(fl_sweep_axis_find(s, s->axes[a].key) >= 0, "axis %s not found",
                   s->axes[a].key);
    size_t check = s->n_cells < 200 ? s->n_cells : 200;
    for (size_t c = 0; c < check; c++) {
        const char *name = s->cells[c].name;
        FUZZ_CHECK(name && *name && strcmp(name, ".") && strcmp(name, ".."),
                   "cell %zu has no safe name", c);
        for (const char *p = name; *p; p++)
            FUZZ_CHECK(*p != '/' && (unsigned char)*p >= 0x20, "cell name %s", name);
        for (size_t d = 0; d < c; d++)
            FUZZ_CHECK(strcmp(name, s->cells[d].name), "two cells named %s", name);
        for (size_t a = 0; a < s->n_axes; a++)
            FUZZ_CHECK(fl_sweep_value(s, c, a) != NULL, "cell %zu axis %zu", c, a);
    }
    fl_sweep_free(s);
    free(text);
    return 0;
}
