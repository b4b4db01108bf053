#include "pvbackup/common.h"

#include "s3/sigv4.h"

#include "pvbackup/buf.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* AWS Signature Version 4, as S3 applies it.
 *
 * S3 departs from the generic SigV4 rules in one place that matters: the path is encoded
 * exactly once and never normalised ("a//b/../c" is a valid key), so the canonical URI is the
 * very string sent in the URL, and both come from the same pvb_s3_uri_encode call. The query
 * string is returned for the same reason: a URL built separately from the canonical query
 * (another encoder, another order) is the classic cause of SignatureDoesNotMatch.
 *
 * Every input reaching a header or the Authorization value is checked for control characters
 * here rather than trusted to the HTTP client: a CR or LF in a value taken from a
 * configuration file would otherwise let it forge headers. */

#define ALGORITHM "AWS4-HMAC-SHA256"
#define UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SHA256_LEN ((size_t)32)
#define SHA256_HEX_LEN (2 * SHA256_LEN)
/* S3 secrets are 40 characters; other implementations use longer ones, none this long. The
 * bound lets "AWS4" + secret live in a stack buffer that is wiped on the way out. */
#define SECRET_MAX 1024
#define AMZ_DATE_LEN 16
#define DATE_LEN 8

/* Headers the signer adds itself, plus authorization, which cannot sign itself. */
static const char *const reserved_headers[] = {"authorization", "host", "x-amz-content-sha256",
                                               "x-amz-date", "x-amz-security-token"};

typedef struct sigv4_field {
    char *name;  /* encoded query name, or lowercase header name */
    char *value; /* encoded query value, or trimmed header value */
} sigv4_field;

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

char *pvb_s3_uri_encode(const char *s, size_t len, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";

    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    char *out = malloc(3 * len + 1);
    if (out == NULL)
        return NULL;
    size_t pos = 0;
    for (size_t idx = 0; idx < len; idx++) {
        unsigned char c = (unsigned char)s[idx];
        if (is_unreserved(c) || (c == '/' && keep_slash)) {
            out[pos++] = (char)c;
        } else {
            out[pos++] = '%';
            out[pos++] = hex[c >> 4];
            out[pos++] = hex[c & 0x0f];
        }
    }
    out[pos] = '\0';
    return out;
}

void pvb_sha256_hex(const void *data, size_t len, char out[65])
{
    static const uint8_t empty = 0;
    uint8_t md[SHA256_LEN];
    unsigned int md_len = 0;

    /* EVP_Digest wants a valid pointer even for no bytes. */
    if (EVP_Digest(len > 0 ? data : &empty, len, md, &md_len, EVP_sha256(), NULL) != 1 ||
        md_len != SHA256_LEN) {
        ERR_clear_error();
        out[0] = '\0';
        return;
    }
    pvb_hex_encode(md, SHA256_LEN, out);
}

void pvb_sigv4_result_free(pvb_sigv4_result *out)
{
    if (out == NULL)
        return;
    free(out->authorization);
    free(out->canonical_query);
    free(out->encoded_path);
    free(out->canonical_request);
    free(out->string_to_sign);
    memset(out, 0, sizeof(*out));
}

/* ---- input checks ---- */

static bool has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return true;
    }
    return false;
}

/* RFC 9110 token: what a method or a header name may be made of. */
static bool is_token(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            continue;
        if (strchr("!#$%&'*+-.^_`|~", c) == NULL)
            return false;
    }
    return true;
}

/* A required string field of the request: present, non-empty, free of control characters and
 * of every byte in `banned`. */
static int check_field(const char *value, const char *what, const char *banned, pvb_error *err)
{
    if (value == NULL || value[0] == '\0')
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: the %s is missing", what);
    if (has_control(value))
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: the %s contains a control character", what);
    if (strpbrk(value, banned) != NULL)
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: the %s contains one of \"%s\"", what, banned);
    return PVB_OK;
}

static bool is_payload_hash(const char *s)
{
    if (strcmp(s, UNSIGNED_PAYLOAD) == 0)
        return true;
    if (strlen(s) != SHA256_HEX_LEN)
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    }
    return true;
}

