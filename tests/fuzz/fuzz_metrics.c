/* fuzz_metrics.c - libFuzzer harness of the metrics.csv reader
 * (output/metrics.c): fl_metrics_parse over the bytes as they are (not
 * NUL-terminated), its row offsets checked against the text, then
 * fl_metrics_keep and fl_metrics_lookup, what resume uses. */
#include "fuzz_common.h"

#include <math.h>

#include "output/metrics.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so a read past `size` is caught by ASan */
    char *text = malloc(size ? size : 1);
    if (!text) abort();
    if (size) memcpy(text, data, size);
    fl_metrics_table t;
    memset(&t, 0xab, sizeof t);
    fl_status st = fl_metrics_parse(text, size, "fuzz/metrics.csv", &t);
    if (st == FL_OK) {
        FUZZ_CHECK(t.n_cols >= 1 && fl_metrics_find(&t, "step") >= 0, "no step column");
        for (size_t r = 0; r < t.n_rows; r++) {
            FUZZ_CHECK(t.row_start[r] <= size && t.row_len[r] <= size - t.row_start[r],
                       "row %zu lies outside the text", r);
            long sc = fl_metrics_find(&t, "step");
            FUZZ_CHECK(isfinite(t.col[sc][r]), "row %zu has no finite step", r);
        }
        for (size_t c = 0; c < t.n_cols; c++)
            FUZZ_CHECK(fl_metrics_column(&t, t.names[c]) != NULL, "column %s", t.names[c]);
        fl_metrics_table_free(&t);
    } else {
        FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a refused file set no message");
    }
    uint64_t step0 = size ? data[0] : 0;
    fl_buf out = { 0 };
    double seconds = 0;
    fl_metrics_keep(&out, text, size, step0, &seconds);
    FUZZ_CHECK(out.len <= size + 1 + 8, "kept %zu bytes of %zu", out.len, size);
    fl_buf_free(&out);
    (void)fl_metrics_lookup(text, size, step0, "test_nll");
    free(text);
    return 0;
}
