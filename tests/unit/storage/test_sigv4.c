#include "pvbackup/common.h"

#include "s3/sigv4.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Known answers only: the four examples of the S3 documentation ("Signature Calculations for
 * the Authorization Header: Transferring Payload in a Single Chunk"), and signatures botocore
 * computed for requests of the shapes the S3 backend sends (sigv4_vectors/gen_botocore.py
 * made them). A round trip through our own code could not catch a rule we misread. */

#define AWS_ACCESS "AKIAIOSFODNN7EXAMPLE"
#define AWS_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define AWS_HOST "examplebucket.s3.amazonaws.com"
#define AWS_SCOPE "20130524/us-east-1/s3/aws4_request"
/* 2013-05-24T00:00:00Z */
#define AWS_NOW ((time_t)1369353600)
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static pvb_sigv4_request aws_request(const char *method, const char *path)
{
    pvb_sigv4_request req = {
        .method = method,
        .host = AWS_HOST,
        .path = path,
        .payload_hash = EMPTY_SHA256,
        .region = "us-east-1",
        .service = "s3",
        .now = AWS_NOW,
        .access_key = AWS_ACCESS,
        .secret_key = AWS_SECRET,
    };
    return req;
}

/* Sign req, which must succeed, and compare everything the signer returns. */
static void check_signed(const pvb_sigv4_request *req, const char *encoded_path,
                         const char *canonical_query, const char *canonical_request,
                         const char *string_to_sign, const char *authorization)
{
    pvb_sigv4_result res;
    pvb_error err;

    int rc = pvb_sigv4_sign(req, &res, &err);
    ck_assert_msg(rc == PVB_OK, "sign: %s", err.msg);
    ck_assert_str_eq(res.encoded_path, encoded_path);
    ck_assert_str_eq(res.canonical_query, canonical_query);
    ck_assert_str_eq(res.canonical_request, canonical_request);
    ck_assert_str_eq(res.string_to_sign, string_to_sign);
    ck_assert_str_eq(res.authorization, authorization);
    ck_assert_uint_eq(strlen(res.amz_date), 16);
    ck_assert(strstr(string_to_sign, res.amz_date) != NULL);
    pvb_sigv4_result_free(&res);
}

/* ---- the S3 documentation's examples ---- */

