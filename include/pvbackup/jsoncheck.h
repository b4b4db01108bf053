/* A checksum field for small JSON documents that are stored in plaintext (repository config,
 * key files), so that an accidental change of any byte is reported as damage ("this file is
 * damaged") rather than misread or mistaken for a wrong password. It is not a MAC: whoever
 * can write the file can recompute it; what is secret stays protected by encryption. */
#ifndef PVBACKUP_JSONCHECK_H
#define PVBACKUP_JSONCHECK_H

#include "pvbackup/error.h"

#include <jansson.h>

#define PVB_JSON_CHECK_KEY "check"

/* Set obj["check"] to the hex SHA-256 of obj's canonical form without "check" (compact, keys
 * sorted). Returns PVB_OK or PVB_E_NOMEM. */
int pvb_json_check_add(json_t *obj, pvb_error *err);
/* When obj has "check", verify it: PVB_E_CORRUPT on a mismatch, naming `what`. A document
 * without the field is accepted (documents written before it existed). */
int pvb_json_check_verify(json_t *obj, const char *what, pvb_error *err);

#endif
