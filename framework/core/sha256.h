/* sha256.h - SHA-256 (FIPS 180-4), for content hashes: the plugins a run
 * loaded (output/provenance.c) and data set files (model/datapath.c). */
#ifndef FL_SHA256_H
#define FL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include <flowlab/core.h>

/* A hash in progress. Plain data: copy or discard freely. */
typedef struct fl_sha256 {
    uint32_t h[8];        /* the chaining state */
    uint64_t bytes;       /* message length so far */
    unsigned char buf[64];/* the partial block (bytes % 64 of them) */
} fl_sha256;

/* Starts a hash. Any time, any thread (one fl_sha256 per thread). */
void fl_sha256_init(fl_sha256 *s);
/* Adds n bytes of data (n = 0 is fine). */
void fl_sha256_update(fl_sha256 *s, const void *data, size_t n);
/* Ends the hash: 64 lowercase hex digits and a NUL into hex[65]. */
void fl_sha256_hex(fl_sha256 *s, char hex[65]);
/* The hash of file `path`'s bytes into hex[65]. FL_ERR_IO (fl_err names
 * the file and the reason) when it cannot be read. */
fl_status fl_sha256_file(const char *path, char hex[65]);

#endif