START_TEST(test_aws_get_object)
{
    /* Header names in mixed case, with padding the signer must trim. */
    const pvb_s3_kv headers[] = {{"Range", "  bytes=0-9 "}};
    pvb_sigv4_request req = aws_request("GET", "/test.txt");
    req.headers = headers;
    req.n_headers = PVB_ARRAY_LEN(headers);

    check_signed(&req, "/test.txt", "",
                 "GET\n"
                 "/test.txt\n"
                 "\n"
                 "host:examplebucket.s3.amazonaws.com\n"
                 "range:bytes=0-9\n"
                 "x-amz-content-sha256:" EMPTY_SHA256 "\n"
                 "x-amz-date:20130524T000000Z\n"
                 "\n"
                 "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA256,
                 "AWS4-HMAC-SHA256\n"
                 "20130524T000000Z\n" AWS_SCOPE "\n"
                 "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
                 "AWS4-HMAC-SHA256 Credential=" AWS_ACCESS "/" AWS_SCOPE
                 ",SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"
                 ",Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}
END_TEST

START_TEST(test_aws_put_object)
{
    static const char body[] = "Welcome to Amazon S3.";
    char payload_hash[65];
    pvb_sha256_hex(body, strlen(body), payload_hash);
    ck_assert_str_eq(payload_hash,
                     "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");

    /* Out of order on purpose: the canonical form sorts them. */
    const pvb_s3_kv headers[] = {
        {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
        {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
    };
    pvb_sigv4_request req = aws_request("PUT", "/test$file.text");
    req.headers = headers;
    req.n_headers = PVB_ARRAY_LEN(headers);
    req.payload_hash = payload_hash;

    check_signed(&req, "/test%24file.text", "",
                 "PUT\n"
                 "/test%24file.text\n"
                 "\n"
                 "date:Fri, 24 May 2013 00:00:00 GMT\n"
                 "host:examplebucket.s3.amazonaws.com\n"
                 "x-amz-content-sha256:"
                 "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
                 "x-amz-date:20130524T000000Z\n"
                 "x-amz-storage-class:REDUCED_REDUNDANCY\n"
                 "\n"
                 "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
                 "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
                 "AWS4-HMAC-SHA256\n"
                 "20130524T000000Z\n" AWS_SCOPE "\n"
                 "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
                 "AWS4-HMAC-SHA256 Credential=" AWS_ACCESS "/" AWS_SCOPE
                 ",SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class"
                 ",Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}
END_TEST

START_TEST(test_aws_get_lifecycle)
{
    const pvb_s3_kv query[] = {{"lifecycle", ""}};
    pvb_sigv4_request req = aws_request("GET", "/");
    req.query = query;
    req.n_query = PVB_ARRAY_LEN(query);

    check_signed(&req, "/", "lifecycle=",
                 "GET\n"
                 "/\n"
                 "lifecycle=\n"
                 "host:examplebucket.s3.amazonaws.com\n"
                 "x-amz-content-sha256:" EMPTY_SHA256 "\n"
                 "x-amz-date:20130524T000000Z\n"
                 "\n"
                 "host;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA256,
                 "AWS4-HMAC-SHA256\n"
                 "20130524T000000Z\n" AWS_SCOPE "\n"
                 "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
                 "AWS4-HMAC-SHA256 Credential=" AWS_ACCESS "/" AWS_SCOPE
                 ",SignedHeaders=host;x-amz-content-sha256;x-amz-date"
                 ",Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}
END_TEST

START_TEST(test_aws_list_objects)
{
    /* Out of order on purpose: the canonical form sorts them. */
    const pvb_s3_kv query[] = {{"prefix", "J"}, {"max-keys", "2"}};
    pvb_sigv4_request req = aws_request("GET", "/");
    req.query = query;
    req.n_query = PVB_ARRAY_LEN(query);

    check_signed(&req, "/", "max-keys=2&prefix=J",
                 "GET\n"
                 "/\n"
                 "max-keys=2&prefix=J\n"
                 "host:examplebucket.s3.amazonaws.com\n"
                 "x-amz-content-sha256:" EMPTY_SHA256 "\n"
                 "x-amz-date:20130524T000000Z\n"
                 "\n"
                 "host;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA256,
                 "AWS4-HMAC-SHA256\n"
                 "20130524T000000Z\n" AWS_SCOPE "\n"
                 "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
                 "AWS4-HMAC-SHA256 Credential=" AWS_ACCESS "/" AWS_SCOPE
                 ",SignedHeaders=host;x-amz-content-sha256;x-amz-date"
                 ",Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}
END_TEST

/* ---- botocore's signatures ---- */

#define VEC_FIELDS_MAX 6

typedef struct botocore_vector {
    const char *name;
    const char *method;
    const char *host;
    const char *path; /* not encoded */
    pvb_s3_kv query[VEC_FIELDS_MAX];
    size_t n_query;
    pvb_s3_kv headers[VEC_FIELDS_MAX];
    size_t n_headers;
    const char *body;
    bool unsigned_payload;
    const char *region;
    int64_t now;
    const char *access_key;
    const char *secret_key;
    const char *session_token;
    /* what botocore signed and sent */
    const char *payload_hash;
    const char *encoded_path;
    const char *canonical_query;
    const char *canonical_request;
    const char *string_to_sign;
    const char *authorization;
} botocore_vector;

#include "sigv4_vectors/botocore_vectors.inc"

/* botocore joins the fields of the Authorization value with ", ", we with "," as the S3
 * documentation does: the same value for S3, and the only difference allowed. */
static char *botocore_authorization_as_ours(const char *botocore)
{
    size_t len = strlen(botocore);
    char *out = malloc(len + 1);
    ck_assert_ptr_nonnull(out);
    size_t pos = 0;
    for (size_t idx = 0; idx < len; idx++) {
        out[pos++] = botocore[idx];
        if (botocore[idx] == ',' && botocore[idx + 1] == ' ')
            idx++;
    }
    out[pos] = '\0';
    ck_assert_uint_eq(pos, len - 2); /* exactly the two separators */
    return out;
}

START_TEST(test_botocore_vector)
{
    const botocore_vector *vec = &botocore_vectors[_i];
    char payload_hash[65];
    pvb_sigv4_result res;
    pvb_error err;

    if (vec->unsigned_payload) {
        snprintf(payload_hash, sizeof(payload_hash), "%s", "UNSIGNED-PAYLOAD");
    } else {
        pvb_sha256_hex(vec->body, strlen(vec->body), payload_hash);
        ck_assert_str_eq(payload_hash, vec->payload_hash);
    }
    pvb_sigv4_request req = {
        .method = vec->method,
        .host = vec->host,
        .path = vec->path,
        .query = vec->query,
        .n_query = vec->n_query,
        .headers = vec->headers,
        .n_headers = vec->n_headers,
        .payload_hash = payload_hash,
        .region = vec->region,
        .service = "s3",
        .now = (time_t)vec->now,
        .access_key = vec->access_key,
        .secret_key = vec->secret_key,
        .session_token = vec->session_token,
    };

    int rc = pvb_sigv4_sign(&req, &res, &err);
    ck_assert_msg(rc == PVB_OK, "%s: sign: %s", vec->name, err.msg);
    ck_assert_msg(strcmp(res.encoded_path, vec->encoded_path) == 0, "%s: path '%s'", vec->name,
                  res.encoded_path);
    ck_assert_msg(strcmp(res.canonical_query, vec->canonical_query) == 0, "%s: query '%s'",
                  vec->name, res.canonical_query);
    ck_assert_msg(strcmp(res.canonical_request, vec->canonical_request) == 0,
                  "%s: canonical request\n%s\n-- botocore --\n%s", vec->name, res.canonical_request,
                  vec->canonical_request);
    ck_assert_msg(strcmp(res.string_to_sign, vec->string_to_sign) == 0, "%s: string to sign\n%s",
                  vec->name, res.string_to_sign);
    char *want = botocore_authorization_as_ours(vec->authorization);
    ck_assert_msg(strcmp(res.authorization, want) == 0, "%s: authorization\n%s\n%s", vec->name,
                  res.authorization, want);
    free(want);
    pvb_sigv4_result_free(&res);
}
END_TEST

/* ---- encoding ---- */

static bool unreserved(unsigned c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static char *encode_str(const char *s, bool keep_slash)
{
    char *out = pvb_s3_uri_encode(s, strlen(s), keep_slash);
    ck_assert_ptr_nonnull(out);
    return out;
}

static void check_encode(const char *s, bool keep_slash, const char *want)
{
    char *got = encode_str(s, keep_slash);
    ck_assert_str_eq(got, want);
    free(got);
}

START_TEST(test_encode_every_byte)
{
    for (unsigned byte = 0; byte < 256; byte++) {
        const char in[1] = {(char)(unsigned char)byte};
        for (int keep = 0; keep <= 1; keep++) {
            char want[4];
            if (unreserved(byte) || (byte == '/' && keep))
                snprintf(want, sizeof(want), "%c", (int)byte);
            else
                snprintf(want, sizeof(want), "%%%02X", byte);
            char *got = pvb_s3_uri_encode(in, 1, keep != 0);
            ck_assert_ptr_nonnull(got);
            ck_assert_msg(strcmp(got, want) == 0, "byte %u keep_slash %d: '%s', want '%s'", byte,
                          keep, got, want);
            free(got);
        }
    }
}
END_TEST

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* lowercase hex is not what S3 expects */
}

START_TEST(test_encode_round_trip)
{
    /* All 256 byte values at once, NUL included (the input is counted, not terminated):
     * decoding the output gives the input back, and the output holds only unreserved bytes
     * and %XX. */
    char in[256];
    for (size_t idx = 0; idx < sizeof(in); idx++)
        in[idx] = (char)(unsigned char)idx;
    for (int keep = 0; keep <= 1; keep++) {
        char *enc = pvb_s3_uri_encode(in, sizeof(in), keep != 0);
        ck_assert_ptr_nonnull(enc);
        char dec[256];
        size_t len = 0;
        for (const char *p = enc; *p != '\0'; len++) {
            ck_assert_uint_lt(len, sizeof(dec));
            if (*p == '%') {
                int hi = hex_value(p[1]);
                int lo = hi >= 0 ? hex_value(p[2]) : -1;
                ck_assert_msg(lo >= 0, "bad escape at '%.3s'", p);
                dec[len] = (char)(unsigned char)(hi * 16 + lo);
                p += 3;
            } else {
                ck_assert(unreserved((unsigned char)*p) || (*p == '/' && keep));
                dec[len] = *p++;
            }
        }
        ck_assert_uint_eq(len, sizeof(in));
        ck_assert(memcmp(dec, in, sizeof(in)) == 0);
        /* 66 unreserved bytes (and '/' when kept) stay one byte, the others become three. */
        ck_assert_uint_eq(strlen(enc), 66 + (keep ? 1 : 3) + 3 * (256 - 67));
        free(enc);
    }
}
END_TEST

START_TEST(test_encode_examples)
{
    check_encode("a+b", false, "a%2Bb");
    check_encode("a b", true, "a%20b");
    check_encode("~user", false, "~user");
    check_encode("dir/sub/file", true, "dir/sub/file");
    check_encode("dir/sub/file", false, "dir%2Fsub%2Ffile");
    check_encode("50%", true, "50%25");
    check_encode("x=1&y=2", false, "x%3D1%26y%3D2");
    check_encode("caf\xc3\xa9", true, "caf%C3%A9");
    check_encode("*'()!", false, "%2A%27%28%29%21");
    check_encode("", true, "");

    /* Only len bytes are read, and NULL is fine for nothing. */
    char *got = pvb_s3_uri_encode("abc/def", 3, false);
    ck_assert_ptr_nonnull(got);
    ck_assert_str_eq(got, "abc");
    free(got);
    got = pvb_s3_uri_encode(NULL, 0, false);
    ck_assert_ptr_nonnull(got);
    ck_assert_str_eq(got, "");
    free(got);
}
END_TEST

START_TEST(test_sha256_hex)
{
    char hex[65];
    pvb_sha256_hex("", 0, hex);
    ck_assert_str_eq(hex, EMPTY_SHA256);
    pvb_sha256_hex(NULL, 0, hex);
    ck_assert_str_eq(hex, EMPTY_SHA256);
    pvb_sha256_hex("abc", 3, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* FIPS 180-2's long message: one million 'a'. */
    char *million = malloc(1000000);
    ck_assert_ptr_nonnull(million);
    memset(million, 'a', 1000000);
    pvb_sha256_hex(million, 1000000, hex);
    free(million);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

/* ---- canonical forms beyond the examples ---- */

START_TEST(test_header_normalisation)
{
    /* Names in any case are lowercased and sorted; values lose outer spaces and inner runs
     * of spaces; an empty value stays empty; bytes above 0x7f pass as they are. */
    const pvb_s3_kv headers[] = {
        {"X-Amz-Meta-Zeta", "  a   b    c  "},
        {"CONTENT-TYPE", "text/plain"},
        {"x-amz-meta-empty", "   "},
        {"x-amz-meta-utf8", "caf\xc3\xa9"},
    };
    pvb_sigv4_request req = aws_request("PUT", "/k");
    req.headers = headers;
    req.n_headers = PVB_ARRAY_LEN(headers);
    pvb_sigv4_result res;
    pvb_error err;

    ck_assert_int_eq(pvb_sigv4_sign(&req, &res, &err), PVB_OK);
    ck_assert_str_eq(res.canonical_request,
                     "PUT\n"
                     "/k\n"
                     "\n"
                     "content-type:text/plain\n"
                     "host:examplebucket.s3.amazonaws.com\n"
                     "x-amz-content-sha256:" EMPTY_SHA256 "\n"
                     "x-amz-date:20130524T000000Z\n"
                     "x-amz-meta-empty:\n"
                     "x-amz-meta-utf8:caf\xc3\xa9\n"
                     "x-amz-meta-zeta:a b c\n"
                     "\n"
                     "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-empty;"
                     "x-amz-meta-utf8;x-amz-meta-zeta\n" EMPTY_SHA256);
    ck_assert_str_eq(res.amz_date, "20130524T000000Z");
    pvb_sigv4_result_free(&res);
}
END_TEST

START_TEST(test_query_sorting)
{
    /* Sorted by encoded name, then by encoded value (a repeated name keeps every value), in
     * byte order (uppercase first). "k[" and "kA" tell encoded order from raw order: raw,
     * 'A' (0x41) < '[' (0x5b); encoded, "%5B" < "A" since '%' is 0x25. */
    const pvb_s3_kv query[] = {
        {"tag", "b"}, {"tag", "a"}, {"kA", "1"}, {"k[", "2"}, {"z", "4"}, {"Z", "3"},
    };
    pvb_sigv4_request req = aws_request("GET", "/");
    req.query = query;
    req.n_query = PVB_ARRAY_LEN(query);
    pvb_sigv4_result res;
    pvb_error err;

    ck_assert_int_eq(pvb_sigv4_sign(&req, &res, &err), PVB_OK);
    ck_assert_str_eq(res.canonical_query, "Z=3&k%5B=2&kA=1&tag=a&tag=b&z=4");
    pvb_sigv4_result_free(&res);
}
END_TEST

START_TEST(test_session_token)
{
    /* The token is signed as x-amz-security-token; "" is the same as none. */
    pvb_sigv4_request req = aws_request("GET", "/test.txt");
    pvb_sigv4_result with, none, empty;
    pvb_error err;

    req.session_token = "FQoGZXIvYXdzEP//////////wEaDA+token==";
    ck_assert_int_eq(pvb_sigv4_sign(&req, &with, &err), PVB_OK);
    ck_assert_ptr_nonnull(
        strstr(with.canonical_request,
               "\nx-amz-security-token:FQoGZXIvYXdzEP//////////wEaDA+token==\n\n"));
    ck_assert_ptr_nonnull(strstr(with.authorization,
                                 ",SignedHeaders=host;x-amz-content-sha256;x-amz-date;"
                                 "x-amz-security-token,"));
    req.session_token = NULL;
    ck_assert_int_eq(pvb_sigv4_sign(&req, &none, &err), PVB_OK);
    req.session_token = "";
    ck_assert_int_eq(pvb_sigv4_sign(&req, &empty, &err), PVB_OK);
    ck_assert_str_eq(none.authorization, empty.authorization);
    ck_assert_str_ne(none.authorization, with.authorization);
    ck_assert_ptr_null(strstr(none.canonical_request, "x-amz-security-token"));
    pvb_sigv4_result_free(&with);
    pvb_sigv4_result_free(&none);
    pvb_sigv4_result_free(&empty);
}
END_TEST

START_TEST(test_dates)
{
    /* The scope takes the UTC date of the request time; the last second of a day and of a
     * leap year's February. */
    pvb_sigv4_request req = aws_request("GET", "/");
    pvb_sigv4_result res;
    pvb_error err;

    req.now = (time_t)1709251199; /* 2024-02-29T23:59:59Z */
    ck_assert_int_eq(pvb_sigv4_sign(&req, &res, &err), PVB_OK);
    ck_assert_str_eq(res.amz_date, "20240229T235959Z");
    ck_assert_ptr_nonnull(strstr(res.authorization, "/20240229/us-east-1/s3/aws4_request,"));
    pvb_sigv4_result_free(&res);

    req.now = (time_t)253402300799; /* 9999-12-31T23:59:59Z, the last time that fits */
    ck_assert_int_eq(pvb_sigv4_sign(&req, &res, &err), PVB_OK);
    ck_assert_str_eq(res.amz_date, "99991231T235959Z");
    pvb_sigv4_result_free(&res);
}
END_TEST

START_TEST(test_result_free)
{
    pvb_sigv4_result res;
    memset(&res, 0, sizeof(res));
    pvb_sigv4_result_free(&res);
    pvb_sigv4_result_free(NULL);

    pvb_sigv4_request req = aws_request("GET", "/");
    pvb_error err;
    ck_assert_int_eq(pvb_sigv4_sign(&req, &res, &err), PVB_OK);
    pvb_sigv4_result_free(&res);
    ck_assert_ptr_null(res.authorization);
    pvb_sigv4_result_free(&res); /* twice */
}
END_TEST

/* ---- refusals ---- */

/* Signing must fail with PVB_E_USAGE, leave the result zeroed, and keep the secret out of
 * the message. */
static void check_refused(const pvb_sigv4_request *req, const char *why)
{
    pvb_sigv4_result res;
    pvb_error err;

    memset(&res, 0x5a, sizeof(res)); /* garbage the signer must not free */
    memset(&err, 0, sizeof(err));
    int rc = pvb_sigv4_sign(req, &res, &err);
    ck_assert_msg(rc == PVB_E_USAGE, "%s: got %d (%s)", why, rc, err.msg);
    ck_assert_int_eq(err.code, PVB_E_USAGE);
    ck_assert_msg(err.msg[0] != '\0', "%s: no message", why);
    ck_assert_msg(strstr(err.msg, "EXAMPLEKEY") == NULL, "%s: secret in '%s'", why, err.msg);
    ck_assert_ptr_null(res.authorization);
    ck_assert_ptr_null(res.canonical_query);
    ck_assert_ptr_null(res.encoded_path);
    ck_assert_ptr_null(res.canonical_request);
    ck_assert_ptr_null(res.string_to_sign);
    pvb_sigv4_result_free(&res);
}

static void check_header_refused(const char *name, const char *value, const char *why)
{
    const pvb_s3_kv headers[] = {{"content-type", "text/plain"}, {name, value}};
    pvb_sigv4_request req = aws_request("PUT", "/k");
    req.headers = headers;
    req.n_headers = PVB_ARRAY_LEN(headers);
    check_refused(&req, why);
}

START_TEST(test_refuse_header_injection)
{
    check_header_refused("x-amz-meta-a", "ok\r\nx-amz-acl: public-read", "CRLF in value");
    check_header_refused("x-amz-meta-a", "ok\nx", "LF in value");
    check_header_refused("x-amz-meta-a", "ok\rx", "CR in value");
    check_header_refused("x-amz-meta-a", "a\tb", "TAB in value");
    check_header_refused("x-amz-meta-a", "a\x01", "SOH in value");
    check_header_refused("x-amz-meta-a", "a\x7f", "DEL in value");
    check_header_refused("x-amz-meta-a", NULL, "NULL value");
    check_header_refused("x-amz-meta-a\r\nx-evil", "v", "CRLF in name");
    check_header_refused("x-amz-meta a", "v", "space in name");
    check_header_refused("x-amz-meta-a:", "v", "colon in name");
    check_header_refused("", "v", "empty name");
    check_header_refused(NULL, "v", "NULL name");
    check_header_refused("x-amz-m\xc3\xa9ta", "v", "non-ASCII name");
}
END_TEST

START_TEST(test_refuse_reserved_headers)
{
    check_header_refused("Host", "evil.example.com", "host");
    check_header_refused("X-Amz-Date", "20130524T000000Z", "x-amz-date");
    check_header_refused("x-amz-content-sha256", EMPTY_SHA256, "x-amz-content-sha256");
    check_header_refused("X-AMZ-SECURITY-TOKEN", "t", "x-amz-security-token");
    check_header_refused("Authorization", "AWS4-HMAC-SHA256 x", "authorization");
    check_header_refused("Content-Type", "text/html", "content-type twice, in another case");
}
END_TEST

START_TEST(test_refuse_bad_fields)
{
    pvb_sigv4_request req;
    char long_secret[1026];

    /* Each case starts from a valid request and breaks one field. */
#define REFUSE(field, value, why)                                                                  \
    do {                                                                                           \
        req = aws_request("GET", "/test.txt");                                                     \
        req.field = (value);                                                                       \
        check_refused(&req, (why));                                                                \
    } while (0)

    REFUSE(secret_key, "", "empty secret");
    REFUSE(secret_key, NULL, "NULL secret");
    REFUSE(secret_key, "wJalrXUtnFEMI/K7MDENG\n/bPxRfiCYEXAMPLEKEY", "LF in secret");
    REFUSE(access_key, "", "empty access key");
    REFUSE(access_key, NULL, "NULL access key");
    REFUSE(access_key, "AKIA,Signature=0", "comma in access key");
    REFUSE(access_key, "AKIA/x", "slash in access key");
    REFUSE(access_key, "AKIA x", "space in access key");
    REFUSE(method, "", "empty method");
    REFUSE(method, NULL, "NULL method");
    REFUSE(method, "GET /x HTTP/1.1\r\n", "request line in method");
    REFUSE(host, "", "empty host");
    REFUSE(host, NULL, "NULL host");
    REFUSE(host, "a.example.com\r\nx-evil: 1", "CRLF in host");
    REFUSE(host, "a.example.com b", "space in host");
    REFUSE(region, "", "empty region");
    REFUSE(region, NULL, "NULL region");
    REFUSE(region, "us-east-1/x", "slash in region");
    REFUSE(region, "us-east-1\n", "LF in region");
    REFUSE(service, "", "empty service");
    REFUSE(service, NULL, "NULL service");
    REFUSE(service, "s3,x", "comma in service");
    REFUSE(session_token, "tok\r\nx-evil: 1", "CRLF in session token");
    REFUSE(path, NULL, "NULL path");
    REFUSE(path, "", "empty path");
    REFUSE(path, "test.txt", "relative path");
    REFUSE(payload_hash, NULL, "NULL payload hash");
    REFUSE(payload_hash, "", "empty payload hash");
    REFUSE(payload_hash, "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
           "uppercase payload hash");
    REFUSE(payload_hash, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
           "short payload hash");
    REFUSE(payload_hash, "unsigned-payload", "lowercase UNSIGNED-PAYLOAD");
    REFUSE(now, (time_t)253402300800, "year 10000");
    REFUSE(now, (time_t)-30610224001, "year 999");
    REFUSE(n_query, 1, "query count without array");
    REFUSE(n_headers, 1, "header count without array");

    memset(long_secret, 'k', sizeof(long_secret) - 1);
    long_secret[sizeof(long_secret) - 1] = '\0';
    REFUSE(secret_key, long_secret, "1025-byte secret");
    /* the longest accepted */
    long_secret[1024] = '\0';
    req = aws_request("GET", "/");
    req.secret_key = long_secret;
    pvb_sigv4_result res;
    pvb_error err;
    ck_assert_int_eq(pvb_sigv4_sign(&req, &res, &err), PVB_OK);
    pvb_sigv4_result_free(&res);
#undef REFUSE
}
END_TEST

START_TEST(test_refuse_bad_query)
{
    const pvb_s3_kv no_name[] = {{"", "v"}};
    const pvb_s3_kv null_name[] = {{NULL, "v"}};
    const pvb_s3_kv null_value[] = {{"uploads", NULL}};
    const pvb_s3_kv *cases[] = {no_name, null_name, null_value};

    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        pvb_sigv4_request req = aws_request("GET", "/");
        req.query = cases[idx];
        req.n_query = 1;
        check_refused(&req, "bad query parameter");
    }
}
END_TEST

static Suite *sigv4_suite(void)
{
    Suite *s = suite_create("sigv4");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"aws_get_object", test_aws_get_object},
        {"aws_put_object", test_aws_put_object},
        {"aws_get_lifecycle", test_aws_get_lifecycle},
        {"aws_list_objects", test_aws_list_objects},
        {"encode_every_byte", test_encode_every_byte},
        {"encode_round_trip", test_encode_round_trip},
        {"encode_examples", test_encode_examples},
        {"sha256_hex", test_sha256_hex},
        {"header_normalisation", test_header_normalisation},
        {"query_sorting", test_query_sorting},
        {"session_token", test_session_token},
        {"dates", test_dates},
        {"result_free", test_result_free},
        {"refuse_header_injection", test_refuse_header_injection},
        {"refuse_reserved_headers", test_refuse_reserved_headers},
        {"refuse_bad_fields", test_refuse_bad_fields},
        {"refuse_bad_query", test_refuse_bad_query},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        TCase *tc = tcase_create(cases[idx].name);
        tcase_add_test(tc, cases[idx].test);
        suite_add_tcase(s, tc);
    }
    /* One test per vector, so that a failure names it. */
    TCase *tc = tcase_create("botocore");
    tcase_add_loop_test(tc, test_botocore_vector, 0, (int)PVB_ARRAY_LEN(botocore_vectors));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return pvb_test_run(sigv4_suite());
}
