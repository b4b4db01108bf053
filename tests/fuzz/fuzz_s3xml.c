/* Fuzz target: the S3 XML layer (src/storage/s3/s3xml.c), which reads whatever an S3 endpoint,
 * or anything pretending to be one, answers.
 *
 * Every input goes through all six response parsers. Beyond the sanitizers, the target checks
 * the contracts of s3xml.h: the result codes each parser may return, an empty output after a
 * failure, non-empty keys and ids, a truncated page always carrying its continuation, bounded
 * strings in error documents. Then it closes the loop with the builders: every key a listing
 * or a DeleteObjects result returns must be accepted by pvb_s3xml_build_delete (a key we could
 * list but not delete would be an object prune can never remove), and every upload id as an
 * ETag by pvb_s3xml_build_complete, and both bodies must parse back, with libxml2 directly,
 * to the very same strings. */
#include "fuzz_common.h"

#include "s3/s3xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#define CODE(c) (1u << (c))

/* rc is one of the codes in mask (a set of CODE() bits). */
static bool rc_in(int rc, unsigned mask)
{
    return rc >= 0 && rc < PVB_E_COUNT_ && (mask & CODE(rc)) != 0;
}

/* The texts of <child> in each <parent> below the body's root, in order. Returns how many;
 * *texts is xmlMalloc'ed, each xmlFree'd by the caller. */