static int check_request(const pvb_sigv4_request *req, pvb_error *err)
{
    int rc = PVB_OK;

    if ((rc = check_field(req->method, "method", "", err)) != PVB_OK)
        return rc;
    if (!is_token(req->method))
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: the method '%s' is not an http token",
                       req->method);
    if ((rc = check_field(req->host, "host", " ", err)) != PVB_OK)
        return rc;
    if (req->path == NULL || req->path[0] != '/')
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: the path must start with '/'");
    /* '/' separates the fields of the credential scope, ',' those of the Authorization
     * value. */
    if ((rc = check_field(req->region, "region", " /,", err)) != PVB_OK)
        return rc;
    if ((rc = check_field(req->service, "service", " /,", err)) != PVB_OK)
        return rc;
    if ((rc = check_field(req->access_key, "access key", " /,", err)) != PVB_OK)
        return rc;
    /* The secret is only ever HMAC input, so any byte would do; a control character still
     * betrays a bad read of a credentials file, and saying so beats a SignatureDoesNotMatch. */
    if ((rc = check_field(req->secret_key, "secret key", "", err)) != PVB_OK)
        return rc;
    if (strlen(req->secret_key) > SECRET_MAX)
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: the secret key is longer than %d bytes",
                       SECRET_MAX);
    if (req->session_token != NULL && has_control(req->session_token))
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: the session token contains a control character");
    if (req->payload_hash == NULL || !is_payload_hash(req->payload_hash))
        return PVB_ERR(err, PVB_E_USAGE,
                       "sigv4: the payload hash must be 64 lowercase hex digits or '%s'",
                       UNSIGNED_PAYLOAD);
    if (req->n_query > 0 && req->query == NULL)
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: %zu query parameters but no array", req->n_query);
    for (size_t idx = 0; idx < req->n_query; idx++) {
        const pvb_s3_kv *kv = &req->query[idx];
        if (kv->name == NULL || kv->name[0] == '\0' || kv->value == NULL)
            return PVB_ERR(err, PVB_E_USAGE,
                           "sigv4: query parameter %zu has no name or a NULL value", idx);
    }
    if (req->n_headers > 0 && req->headers == NULL)
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: %zu headers but no array", req->n_headers);
    for (size_t idx = 0; idx < req->n_headers; idx++) {
        const pvb_s3_kv *kv = &req->headers[idx];
        /* The name is not quoted in messages: it may hold the very bytes refused. */
        if (kv->name == NULL || !is_token(kv->name))
            return PVB_ERR(err, PVB_E_USAGE, "sigv4: header %zu has an invalid name", idx);
        if (kv->value == NULL || has_control(kv->value))
            return PVB_ERR(err, PVB_E_USAGE,
                           "sigv4: header '%s' has a NULL value or a control character in it",
                           kv->name);
        for (size_t res = 0; res < PVB_ARRAY_LEN(reserved_headers); res++) {
            if (strcasecmp(kv->name, reserved_headers[res]) == 0)
                return PVB_ERR(err, PVB_E_USAGE, "sigv4: header '%s' is set by the signer",
                               kv->name);
        }
    }
    return PVB_OK;
}

/* ---- canonical pieces ---- */

/* Append every string up to the NULL sentinel. */
__attribute__((sentinel)) static int append_strs(pvb_buf *b, pvb_error *err, ...)
{
    va_list ap;
    int rc = PVB_OK;

    va_start(ap, err);
    for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *)) {
        rc = pvb_buf_append(b, s, strlen(s), err);
        if (rc != PVB_OK)
            break;
    }
    va_end(ap);
    return rc;
}

/* NUL-terminate b and hand its storage to *out. */
static int buf_finish(pvb_buf *b, char **out, pvb_error *err)
{
    int rc = pvb_buf_append_u8(b, 0, err);
    if (rc != PVB_OK)
        return rc;
    *out = (char *)pvb_buf_steal(b, NULL);
    return PVB_OK;
}

static void fields_free(sigv4_field *fields, size_t count)
{
    if (fields == NULL)
        return;
    for (size_t idx = 0; idx < count; idx++) {
        free(fields[idx].name);
        free(fields[idx].value);
    }
    free(fields);
}

/* Byte order of the name, then of the value: what the spec means by "sorted", and what
 * strcmp gives on the encoded (pure ASCII) query fields and the lowercased header names. */
static int field_cmp(const void *a, const void *b)
{
    const sigv4_field *fa = a;
    const sigv4_field *fb = b;
    int c = strcmp(fa->name, fb->name);
    return c != 0 ? c : strcmp(fa->value, fb->value);
}

/* "name=value&..." of the encoded parameters in canonical order. '/' is encoded in query
 * fields, unlike in the path: the canonical query must be byte for byte the one sent, and
 * this one is both. */
static int canonical_query(const pvb_sigv4_request *req, char **out, pvb_error *err)
{
    sigv4_field *params = NULL;
    size_t count = 0;
    pvb_buf b = PVB_BUF_INIT;
    int rc = PVB_OK;

    if (req->n_query > 0) {
        params = calloc(req->n_query, sizeof(*params));
        if (params == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "sigv4: out of memory");
            goto out;
        }
    }
    for (; count < req->n_query; count++) {
        const pvb_s3_kv *kv = &req->query[count];
        params[count].name = pvb_s3_uri_encode(kv->name, strlen(kv->name), false);
        params[count].value = pvb_s3_uri_encode(kv->value, strlen(kv->value), false);
        if (params[count].name == NULL || params[count].value == NULL) {
            count++; /* so that fields_free sees the half-filled entry */
            rc = PVB_ERR(err, PVB_E_NOMEM, "sigv4: out of memory");
            goto out;
        }
    }
    if (count > 1)
        qsort(params, count, sizeof(*params), field_cmp);
    for (size_t idx = 0; idx < count; idx++) {
        rc = append_strs(&b, err, idx > 0 ? "&" : "", params[idx].name, "=", params[idx].value,
                         (const char *)NULL);
        if (rc != PVB_OK)
            goto out;
    }
    rc = buf_finish(&b, out, err);
