/* Helpers shared by the Check unit tests. */
#ifndef PVB_TESTUTIL_H
#define PVB_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/* Make a fresh temporary directory (removed by pvb_test_tmpdir_free). Returns a malloc'ed
 * absolute path. */
char *pvb_test_tmpdir(void);
void pvb_test_tmpdir_free(char *path);
/* Write a file with the given bytes, creating parent directories. */
void pvb_test_write_file(const char *path, const void *data, size_t len);
/* Deterministic pseudo-random bytes (xorshift64*): incompressible and reproducible. */
void pvb_test_fill_random(uint8_t *buf, size_t len, uint64_t seed);
/* Run a Check suite; returns the process exit status. */
int pvb_test_run(Suite *s);

#endif
