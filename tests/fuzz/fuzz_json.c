/* fuzz_json.c - libFuzzer harness of the report's JSON reader
 * (output/json.c fl_json_numbers): any text either parses into finite
 * named numbers or is refused with a message and nothing handed out. */
#include "fuzz_common.h"

#include <math.h>

#include "output/json.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = 0;
    fl_json_num *v = NULL;
    size_t n = 0;
    fl_status st = fl_json_numbers(text, &v, &n);
    if (st == FL_OK) {
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(v[i].name != NULL, "field %zu has no name", i);
            FUZZ_CHECK(isfinite(v[i].v), "field %s is not finite", v[i].name);
        }
        fl_json_numbers_free(v, n);
    } else {
        FUZZ_CHECK(v == NULL && n == 0, "a refused text handed out %zu fields", n);
        FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a refused text set no message");
    }
    free(text);
    return 0;
}