static size_t body_texts(const pvb_buf *body, const char *parent, const char *child,
                         xmlChar ***texts)
{
    xmlDoc *doc = xmlReadMemory((const char *)body->data, (int)body->len, NULL, NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    PVB_FUZZ_CHECK(doc != NULL, "built body is not well-formed: %.*s", (int)body->len,
                   (const char *)body->data);
    size_t n = 0;
    size_t cap = 16;
    xmlChar **out = malloc(cap * sizeof(*out));
    PVB_FUZZ_SETUP(out != NULL, "malloc");
    for (const xmlNode *p = xmlDocGetRootElement(doc)->children; p != NULL; p = p->next) {
        if (p->type != XML_ELEMENT_NODE || strcmp((const char *)p->name, parent) != 0)
            continue;
        for (const xmlNode *c = p->children; c != NULL; c = c->next) {
            if (c->type != XML_ELEMENT_NODE || strcmp((const char *)c->name, child) != 0)
                continue;
            if (n == cap) {
                cap *= 2;
                out = realloc(out, cap * sizeof(*out));
                PVB_FUZZ_SETUP(out != NULL, "realloc");
            }
            out[n++] = xmlNodeGetContent(c);
        }
    }
    xmlFreeDoc(doc);
    *texts = out;
    return n;
}

/* The keys must make a DeleteObjects body that parses back to themselves. */
static void check_keys_deletable(const char *const *keys, size_t n)
{
    pvb_error err;
    pvb_buf body = PVB_BUF_INIT;
    if (n > PVB_S3XML_DELETE_MAX)
        n = PVB_S3XML_DELETE_MAX;
    if (n == 0)
        return;
    int rc = pvb_s3xml_build_delete(keys, n, true, &body, &err);
    PVB_FUZZ_CHECK(rc == PVB_OK, "a parsed key cannot be deleted: %s", err.msg);
    xmlChar **texts = NULL;
    size_t got = body_texts(&body, "Object", "Key", &texts);
    PVB_FUZZ_CHECK(got == n, "%zu keys in the body, %zu sent", got, n);
    for (size_t idx = 0; idx < n; idx++) {
        PVB_FUZZ_CHECK(texts[idx] != NULL && strcmp((const char *)texts[idx], keys[idx]) == 0,
                       "key %zu changed in the round trip", idx);
        xmlFree(texts[idx]);
    }
    free(texts);
    pvb_buf_free(&body);
}

static void check_error_doc(const pvb_s3_error_doc *d)
{
    PVB_FUZZ_CHECK(memchr(d->code, '\0', sizeof(d->code)) != NULL, "code not terminated");
    PVB_FUZZ_CHECK(memchr(d->message, '\0', sizeof(d->message)) != NULL, "message unterminated");
    PVB_FUZZ_CHECK(memchr(d->request_id, '\0', sizeof(d->request_id)) != NULL, "id unterminated");
    PVB_FUZZ_CHECK(memchr(d->region, '\0', sizeof(d->region)) != NULL, "region unterminated");
}

static void fuzz_list(const char *xml, size_t len)
{
    pvb_error err;
    pvb_s3_list_page p;
    int rc = pvb_s3xml_parse_list(xml, len, &p, &err);
    PVB_FUZZ_CHECK(
        rc_in(rc, CODE(PVB_OK) | CODE(PVB_E_CORRUPT) | CODE(PVB_E_IO) | CODE(PVB_E_UNSUPPORTED)),
        "list: rc %d: %s", rc, err.msg);
    if (rc != PVB_OK) {
        PVB_FUZZ_CHECK(p.objects == NULL && p.n_objects == 0 && p.next_token == NULL,
                       "list: output left after failure");
        return;
    }
    PVB_FUZZ_CHECK(!p.truncated || p.next_token != NULL, "list: truncated without token");
    PVB_FUZZ_CHECK(p.next_token == NULL || p.next_token[0] != '\0', "list: empty token");
    PVB_FUZZ_CHECK((p.n_objects == 0) == (p.objects == NULL), "list: array and count disagree");
    const char **keys = calloc(p.n_objects + 1, sizeof(*keys));
    PVB_FUZZ_SETUP(keys != NULL, "calloc");
    for (size_t idx = 0; idx < p.n_objects; idx++) {
        PVB_FUZZ_CHECK(p.objects[idx].key != NULL && p.objects[idx].key[0] != '\0',
                       "list: empty key %zu", idx);
        keys[idx] = p.objects[idx].key;
    }
    check_keys_deletable(keys, p.n_objects);
    free(keys);
    pvb_s3_list_page_free(&p);
}

static void fuzz_error(const char *xml, size_t len)
{
    pvb_s3_error_doc d;
    int rc = pvb_s3xml_parse_error(xml, len, &d);
    PVB_FUZZ_CHECK(rc == PVB_OK || rc == PVB_E_CORRUPT, "error: rc %d", rc);
    check_error_doc(&d);
    if (rc != PVB_OK)
        PVB_FUZZ_CHECK(d.code[0] == '\0' && d.message[0] == '\0', "error: output after failure");
}

static void fuzz_initiate(const char *xml, size_t len)
{
    pvb_error err;
    char *id = NULL;
    int rc = pvb_s3xml_parse_initiate(xml, len, &id, &err);
    PVB_FUZZ_CHECK(rc_in(rc, CODE(PVB_OK) | CODE(PVB_E_CORRUPT) | CODE(PVB_E_IO)),
                   "initiate: rc %d: %s", rc, err.msg);
    PVB_FUZZ_CHECK((rc == PVB_OK) == (id != NULL), "initiate: id %p with rc %d", (void *)id, rc);
    PVB_FUZZ_CHECK(id == NULL || id[0] != '\0', "initiate: empty id");
    free(id);
}

static void fuzz_complete(const char *xml, size_t len)
{
    pvb_error err;
    bool failed = true;
    pvb_s3_error_doc d;
    int rc = pvb_s3xml_parse_complete(xml, len, &failed, &d, &err);
    PVB_FUZZ_CHECK(rc == PVB_OK || rc == PVB_E_CORRUPT, "complete: rc %d: %s", rc, err.msg);
    check_error_doc(&d);
    if (rc != PVB_OK || !failed)
        PVB_FUZZ_CHECK(d.code[0] == '\0' && d.message[0] == '\0', "complete: stray error doc");
    PVB_FUZZ_CHECK(rc == PVB_OK || !failed, "complete: failed set on a parse failure");
}

static void fuzz_delete(const char *xml, size_t len)
{
    pvb_error err;
    pvb_s3_delete_result r;
    int rc = pvb_s3xml_parse_delete(xml, len, &r, &err);
    PVB_FUZZ_CHECK(rc_in(rc, CODE(PVB_OK) | CODE(PVB_E_CORRUPT) | CODE(PVB_E_IO)),
                   "delete: rc %d: %s", rc, err.msg);
    if (rc != PVB_OK) {
        PVB_FUZZ_CHECK(r.errors == NULL && r.n_errors == 0 && r.n_deleted == 0,
                       "delete: output left after failure");
        return;
    }
    const char **keys = calloc(r.n_errors + 1, sizeof(*keys));
    PVB_FUZZ_SETUP(keys != NULL, "calloc");
    for (size_t idx = 0; idx < r.n_errors; idx++) {
        const pvb_s3_delete_error *e = &r.errors[idx];
        PVB_FUZZ_CHECK(e->key != NULL && e->key[0] != '\0', "delete: empty key %zu", idx);
        PVB_FUZZ_CHECK(memchr(e->code, '\0', sizeof(e->code)) != NULL, "code unterminated");
        PVB_FUZZ_CHECK(memchr(e->message, '\0', sizeof(e->message)) != NULL, "message");
        keys[idx] = e->key;
    }
    /* a key that failed to delete is retried */
    check_keys_deletable(keys, r.n_errors);
    free(keys);
    pvb_s3_delete_result_free(&r);
}

static void fuzz_uploads(const char *xml, size_t len)
{
    pvb_error err;
    pvb_s3_uploads_page p;
    int rc = pvb_s3xml_parse_uploads(xml, len, &p, &err);
    PVB_FUZZ_CHECK(
        rc_in(rc, CODE(PVB_OK) | CODE(PVB_E_CORRUPT) | CODE(PVB_E_IO) | CODE(PVB_E_UNSUPPORTED)),
        "uploads: rc %d: %s", rc, err.msg);
    if (rc != PVB_OK) {
        PVB_FUZZ_CHECK(p.uploads == NULL && p.n_uploads == 0 && p.next_key_marker == NULL &&
                           p.next_upload_id_marker == NULL,
                       "uploads: output left after failure");
        return;
    }
    PVB_FUZZ_CHECK(!p.truncated || p.next_key_marker != NULL, "uploads: truncated, no marker");
    size_t n_parts = p.n_uploads < PVB_S3XML_PARTS_MAX ? p.n_uploads : PVB_S3XML_PARTS_MAX;
    pvb_s3_part *parts = calloc(n_parts + 1, sizeof(*parts));
    PVB_FUZZ_SETUP(parts != NULL, "calloc");
    for (size_t idx = 0; idx < p.n_uploads; idx++) {
        const pvb_s3_upload *u = &p.uploads[idx];
        PVB_FUZZ_CHECK(u->key != NULL && u->key[0] != '\0', "uploads: empty key %zu", idx);
        PVB_FUZZ_CHECK(u->upload_id != NULL && u->upload_id[0] != '\0', "uploads: empty id");
        if (idx < n_parts) {
            parts[idx].number = (int)idx + 1;
            parts[idx].etag = u->upload_id;
        }
    }
    if (n_parts > 0) {
        /* upload ids as ETags: any text the parser returns must survive the builder */
        pvb_buf body = PVB_BUF_INIT;
        rc = pvb_s3xml_build_complete(parts, n_parts, &body, &err);
        PVB_FUZZ_CHECK(rc == PVB_OK, "uploads: id refused as an ETag: %s", err.msg);
        xmlChar **texts = NULL;
        size_t got = body_texts(&body, "Part", "ETag", &texts);
        PVB_FUZZ_CHECK(got == n_parts, "%zu ETags in the body, %zu sent", got, n_parts);
        for (size_t idx = 0; idx < got; idx++) {
            PVB_FUZZ_CHECK(strcmp((const char *)texts[idx], parts[idx].etag) == 0,
                           "ETag %zu changed in the round trip", idx);
            xmlFree(texts[idx]);
        }
        free(texts);
        pvb_buf_free(&body);
    }
    free(parts);
    pvb_s3_uploads_page_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *xml = (const char *)data;
    fuzz_list(xml, size);
    fuzz_error(xml, size);
    fuzz_initiate(xml, size);
    fuzz_complete(xml, size);
    fuzz_delete(xml, size);
    fuzz_uploads(xml, size);
    return 0;
}