out:
    fields_free(params, count);
    pvb_buf_free(&b);
    return rc;
}

/* Copy of a header value with the leading and trailing spaces dropped and inner runs of spaces
 * made one (the spec's Trimall). Tabs cannot occur: they were refused as control characters. */
static char *trim_all(const char *value)
{
    size_t len = strlen(value);
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    size_t pos = 0;
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == ' ' && (pos == 0 || out[pos - 1] == ' '))
            continue;
        out[pos++] = *p;
    }
    if (pos > 0 && out[pos - 1] == ' ')
        pos--;
    out[pos] = '\0';
    return out;
}

static char *lowercase_dup(const char *s)
{
    size_t len = strlen(s);
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    for (size_t idx = 0; idx <= len; idx++) {
        char c = s[idx];
        out[idx] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    return out;
}

/* The canonical header block ("name:value\n" each) and the SignedHeaders list. */
static int canonical_headers(const pvb_sigv4_request *req, const char *amz_date, char **block,
                             char **signed_names, pvb_error *err)
{
    const bool with_token = req->session_token != NULL && req->session_token[0] != '\0';
    const size_t total = req->n_headers + 3 + (with_token ? 1 : 0);
    const pvb_s3_kv added[] = {
        {"host", req->host},
        {"x-amz-content-sha256", req->payload_hash},
        {"x-amz-date", amz_date},
        {"x-amz-security-token", req->session_token},
    };
    sigv4_field *headers = NULL;
    size_t count = 0;
    pvb_buf lines = PVB_BUF_INIT;
    pvb_buf names = PVB_BUF_INIT;
    int rc = PVB_OK;

    headers = calloc(total, sizeof(*headers));
    if (headers == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "sigv4: out of memory");
        goto out;
    }
    for (; count < total; count++) {
        const pvb_s3_kv *kv =
            count < req->n_headers ? &req->headers[count] : &added[count - req->n_headers];
        headers[count].name = lowercase_dup(kv->name);
        headers[count].value = trim_all(kv->value);
        if (headers[count].name == NULL || headers[count].value == NULL) {
            count++;
            rc = PVB_ERR(err, PVB_E_NOMEM, "sigv4: out of memory");
            goto out;
        }
    }
    qsort(headers, count, sizeof(*headers), field_cmp);
    for (size_t idx = 0; idx < count; idx++) {
        /* Sorting put any repeated name next to itself. Repeats would have to be joined with
         * ',' into one line; no S3 request needs them, so they are refused as a likely bug. */
        if (idx > 0 && strcmp(headers[idx - 1].name, headers[idx].name) == 0) {
            rc = PVB_ERR(err, PVB_E_USAGE, "sigv4: header '%s' is given more than once",
                         headers[idx].name);
            goto out;
        }
        rc = append_strs(&lines, err, headers[idx].name, ":", headers[idx].value, "\n",
                         (const char *)NULL);
        if (rc == PVB_OK)
            rc =
                append_strs(&names, err, idx > 0 ? ";" : "", headers[idx].name, (const char *)NULL);
        if (rc != PVB_OK)
            goto out;
    }
    rc = buf_finish(&lines, block, err);
    if (rc != PVB_OK)
        goto out;
    rc = buf_finish(&names, signed_names, err);
    if (rc != PVB_OK) {
        free(*block);
        *block = NULL;
    }
out:
    fields_free(headers, count);
    pvb_buf_free(&lines);
    pvb_buf_free(&names);
    return rc;
}

/* ---- signing ---- */

static int ossl_failed(pvb_error *err, const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown error";

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    return PVB_ERR(err, PVB_E_INTERNAL, "sigv4: %s failed: %s", what, reason);
}

static bool hmac_sha256(const void *key, size_t key_len, const char *msg, uint8_t out[SHA256_LEN])
{
    unsigned int out_len = 0;
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg), out,
             &out_len) == NULL)
        return false;
    return out_len == SHA256_LEN;
}

/* signature = HMAC(kSigning, string_to_sign), where the signing key is the chain
 * kDate = HMAC("AWS4" + secret, date), kRegion, kService, kSigning = HMAC(kService,
 * "aws4_request"). Each key of the chain grants signing power over a wider scope than the
 * last, so every one of them, and the secret copy, is wiped before returning. */
