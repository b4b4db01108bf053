/* The XML of the S3 REST API: parsers for the response bodies the S3 backend reads, and
 * builders for the request bodies it sends.
 *
 * Response bodies are untrusted (a hostile or broken endpoint, a proxy's HTML error page):
 * every parser refuses, with PVB_E_CORRUPT and a message naming the problem,
 *  - an empty body, a body over PVB_S3XML_MAX_INPUT bytes, or one holding a NUL byte (S3
 *    sends UTF-8, where NUL is never legal, and libxml2 would end a string there);
 *  - anything that is not well-formed XML, and any document with a DTD (<!DOCTYPE>): S3
 *    never sends one, and refusing it before its declarations are read shuts out external
 *    entities and entity-expansion bombs;
 *  - a root element other than the one the operation answers with. An S3 <Error> document
 *    in its place (S3 may answer 200 and still fail) gives PVB_E_IO instead, with the S3
 *    code and message in the error's message.
 * Elements are matched by local name, with or without a namespace (AWS uses
 * http://s3.amazonaws.com/doc/2006-03-01/, s3rver a misspelled one). Unknown elements are
 * skipped, as S3 adds fields over time; a field the result depends on that appears twice is
 * refused, since which copy counts would be a guess. Text is returned decoded (entities and
 * character references resolved) and is always valid UTF-8. Numbers are plain decimal digits,
 * booleans true/false/1/0, either with surrounding XML whitespace allowed; keys, tokens and
 * markers are returned exactly as sent.
 *
 * On failure a parser leaves its output empty (NULL pointers, zero counts, "" strings), so the
 * matching _free may always be called. All functions are thread-safe: libxml2 is initialised
 * once on first use, and no function changes libxml2's global settings.
 */
#ifndef PVB_STORAGE_S3XML_H
#define PVB_STORAGE_S3XML_H

#include "pvbackup/common.h"

#include "pvbackup/buf.h"
#include "pvbackup/error.h"

#include <time.h>

/* Largest response body parsed. A ListObjectsV2 page of 1000 keys of 1 KiB each is ~1.5 MiB. */
#define PVB_S3XML_MAX_INPUT ((size_t)16 << 20)
/* Most keys in one DeleteObjects request (an S3 limit). */
#define PVB_S3XML_DELETE_MAX 1000
/* Most parts of one multipart upload, and the highest part number (S3 limits). */
#define PVB_S3XML_PARTS_MAX 10000

/* One object from a ListObjectsV2 page. */
typedef struct pvb_s3_object {
    char *key; /* non-empty */
    uint64_t size;
} pvb_s3_object;

typedef struct pvb_s3_list_page {
    pvb_s3_object *objects;
    size_t n_objects;
    bool truncated;   /* IsTruncated */
    char *next_token; /* NextContinuationToken; NULL when absent or empty */
} pvb_s3_list_page;

/* Parse a ListObjectsV2 response (<ListBucketResult>). Each <Contents> needs a non-empty Key
 * and a Size; IsTruncated is required, and a truncated page needs a NextContinuationToken
 * (without one the caller could only restart the listing). <CommonPrefixes> are ignored.
 * A page with <EncodingType> is refused with PVB_E_UNSUPPORTED: its keys would be URL-encoded
 * and the parser does not decode them, so never send encoding-type.
 * out is overwritten (not freed first); free it with pvb_s3_list_page_free.
 * @return PVB_OK; PVB_E_CORRUPT (see above), PVB_E_IO (an <Error> document),
 *         PVB_E_UNSUPPORTED, PVB_E_NOMEM, PVB_E_USAGE (NULL out). */
int pvb_s3xml_parse_list(const char *xml, size_t len, pvb_s3_list_page *out, pvb_error *err);
/* Free what a page owns and empty it; the struct itself is the caller's. Accepts NULL. */
void pvb_s3_list_page_free(pvb_s3_list_page *p);

/* An S3 error document. Fields longer than their array are cut at a UTF-8 character
 * boundary. */
typedef struct pvb_s3_error_doc {
    char code[64];
    char message[512];
    char request_id[128];
    char region[64];
} pvb_s3_error_doc;

/* Parse <Error><Code>..</Code><Message>..</Message><RequestId>..</RequestId><Region>..
 * </Region>...</Error>. Missing fields are "", and of a repeated field the first counts (the
 * document only describes a failure already known). out is always filled, with "" fields on
 * failure, so it can be printed either way.
 * @return PVB_OK; PVB_E_CORRUPT when the body is not an S3 error document (malformed, hostile,
 *         or another root element); PVB_E_NOMEM; PVB_E_USAGE (NULL out). */
int pvb_s3xml_parse_error(const char *xml, size_t len, pvb_s3_error_doc *out);

/* Parse an <InitiateMultipartUploadResult>: *upload_id receives its UploadId (non-empty,
 * malloc'ed, the caller frees it), or NULL on failure.
 * @return PVB_OK; PVB_E_CORRUPT, PVB_E_IO, PVB_E_NOMEM, PVB_E_USAGE (NULL upload_id). */
