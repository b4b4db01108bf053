/* Fuzz target: snapshot objects (snapshots/<id> after opening and decompression), decoded by
 * pvb_snapshot_from_json — also the decoder of snapshot JSON kept in the catalog.
 *
 * Beyond memory safety it checks a round trip: a snapshot the decoder accepted, encoded
 * again with pvb_snapshot_to_json, must decode again to the same encoding. */
#include "fuzz_common.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PVB_UNUSED(argc);
    PVB_UNUSED(argv);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pvb_error err = {0};
    pvb_snapshot s, again;
    char *text = NULL, *text2 = NULL;
    int rc = pvb_snapshot_from_json((const char *)data, size, &s, &err);
    if (rc != PVB_OK) {
        PVB_FUZZ_CHECK(s.volume == NULL && s.tree == NULL && s.tags == NULL,
                       "failed decode left allocations");
        return 0;
    }
    PVB_FUZZ_CHECK(s.volume != NULL && s.volume[0] != '\0', "no volume");
    PVB_FUZZ_CHECK(s.kind == PVB_KIND_FULL || s.kind == PVB_KIND_INCREMENTAL, "kind %d",
                   (int)s.kind);
    PVB_FUZZ_CHECK(s.salt_len == 0 || s.salt_len == 16, "salt length %zu", s.salt_len);
    PVB_FUZZ_CHECK(memchr(s.parent, '\0', sizeof(s.parent)) != NULL, "parent not terminated");
    PVB_FUZZ_CHECK(memchr(s.id, '\0', sizeof(s.id)) != NULL, "id not terminated");
    PVB_FUZZ_CHECK(s.parent[0] == '\0' || strlen(s.parent) == 64, "parent '%s'", s.parent);
    for (size_t pos = 0; pos < s.n_tags; pos++)
        PVB_FUZZ_CHECK(s.tags[pos].key != NULL && s.tags[pos].value != NULL, "tag %zu", pos);

    text = pvb_snapshot_to_json(&s);
    PVB_FUZZ_CHECK(text != NULL, "cannot encode a decoded snapshot");
    rc = pvb_snapshot_from_json(text, strlen(text), &again, &err);
    PVB_FUZZ_CHECK(rc == PVB_OK, "re-encoded snapshot refused: %s\n%s", err.msg, text);
    text2 = pvb_snapshot_to_json(&again);
    PVB_FUZZ_CHECK(text2 != NULL && strcmp(text, text2) == 0, "round trip differs:\n%s\n%s", text,
                   text2 ? text2 : "(null)");
    free(text);
    free(text2);
    pvb_snapshot_clear(&again);
    pvb_snapshot_clear(&s);
    return 0;
}
