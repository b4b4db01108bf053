#include "pvbackup/common.h"

#include "pvbackup/buf.h"
#include "pvbackup/jsoncheck.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* The canonical form: a copy without "check", dumped compact with sorted keys. */
static int canonical_hash(json_t *obj, char hex[65], pvb_error *err)
{
    json_t *copy = json_copy(obj);
    char *text = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int rc = PVB_OK;
    if (copy == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    json_object_del(copy, PVB_JSON_CHECK_KEY);
    text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL || EVP_Digest(text, strlen(text), md, &md_len, EVP_sha256(), NULL) != 1) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "cannot checksum a JSON document");
        goto out;
    }
    pvb_hex_encode(md, md_len, hex);
out:
    free(text);
    json_decref(copy);
    return rc;
}

int pvb_json_check_add(json_t *obj, pvb_error *err)
{
    char hex[65];
    int rc = canonical_hash(obj, hex, err);
    if (rc == PVB_OK && json_object_set_new(obj, PVB_JSON_CHECK_KEY, json_string(hex)) != 0)
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    return rc;
}

int pvb_json_check_verify(json_t *obj, const char *what, pvb_error *err)
{
    json_t *check = json_object_get(obj, PVB_JSON_CHECK_KEY);
    char hex[65];
    if (check == NULL)
        return PVB_OK;
    int rc = canonical_hash(obj, hex, err);
    if (rc != PVB_OK)
        return rc;
    if (!json_is_string(check) || strcmp(json_string_value(check), hex) != 0) {
        PVB_ERR(err, PVB_E_CORRUPT, "%s is damaged: its checksum does not match its content", what);
        pvb_error_hint(err, "restore this file from a copy of the repository");
        return PVB_E_CORRUPT;
    }
    return PVB_OK;
}
