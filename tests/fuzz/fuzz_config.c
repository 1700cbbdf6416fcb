/* fuzz_config.c - libFuzzer harness of the experiment-file parser
 * (core/config.c): the input is an INI file's text, optionally followed by a
 * line "%%" and --set assignments, one a line; every section is validated
 * against a fixed key table with one key of each type, and what validation
 * resolves must read back to the same values (fl_values_write, then
 * fl_config_parse and fl_values_resolve again). */
#include "fuzz_common.h"

#include "core/config.h"

static const fl_key keys[] = {
    { "type", FL_KEY_STRING, "", 0, 0, NULL, "string" },
    { "n", FL_KEY_INT, "3", -5, 1000000, NULL, "int" },
    { "big", FL_KEY_INT, "0", 1, 0, NULL, "int, no range" },
    { "lr", FL_KEY_REAL, "0.001", 0, 10, NULL, "real" },
    { "x", FL_KEY_REAL, "0", 1, 0, NULL, "real, no range" },
    { "on", FL_KEY_BOOL, "true", 0, 0, NULL, "bool" },
    { "act", FL_KEY_ENUM, "relu", 0, 0, "relu|tanh|elu", "enum" },
    { "hidden", FL_KEY_INT_LIST, "4,4", 1, 65536, NULL, "list" },
    { "name", FL_KEY_STRING, NULL, 0, 0, NULL, "required string" },
};
static const fl_key *const tabs[] = { keys };
static const uint32_t ntabs[] = { sizeof keys / sizeof keys[0] };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* Validates every section of c; each that resolves is written out, read
 * back and resolved again, and must give the same text. */
static void check_sections(fl_config *c)
{
    for (size_t i = 0; i < c->n; i++) {
        fl_values v = { 0 };
        if (fl_values_resolve(c, c->s[i].name, tabs, ntabs, 1, &v) != FL_OK) continue;
        fl_buf b = { 0 };
        fl_values_write(&v, &b);
        if (!b.failed && b.data) {
            fl_config *c2 = NULL;
            fl_status st = fl_config_parse("resolved.ini", b.data, &c2);
            FUZZ_CHECK(st == FL_OK, "resolved text does not parse: %s\n%s", fl_err_msg(), b.data);
            fl_values v2 = { 0 };
            st = fl_values_resolve(c2, v.section, tabs, ntabs, 1, &v2);
            FUZZ_CHECK(st == FL_OK, "resolved text does not validate: %s\n%s", fl_err_msg(),
                       b.data);
            fl_buf b2 = { 0 };
            fl_values_write(&v2, &b2);
            FUZZ_CHECK(!b2.failed && b2.data && !strcmp(b.data, b2.data),
                       "round trip changed the values:\n%s---\n%s", b.data,
                       b2.data ? b2.data : "(null)");
            fl_buf_free(&b2);
            fl_values_free(&v2);
            fl_config_free(c2);
        }
        fl_buf_free(&b);
        fl_values_free(&v);
    }
    /* a section that is absent: all defaults, and "name" is required */
    fl_values v = { 0 };
    if (!fl_config_section(c, "absent.section") &&
        fl_values_resolve(c, "absent.section", tabs, ntabs, 1, &v) == FL_OK)
        FUZZ_CHECK(0, "an absent section with a required key validated");
    fl_values_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* split at the first line "%%": the file, then --set lines */
    size_t file_len = size;
    const uint8_t *sets = NULL;
    size_t sets_len = 0;
    for (size_t i = 0; i + 3 <= size; i++) {
        if ((i == 0 || data[i - 1] == '\n') && data[i] == '%' && data[i + 1] == '%' &&
            (i + 2 == size || data[i + 2] == '\n')) {
            file_len = i;
            sets = data + i + 2;
            sets_len = size - i - 2;
            break;
        }
    }
    const char *path = fuzz_write_input(data, file_len, ".ini");
    fl_config *c = NULL;
    if (fl_config_load(path, &c) != FL_OK) {
        FUZZ_CHECK(c == NULL, "a failed load handed out a config");
        FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a failed load set no message");
        return 0;
    }
    if (sets) {
        char *s = malloc(sets_len + 1);
        if (!s) abort();
        memcpy(s, sets, sets_len);
        s[sets_len] = 0;
        char *save = NULL;
        for (char *line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            if (fl_config_set(c, line) != FL_OK)
                FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a failed --set set no message");
        free(s);
    }
    check_sections(c);
    fl_config_free(c);
    return 0;
}