int pvb_s3xml_parse_initiate(const char *xml, size_t len, char **upload_id, pvb_error *err);

/* Parse a CompleteMultipartUpload response, which S3 answers with 200 even when the upload
 * failed, then with an <Error> body: *failed is false for a <CompleteMultipartUploadResult>,
 * true for an <Error>, and then doc (which may be NULL) is filled as pvb_s3xml_parse_error
 * does. doc is all "" otherwise.
 * @return PVB_OK for either document; PVB_E_CORRUPT for anything else, PVB_E_NOMEM,
 *         PVB_E_USAGE (NULL failed). */
int pvb_s3xml_parse_complete(const char *xml, size_t len, bool *failed, pvb_s3_error_doc *doc,
                             pvb_error *err);

/* One key a DeleteObjects request could not delete. */
typedef struct pvb_s3_delete_error {
    char *key; /* non-empty */
    char code[64];
    char message[256];
} pvb_s3_delete_error;

typedef struct pvb_s3_delete_result {
    size_t n_deleted; /* <Deleted> entries: none in quiet mode */
    pvb_s3_delete_error *errors;
    size_t n_errors;
} pvb_s3_delete_result;

/* Parse a DeleteObjects response (<DeleteResult>): count the <Deleted> entries and collect
 * the <Error> entries, each of which needs a non-empty Key (Code and Message may be missing:
 * ""). out is overwritten; free it with pvb_s3_delete_result_free.
 * @return PVB_OK; PVB_E_CORRUPT, PVB_E_IO, PVB_E_NOMEM, PVB_E_USAGE (NULL out). */
int pvb_s3xml_parse_delete(const char *xml, size_t len, pvb_s3_delete_result *out, pvb_error *err);
/* Free what a result owns and empty it. Accepts NULL. */
void pvb_s3_delete_result_free(pvb_s3_delete_result *r);

/* One multipart upload in progress. */
typedef struct pvb_s3_upload {
    char *key;       /* non-empty */
    char *upload_id; /* non-empty */
    time_t initiated;
} pvb_s3_upload;

typedef struct pvb_s3_uploads_page {
    pvb_s3_upload *uploads;
    size_t n_uploads;
    bool truncated;
    char *next_key_marker;       /* NULL when absent or empty */
    char *next_upload_id_marker; /* NULL when absent or empty */
} pvb_s3_uploads_page;

/* Parse a ListMultipartUploads response (<ListMultipartUploadsResult>). Each <Upload> needs a
 * Key, an UploadId and an Initiated time (ISO 8601 as S3 writes it, "2010-11-10T20:48:33.000Z";
 * a numeric UTC offset is also accepted); IsTruncated is required, and a truncated page needs
 * a NextKeyMarker. <EncodingType> is refused as in pvb_s3xml_parse_list. out is overwritten;
 * free it with pvb_s3_uploads_page_free.
 * @return PVB_OK; PVB_E_CORRUPT, PVB_E_IO, PVB_E_UNSUPPORTED, PVB_E_NOMEM, PVB_E_USAGE. */
int pvb_s3xml_parse_uploads(const char *xml, size_t len, pvb_s3_uploads_page *out, pvb_error *err);
/* Free what a page owns and empty it. Accepts NULL. */
void pvb_s3_uploads_page_free(pvb_s3_uploads_page *p);

/* One uploaded part, for CompleteMultipartUpload. */
typedef struct pvb_s3_part {
    int number;       /* 1..PVB_S3XML_PARTS_MAX, strictly ascending across the list */
    const char *etag; /* as UploadPart returned it, quotes included */
} pvb_s3_part;

/* Build the <CompleteMultipartUpload> body for n parts (1..PVB_S3XML_PARTS_MAX, ascending
 * part numbers, as S3 requires). The body replaces out's contents (out is emptied on failure);
 * text is XML-escaped, and what XML 1.0 cannot carry is refused.
 * @return PVB_OK; PVB_E_USAGE (no parts, too many, a bad number or order, a NULL, empty or
 *         unrepresentable ETag: invalid UTF-8 or a control character other than tab, LF, CR);
 *         PVB_E_NOMEM. */
int pvb_s3xml_build_complete(const pvb_s3_part *parts, size_t n, pvb_buf *out, pvb_error *err);

/* Build the DeleteObjects body <Delete><Quiet>true</Quiet><Object><Key>k</Key></Object>...
 * </Delete> for n keys (1..PVB_S3XML_DELETE_MAX); Quiet is left out when quiet is false. The
 * body replaces out's contents (emptied on failure). S3 requires a Content-MD5 or checksum
 * header over it: that is the caller's.
 * @return PVB_OK; PVB_E_USAGE (no keys, more than PVB_S3XML_DELETE_MAX, a NULL or empty key,
 *         or one XML 1.0 cannot carry as above); PVB_E_NOMEM. */
int pvb_s3xml_build_delete(const char *const *keys, size_t n, bool quiet, pvb_buf *out,
                           pvb_error *err);

#endif