static int compute_signature(const pvb_sigv4_request *req, const char *date, const char *sts,
                             char sig_hex[SHA256_HEX_LEN + 1], pvb_error *err)
{
    uint8_t secret[4 + SECRET_MAX];
    uint8_t key_a[SHA256_LEN];
    uint8_t key_b[SHA256_LEN];
    uint8_t sig[SHA256_LEN];
    size_t secret_len = strlen(req->secret_key);
    int rc = PVB_OK;

    memcpy(secret, "AWS4", 4);
    memcpy(secret + 4, req->secret_key, secret_len);
    if (!hmac_sha256(secret, 4 + secret_len, date, key_a) ||
        !hmac_sha256(key_a, SHA256_LEN, req->region, key_b) ||
        !hmac_sha256(key_b, SHA256_LEN, req->service, key_a) ||
        !hmac_sha256(key_a, SHA256_LEN, "aws4_request", key_b) ||
        !hmac_sha256(key_b, SHA256_LEN, sts, sig)) {
        rc = ossl_failed(err, "HMAC-SHA256");
        goto out;
    }
    pvb_hex_encode(sig, SHA256_LEN, sig_hex);
out:
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(key_a, sizeof(key_a));
    OPENSSL_cleanse(key_b, sizeof(key_b));
    return rc;
}

static int format_amz_date(time_t now, char out[AMZ_DATE_LEN + 1], pvb_error *err)
{
    struct tm tm;
    /* Years outside 1000-9999 do not print as the four digits the format has room for. */
    if (gmtime_r(&now, &tm) == NULL || tm.tm_year < 1000 - 1900 || tm.tm_year > 9999 - 1900 ||
        strftime(out, AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != AMZ_DATE_LEN)
        return PVB_ERR(err, PVB_E_USAGE, "sigv4: request time %lld is out of range",
                       (long long)now);
    return PVB_OK;
}

int pvb_sigv4_sign(const pvb_sigv4_request *req, pvb_sigv4_result *out, pvb_error *err)
{
    char date[DATE_LEN + 1];
    char cr_hash[SHA256_HEX_LEN + 1];
    char sig_hex[SHA256_HEX_LEN + 1];
    char *header_block = NULL;
    char *signed_names = NULL;
    pvb_buf b = PVB_BUF_INIT;
    int rc = PVB_OK;

    memset(out, 0, sizeof(*out));
    rc = check_request(req, err);
    if (rc != PVB_OK)
        goto out;
    rc = format_amz_date(req->now, out->amz_date, err);
    if (rc != PVB_OK)
        goto out;
    memcpy(date, out->amz_date, DATE_LEN);
    date[DATE_LEN] = '\0';

    out->encoded_path = pvb_s3_uri_encode(req->path, strlen(req->path), true);
    if (out->encoded_path == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "sigv4: out of memory");
        goto out;
    }
    rc = canonical_query(req, &out->canonical_query, err);
    if (rc != PVB_OK)
        goto out;
    rc = canonical_headers(req, out->amz_date, &header_block, &signed_names, err);
    if (rc != PVB_OK)
        goto out;

    rc =
        append_strs(&b, err, req->method, "\n", out->encoded_path, "\n", out->canonical_query, "\n",
                    header_block, "\n", signed_names, "\n", req->payload_hash, (const char *)NULL);
    if (rc == PVB_OK)
        rc = buf_finish(&b, &out->canonical_request, err);
    if (rc != PVB_OK)
        goto out;

    pvb_sha256_hex(out->canonical_request, strlen(out->canonical_request), cr_hash);
    if (cr_hash[0] == '\0') {
        rc = ossl_failed(err, "SHA-256");
        goto out;
    }
    rc = append_strs(&b, err, ALGORITHM "\n", out->amz_date, "\n", date, "/", req->region, "/",
                     req->service, "/aws4_request\n", cr_hash, (const char *)NULL);
    if (rc == PVB_OK)
        rc = buf_finish(&b, &out->string_to_sign, err);
    if (rc != PVB_OK)
        goto out;

    rc = compute_signature(req, date, out->string_to_sign, sig_hex, err);
    if (rc != PVB_OK)
        goto out;
    rc = append_strs(&b, err, ALGORITHM " Credential=", req->access_key, "/", date, "/",
                     req->region, "/", req->service, "/aws4_request,SignedHeaders=", signed_names,
                     ",Signature=", sig_hex, (const char *)NULL);
    if (rc == PVB_OK)
        rc = buf_finish(&b, &out->authorization, err);
out:
    free(header_block);
    free(signed_names);
    pvb_buf_free(&b);
    if (rc != PVB_OK)
        pvb_sigv4_result_free(out);
    return rc;
}
