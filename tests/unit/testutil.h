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
/* A storage that looks remote (no PVB_STORAGE_FEAT_LOCAL, as S3) while forwarding to inner,
 * which it takes over: it counts gets per object and can fail gets longer than a limit, so
 * tests see what a restore asks a remote store for. Thread-safe. */
typedef struct pvb_test_remote pvb_test_remote;
struct pvb_storage;
void pvb_test_remote_storage(struct pvb_storage *inner, pvb_test_remote **ctl,
                             struct pvb_storage **out);
void pvb_test_remote_reset(pvb_test_remote *r);
/* Gets of objects whose name starts with prefix, and the most gets of any one of them. */
size_t pvb_test_remote_gets(pvb_test_remote *r, const char *prefix);
size_t pvb_test_remote_max_gets(pvb_test_remote *r, const char *prefix);
/* Gets of that one object. */
size_t pvb_test_remote_gets_of(pvb_test_remote *r, const char *name);
/* From now on, a get of more than len bytes (0: no limit) fails as a dropped connection. */
void pvb_test_remote_fail_longer_than(pvb_test_remote *r, uint64_t len);
/* From now on, puts of names starting with prefix (NULL: none) are stored, then reported as
 * failed: an answer lost on the way back. */
void pvb_test_remote_lose_put_answers(pvb_test_remote *r, const char *prefix);

/* Run a Check suite; returns the process exit status. */
int pvb_test_run(Suite *s);

#endif
