#include "pvbackup/common.h"

#include "s3/s3xml.h"
#include "testutil.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A string literal and its length, for the (xml, len) arguments. */
#define LIT(s) (s), (sizeof(s) - 1)

#define XMLNS "http://s3.amazonaws.com/doc/2006-03-01/"

/* Assert a failure with the given code whose message contains `part`. */
#define ck_fail_with(rc, err, want, part)                                                          \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        ck_assert_msg(rc_ == (want), "rc %d, expected %d (%s)", rc_, (want), (err).msg);           \
        ck_assert_msg(strstr((err).msg, (part)) != NULL, "message '%s' lacks '%s'", (err).msg,     \
                      (part));                                                                     \
    } while (0)

/* ---- every parser behind one signature, for the hostile-input tables ---- */

typedef int (*parse_fn)(const char *xml, size_t len, pvb_error *err);

static int run_list(const char *xml, size_t len, pvb_error *err)
{
    pvb_s3_list_page p;
    int rc = pvb_s3xml_parse_list(xml, len, &p, err);
    if (rc != PVB_OK) {
        ck_assert_ptr_null(p.objects);
        ck_assert_uint_eq(p.n_objects, 0);
        ck_assert_ptr_null(p.next_token);
    }
    pvb_s3_list_page_free(&p);
    return rc;
}

static int run_error(const char *xml, size_t len, pvb_error *err)
{
    pvb_s3_error_doc d;
    memset(&d, 'x', sizeof(d));
    int rc = pvb_s3xml_parse_error(xml, len, &d);
    if (rc != PVB_OK) {
        ck_assert_str_eq(d.code, "");
        ck_assert_str_eq(d.message, "");
        ck_assert_str_eq(d.request_id, "");
        ck_assert_str_eq(d.region, "");
    }
    /* this parser has no error record: make the message checks below vacuous */
    err->msg[0] = '\0';
    return rc;
}

static int run_initiate(const char *xml, size_t len, pvb_error *err)
{
    char *id = (char *)"sentinel";
    int rc = pvb_s3xml_parse_initiate(xml, len, &id, err);
    if (rc != PVB_OK)
        ck_assert_ptr_null(id);
    free(id);
    return rc;
}

static int run_complete(const char *xml, size_t len, pvb_error *err)
{
    bool failed = true;
    pvb_s3_error_doc d;
    int rc = pvb_s3xml_parse_complete(xml, len, &failed, &d, err);
    if (rc != PVB_OK) {
        ck_assert(!failed);
        ck_assert_str_eq(d.code, "");
    }
    return rc;
}

static int run_delete(const char *xml, size_t len, pvb_error *err)
{
    pvb_s3_delete_result r;
    int rc = pvb_s3xml_parse_delete(xml, len, &r, err);
    if (rc != PVB_OK) {
        ck_assert_ptr_null(r.errors);
        ck_assert_uint_eq(r.n_errors, 0);
        ck_assert_uint_eq(r.n_deleted, 0);
    }
    pvb_s3_delete_result_free(&r);
    return rc;
}

static int run_uploads(const char *xml, size_t len, pvb_error *err)
{
    pvb_s3_uploads_page p;
    int rc = pvb_s3xml_parse_uploads(xml, len, &p, err);
    if (rc != PVB_OK) {
        ck_assert_ptr_null(p.uploads);
        ck_assert_uint_eq(p.n_uploads, 0);
        ck_assert_ptr_null(p.next_key_marker);
        ck_assert_ptr_null(p.next_upload_id_marker);
    }
    pvb_s3_uploads_page_free(&p);
    return rc;
}

static const struct {
    const char *name;
    parse_fn fn;
} parsers[] = {
    {"list", run_list},         {"error", run_error},   {"initiate", run_initiate},
    {"complete", run_complete}, {"delete", run_delete}, {"uploads", run_uploads},
};

/* ---- responses, in the shapes AWS documents them ---- */

static const char AWS_LIST[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"" XMLNS "\">\n"
    "    <Name>bucket</Name>\n"
    "    <Prefix/>\n"
    "    <KeyCount>2</KeyCount>\n"
    "    <MaxKeys>1000</MaxKeys>\n"
    "    <IsTruncated>false</IsTruncated>\n"
    "    <Contents>\n"
    "        <Key>my-image.jpg</Key>\n"
    "        <LastModified>2009-10-12T17:50:30.000Z</LastModified>\n"
    "        <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>\n"
    "        <ChecksumAlgorithm>CRC32</ChecksumAlgorithm>\n"
    "        <Size>434234</Size>\n"
    "        <StorageClass>STANDARD</StorageClass>\n"
    "    </Contents>\n"
    "    <Contents>\n"
    "        <Key>my-third-image.jpg</Key>\n"
    "        <LastModified>2009-10-12T17:50:30.000Z</LastModified>\n"
    "        <ETag>\"1b2cf535f27731c974343645a3985328\"</ETag>\n"
    "        <Size>64994</Size>\n"
    "        <StorageClass>STANDARD_IA</StorageClass>\n"
    "        <RestoreStatus>\n"
    "            <IsRestoreInProgress>false</IsRestoreInProgress>\n"
    "            <RestoreExpiryDate>2009-10-12T17:50:30.000Z</RestoreExpiryDate>\n"
    "        </RestoreStatus>\n"
    "    </Contents>\n"
    "</ListBucketResult>";

/* The continued listing of the AWS example (max-keys=2, continuation-token sent). */
static const char AWS_LIST_TRUNCATED[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"" XMLNS "\">\n"
    "  <Name>bucket</Name>\n"
    "  <Prefix></Prefix>\n"
    "  <ContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</ContinuationToken>\n"
    "  "
    "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwN=</NextContinuationToken>\n"
    "  <KeyCount>2</KeyCount>\n"
    "  <MaxKeys>2</MaxKeys>\n"
    "  <StartAfter>ExampleGuide.pdf</StartAfter>\n"
    "  <IsTruncated>true</IsTruncated>\n"
    "  <Contents>\n"
    "    <Key>happyface.jpg</Key>\n"
    "    <LastModified>2014-11-21T19:40:05.000Z</LastModified>\n"
    "    <ETag>\"70ee1738b6b21e2c8a43f3a5ab0eee71\"</ETag>\n"
    "    <Size>11</Size>\n"
    "    <StorageClass>STANDARD</StorageClass>\n"
    "  </Contents>\n"
    "  <Contents>\n"
    "    <Key>sadface.jpg</Key>\n"
    "    <LastModified>2014-11-21T19:40:06.000Z</LastModified>\n"
    "    <ETag>\"9c8af9a76df052144598c115ef33e511\"</ETag>\n"
    "    <Size>0</Size>\n"
    "    <StorageClass>STANDARD</StorageClass>\n"
    "  </Contents>\n"
    "</ListBucketResult>";

/* s3rver writes compact XML in a misspelled namespace, with Owner, Delimiter and
 * CommonPrefixes. */
static const char S3RVER_LIST[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"http://doc.s3.amazonaws.com/2006-03-01/\"><Name>pvb-test</Name>"
    "<Prefix>repo/</Prefix><StartAfter></StartAfter>"
    "<NextContinuationToken>1NRVVgaw4FoYoPl6OuIq/zwvX1XumKuf0Tg7M3uqWAE=</NextContinuationToken>"
    "<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><Delimiter>/</Delimiter>"
    "<IsTruncated>true</IsTruncated><Contents><Key>repo/config</Key>"
    "<LastModified>2024-03-07T09:15:42.117Z</LastModified>"
    "<ETag>\"5d41402abc4b2a76b9719d911017c592\"</ETag><Size>218</Size>"
    "<Owner><ID>123456789000</ID><DisplayName>S3rver</DisplayName></Owner>"
    "<StorageClass>STANDARD</StorageClass></Contents><Contents>"
    "<Key>repo/keys/5f2c0e81a9d3b7c4</Key><LastModified>2024-03-07T09:15:42.301Z</LastModified>"
    "<ETag>\"7d793037a0760186574b0282f2f435e7\"</ETag><Size>1099511627776</Size>"
    "<StorageClass>STANDARD</StorageClass></Contents>"
    "<CommonPrefixes><Prefix>repo/data/</Prefix></CommonPrefixes></ListBucketResult>";

static const char AWS_ERROR[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                "<Error>\n"
                                "  <Code>NoSuchKey</Code>\n"
                                "  <Message>The resource you requested does not exist</Message>\n"
                                "  <Resource>/mybucket/myfoto.jpg</Resource>\n"
                                "  <RequestId>4442587FB7D0A2F9</RequestId>\n"
                                "</Error>";

static const char AWS_ERROR_REGION[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is "
    "malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message>"
    "<Region>eu-west-1</Region><RequestId>656c76696e6727732072657175657374</RequestId>"
    "<HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>";

/* s3rver's errors carry no RequestId, and details of their own. */
static const char S3RVER_ERROR[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message>"
    "<BucketName>pvb-test</BucketName></Error>";

static const char AWS_INITIATE[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<InitiateMultipartUploadResult xmlns=\"" XMLNS "\">\n"
    "  <Bucket>example-bucket</Bucket>\n"
    "  <Key>example-object</Key>\n"
    "  <UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>\n"
    "</InitiateMultipartUploadResult>";

static const char AWS_COMPLETE[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<CompleteMultipartUploadResult xmlns=\"" XMLNS "\">\n"
    "  <Location>http://Example-Bucket.s3.eu-west-1.amazonaws.com/Example-Object</Location>\n"
    "  <Bucket>Example-Bucket</Bucket>\n"
    "  <Key>Example-Object</Key>\n"
    "  <ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag>\n"
    "</CompleteMultipartUploadResult>";

/* The 200 OK answer of a CompleteMultipartUpload that failed after the headers were sent. */
static const char AWS_COMPLETE_ERROR[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "\n"
    "<Error>\n"
    "  <Code>InternalError</Code>\n"
    "  <Message>We encountered an internal error. Please try again.</Message>\n"
    "  <RequestId>656c76696e6727732072657175657374</RequestId>\n"
    "  <HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId>\n"
    "</Error>";

static const char AWS_DELETE[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                 "<DeleteResult xmlns=\"" XMLNS "\">\n"
                                 "  <Deleted>\n"
                                 "    <Key>sample1.txt</Key>\n"
                                 "  </Deleted>\n"
                                 "  <Deleted>\n"
                                 "    <Key>sample3.txt</Key>\n"
                                 "    <VersionId>OYcLXagmS.WaD..oyH4KRguB95_YhLs7</VersionId>\n"
                                 "    <DeleteMarker>true</DeleteMarker>\n"
                                 "  </Deleted>\n"
                                 "  <Error>\n"
                                 "    <Key>sample2.txt</Key>\n"
                                 "    <Code>AccessDenied</Code>\n"
                                 "    <Message>Access Denied</Message>\n"
                                 "  </Error>\n"
                                 "</DeleteResult>";

static const char AWS_UPLOADS[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListMultipartUploadsResult xmlns=\"" XMLNS "\">\n"
    "  <Bucket>bucket</Bucket>\n"
    "  <KeyMarker></KeyMarker>\n"
    "  <UploadIdMarker></UploadIdMarker>\n"
    "  <NextKeyMarker>my-movie.m2ts</NextKeyMarker>\n"
    "  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</NextUploadIdMarker>\n"
    "  <MaxUploads>3</MaxUploads>\n"
    "  <IsTruncated>true</IsTruncated>\n"
    "  <Upload>\n"
    "    <Key>my-divisor</Key>\n"
    "    <UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>\n"
    "    <Initiator>\n"
    "      <ID>arn:aws:iam::111122223333:user/user1-11111a31-17b5-4fb7-9df5-b111111f13de</ID>\n"
    "      <DisplayName>user1-11111a31-17b5-4fb7-9df5-b111111f13de</DisplayName>\n"
    "    </Initiator>\n"
    "    <Owner>\n"
    "      <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>\n"
    "      <DisplayName>OwnerDisplayName</DisplayName>\n"
    "    </Owner>\n"
    "    <StorageClass>STANDARD</StorageClass>\n"
    "    <Initiated>2010-11-10T20:48:33.000Z</Initiated>\n"
    "  </Upload>\n"
    "  <Upload>\n"
    "    <Key>my-movie.m2ts</Key>\n"
    "    <UploadId>VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>\n"
    "    <Initiator>\n"
    "      <ID>b1d16700c70b0b05597d7acd6a3f92be</ID>\n"
    "      <DisplayName>InitiatorDisplayName</DisplayName>\n"
    "    </Initiator>\n"
    "    <Owner>\n"
    "      <ID>b1d16700c70b0b05597d7acd6a3f92be</ID>\n"
    "      <DisplayName>OwnerDisplayName</DisplayName>\n"
    "    </Owner>\n"
    "    <StorageClass>STANDARD</StorageClass>\n"
    "    <Initiated>2024-02-29T23:59:59Z</Initiated>\n"
    "  </Upload>\n"
    "</ListMultipartUploadsResult>";

/* ---- ListObjectsV2 ---- */

START_TEST(test_list_aws)
{
    pvb_error err;
    pvb_s3_list_page p;
    ck_assert_int_eq(pvb_s3xml_parse_list(LIT(AWS_LIST), &p, &err), PVB_OK);
    ck_assert_uint_eq(p.n_objects, 2);
    ck_assert_str_eq(p.objects[0].key, "my-image.jpg");
    ck_assert_uint_eq(p.objects[0].size, 434234);
    ck_assert_str_eq(p.objects[1].key, "my-third-image.jpg");
    ck_assert_uint_eq(p.objects[1].size, 64994);
    ck_assert(!p.truncated);
    ck_assert_ptr_null(p.next_token);
    pvb_s3_list_page_free(&p);
    ck_assert_ptr_null(p.objects);
    ck_assert_uint_eq(p.n_objects, 0);
    pvb_s3_list_page_free(&p); /* twice is harmless */
    pvb_s3_list_page_free(NULL);

    ck_assert_int_eq(pvb_s3xml_parse_list(LIT(AWS_LIST_TRUNCATED), &p, &err), PVB_OK);
    ck_assert_uint_eq(p.n_objects, 2);
    ck_assert_str_eq(p.objects[0].key, "happyface.jpg");
    ck_assert_uint_eq(p.objects[0].size, 11);
    ck_assert_str_eq(p.objects[1].key, "sadface.jpg");
    ck_assert_uint_eq(p.objects[1].size, 0);
    ck_assert(p.truncated);
    ck_assert_str_eq(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwN=");
    pvb_s3_list_page_free(&p);
}
END_TEST

START_TEST(test_list_s3rver)
{
    pvb_error err;
    pvb_s3_list_page p;
    ck_assert_int_eq(pvb_s3xml_parse_list(LIT(S3RVER_LIST), &p, &err), PVB_OK);
    ck_assert_uint_eq(p.n_objects, 2);
    ck_assert_str_eq(p.objects[0].key, "repo/config");
    ck_assert_uint_eq(p.objects[0].size, 218);
    ck_assert_str_eq(p.objects[1].key, "repo/keys/5f2c0e81a9d3b7c4");
    ck_assert_uint_eq(p.objects[1].size, UINT64_C(1099511627776));
    ck_assert(p.truncated);
    ck_assert_str_eq(p.next_token, "1NRVVgaw4FoYoPl6OuIq/zwvX1XumKuf0Tg7M3uqWAE=");
    pvb_s3_list_page_free(&p);
}
END_TEST

START_TEST(test_list_empty)
{
    pvb_error err;
    pvb_s3_list_page p;
    static const char empty[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                "<ListBucketResult xmlns=\"" XMLNS "\"><Name>bucket</Name>"
                                "<Prefix>repo/locks/</Prefix><KeyCount>0</KeyCount>"
                                "<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
                                "</ListBucketResult>";
    ck_assert_int_eq(pvb_s3xml_parse_list(LIT(empty), &p, &err), PVB_OK);
    ck_assert_uint_eq(p.n_objects, 0);
    ck_assert_ptr_null(p.objects);
    ck_assert(!p.truncated);
    ck_assert_ptr_null(p.next_token);
    pvb_s3_list_page_free(&p);

    /* an empty NextContinuationToken on a last page is no token */
    static const char empty_token[] = "<ListBucketResult><IsTruncated>0</IsTruncated>"
                                      "<NextContinuationToken/></ListBucketResult>";
    ck_assert_int_eq(pvb_s3xml_parse_list(LIT(empty_token), &p, &err), PVB_OK);
    ck_assert_ptr_null(p.next_token);
    pvb_s3_list_page_free(&p);
}
END_TEST

/* With no namespace, the S3 one as default or with a prefix, or another one. */
START_TEST(test_list_namespaces)
{
    static const char *const docs[] = {
        "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a</Key><Size>1</Size>"
        "</Contents></ListBucketResult>",
        "<s3:ListBucketResult xmlns:s3=\"" XMLNS "\"><s3:IsTruncated>false</s3:IsTruncated>"
        "<s3:Contents><s3:Key>a</s3:Key><s3:Size>1</s3:Size></s3:Contents></s3:ListBucketResult>",
        "<ListBucketResult xmlns=\"urn:minio\"><IsTruncated>false</IsTruncated><Contents>"
        "<Key>a</Key><Size>1</Size></Contents></ListBucketResult>",
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(docs); idx++) {
        pvb_error err;
        pvb_s3_list_page p;
        ck_assert_msg(pvb_s3xml_parse_list(docs[idx], strlen(docs[idx]), &p, &err) == PVB_OK,
                      "doc %zu: %s", idx, err.msg);
        ck_assert_uint_eq(p.n_objects, 1);
        ck_assert_str_eq(p.objects[0].key, "a");
        ck_assert_uint_eq(p.objects[0].size, 1);
        pvb_s3_list_page_free(&p);
    }
}
END_TEST

START_TEST(test_list_key_text)
{
    pvb_error err;
    pvb_s3_list_page p;
    static const char doc[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<ListBucketResult xmlns=\"" XMLNS "\"><IsTruncated>false</IsTruncated>"
        "<Contents><Key>a&amp;b&lt;c&gt;d&quot;e&apos;f</Key><Size>1</Size></Contents>"
        "<Contents><Key>plus&#x2B;and&#43;dec</Key><Size>2</Size></Contents>"
        "<Contents><Key>caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x98\x80</Key><Size>3</Size>"
        "</Contents>"
        "<Contents><Key> spaced\t\nkey </Key><Size>4</Size></Contents>"
        "<Contents><Key><![CDATA[raw <&> text]]></Key><Size>5</Size></Contents>"
        "<Contents><Key>split<!-- comment -->key</Key><Size>6</Size></Contents>"
        "<Contents><Key>&#xE9;&#x1F600;</Key><Size>7</Size></Contents>"
        "</ListBucketResult>";
    ck_assert_int_eq(pvb_s3xml_parse_list(LIT(doc), &p, &err), PVB_OK);
    ck_assert_uint_eq(p.n_objects, 7);
    ck_assert_str_eq(p.objects[0].key, "a&b<c>d\"e'f");
    ck_assert_str_eq(p.objects[1].key, "plus+and+dec");
    ck_assert_str_eq(p.objects[2].key, "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x98\x80");
    ck_assert_str_eq(p.objects[3].key, " spaced\t\nkey ");
    ck_assert_str_eq(p.objects[4].key, "raw <&> text");
    ck_assert_str_eq(p.objects[5].key, "splitkey");
    ck_assert_str_eq(p.objects[6].key, "\xc3\xa9\xf0\x9f\x98\x80");
    pvb_s3_list_page_free(&p);

    /* a declared single-byte encoding comes out as UTF-8 */
    static const char latin1[] = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>"
                                 "<ListBucketResult><IsTruncated>false</IsTruncated>"
                                 "<Contents><Key>caf\xe9</Key><Size>1</Size></Contents>"
                                 "</ListBucketResult>";
    ck_assert_int_eq(pvb_s3xml_parse_list(LIT(latin1), &p, &err), PVB_OK);
    ck_assert_str_eq(p.objects[0].key, "caf\xc3\xa9");
    pvb_s3_list_page_free(&p);
}
END_TEST

/* A list document with one object whose Size element holds `size`. */
static int list_with_size(const char *size, pvb_error *err, uint64_t *out)
{
    char doc[512];
    pvb_s3_list_page p;
    snprintf(doc, sizeof(doc),
             "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key>"
             "<Size>%s</Size></Contents></ListBucketResult>",
             size);
    int rc = pvb_s3xml_parse_list(doc, strlen(doc), &p, err);
    if (rc == PVB_OK)
        *out = p.objects[0].size;
    pvb_s3_list_page_free(&p);
    return rc;
}

START_TEST(test_list_sizes)
{
    static const struct {
        const char *text;
        uint64_t value;
    } good[] = {
        {"0", 0},
        {"007", 7},
        {" 42\n", 42},
        {"4294967296", UINT64_C(4294967296)},
        {"18446744073709551615", UINT64_MAX},
        {"<![CDATA[9]]>", 9},
    };
    static const char *const bad[] = {
        "-1",  "12abc",    "",    "  ",  "18446744073709551616", "99999999999999999999999",
        "+5",  "0x10",     "1.5", "1e3", "&#x31;&#x32;a",        "\xef\xbc\x91" /* fullwidth 1 */,
        "1 2", "<b>1</b>",
    };
    pvb_error err;
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(good); idx++) {
        uint64_t v = 1234;
        ck_assert_msg(list_with_size(good[idx].text, &err, &v) == PVB_OK, "'%s': %s",
                      good[idx].text, err.msg);
        ck_assert_uint_eq(v, good[idx].value);
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        uint64_t v = 0;
        int rc = list_with_size(bad[idx], &err, &v);
        ck_assert_msg(rc == PVB_E_CORRUPT, "'%s' accepted (rc %d)", bad[idx], rc);
    }
    uint64_t v = 0;
    ck_fail_with(list_with_size("-1", &err, &v), err, PVB_E_CORRUPT,
                 "object 'k' has an invalid <Size> '-1'");
    ck_fail_with(list_with_size("<b>1</b>", &err, &v), err, PVB_E_CORRUPT,
                 "<Size> holds more than text");
}
END_TEST

START_TEST(test_list_structure)
{
    static const struct {
        const char *doc;
        int code;
        const char *part;
    } cases[] = {
        {"<ListBucketResult><Contents><Key>a</Key><Size>1</Size></Contents></ListBucketResult>",
         PVB_E_CORRUPT, "has no <IsTruncated>"},
        {"<ListBucketResult><IsTruncated>yes</IsTruncated></ListBucketResult>", PVB_E_CORRUPT,
         "<IsTruncated> is 'yes', not a boolean"},
        {"<ListBucketResult><IsTruncated>false</IsTruncated><IsTruncated>true</IsTruncated>"
         "</ListBucketResult>",
         PVB_E_CORRUPT, "two <IsTruncated> in <ListBucketResult>"},
        {"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>", PVB_E_CORRUPT,
         "truncated but has no <NextContinuationToken>"},
        {"<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>"
         "</NextContinuationToken></ListBucketResult>",
         PVB_E_CORRUPT, "truncated but has no <NextContinuationToken>"},
        {"<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>a"
         "</NextContinuationToken><NextContinuationToken>b</NextContinuationToken>"
         "</ListBucketResult>",
         PVB_E_CORRUPT, "two <NextContinuationToken>"},
        {"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Size>1</Size></Contents>"
         "</ListBucketResult>",
         PVB_E_CORRUPT, "<Contents> #1 has no <Key>"},
        {"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a</Key><Size>1</Size>"
         "</Contents><Contents><Key></Key><Size>1</Size></Contents></ListBucketResult>",
         PVB_E_CORRUPT, "<Contents> #2 has an empty <Key>"},
        {"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a</Key></Contents>"
         "</ListBucketResult>",
         PVB_E_CORRUPT, "object 'a' has no <Size>"},
        {"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a</Key><Key>b</Key>"
         "<Size>1</Size></Contents></ListBucketResult>",
         PVB_E_CORRUPT, "two <Key> in <Contents>"},
        {"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a</Key><Size>1</Size>"
         "<Size>2</Size></Contents></ListBucketResult>",
         PVB_E_CORRUPT, "two <Size> in <Contents>"},
        {"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a<i>b</i></Key>"
         "<Size>1</Size></Contents></ListBucketResult>",
         PVB_E_CORRUPT, "<Key> holds more than text"},
        {"<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
         "</ListBucketResult>",
         PVB_E_UNSUPPORTED, "EncodingType 'url'"},
        {"<ListAllMyBucketsResult><Buckets/></ListAllMyBucketsResult>", PVB_E_CORRUPT,
         "root element <ListAllMyBucketsResult>, expected <ListBucketResult>"},
        {"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
         PVB_E_CORRUPT, "root element <html>"},
        {AWS_ERROR, PVB_E_IO,
         "S3 ListObjectsV2 failed: NoSuchKey: The resource you requested does not exist (request "
         "id 4442587FB7D0A2F9)"},
        {S3RVER_ERROR, PVB_E_IO, "failed: NoSuchBucket: The specified bucket does not exist"},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        pvb_error err;
        ck_fail_with(run_list(cases[idx].doc, strlen(cases[idx].doc), &err), err, cases[idx].code,
                     cases[idx].part);
    }
}
END_TEST

/* A full page of 1000 objects with 1 KiB keys, the largest S3 returns. */
START_TEST(test_list_large)
{
    pvb_buf doc = PVB_BUF_INIT;
    pvb_error err;
    char key[1025];
    char entry[1200];
    memset(key, 'k', 1024);
    key[1024] = '\0';
    static const char head[] =
        "<ListBucketResult xmlns=\"" XMLNS "\"><IsTruncated>true</IsTruncated>"
        "<NextContinuationToken>t</NextContinuationToken>";
    ck_assert_int_eq(pvb_buf_append(&doc, head, strlen(head), &err), PVB_OK);
    for (int idx = 0; idx < 1000; idx++) {
        snprintf(key, 8, "%07d", idx);
        key[7] = 'k';
        int n = snprintf(entry, sizeof(entry),
                         "<Contents><Key>%s</Key><LastModified>2024-03-07T09:15:42.117Z"
                         "</LastModified><Size>%d</Size></Contents>",
                         key, idx * 1000);
        ck_assert_int_eq(pvb_buf_append(&doc, entry, (size_t)n, &err), PVB_OK);
    }
    ck_assert_int_eq(pvb_buf_append(&doc, "</ListBucketResult>", 19, &err), PVB_OK);

    pvb_s3_list_page p;
    ck_assert_int_eq(pvb_s3xml_parse_list((const char *)doc.data, doc.len, &p, &err), PVB_OK);
    ck_assert_uint_eq(p.n_objects, 1000);
    ck_assert_uint_eq(strlen(p.objects[999].key), 1024);
    ck_assert_int_eq(strncmp(p.objects[999].key, "0000999k", 8), 0);
    ck_assert_uint_eq(p.objects[999].size, 999000);
    pvb_s3_list_page_free(&p);
    pvb_buf_free(&doc);
}
END_TEST

/* ---- hostile and malformed bodies, against every parser ---- */

static const char BILLION_LAUGHS[] =
    "<?xml version=\"1.0\"?>\n"
    "<!DOCTYPE lolz [\n"
    " <!ENTITY lol \"lol\">\n"
    " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
    " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
    " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
    " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
    " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
    " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
    " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
    " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
    " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
    "]>\n"
    "<Error><Code>&lol9;</Code><Message>&lol9;</Message></Error>";

static const char *const DTD_DOCS[] = {
    BILLION_LAUGHS,
    /* external entity: a local file */
    "<?xml version=\"1.0\"?>\n<!DOCTYPE Error [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n"
    "<Error><Code>&xxe;</Code></Error>",
    /* external entity over the network */
    "<!DOCTYPE Error [<!ENTITY xxe SYSTEM \"http://127.0.0.1:1/x\">]><Error><Code>&xxe;</Code>"
    "</Error>",
    /* external DTD */
    "<!DOCTYPE Error SYSTEM \"http://127.0.0.1:1/evil.dtd\"><Error><Code>x</Code></Error>",
    /* parameter entity */
    "<!DOCTYPE Error [<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;]><Error/>",
    /* a harmless DTD is refused all the same */
    "<!DOCTYPE ListBucketResult><ListBucketResult><IsTruncated>false</IsTruncated>"
    "</ListBucketResult>",
    /* quadratic blowup: one big entity referenced many times */
    "<!DOCTYPE Error [<!ENTITY a \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">]><Error><Code>&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"
    "</Code></Error>",
};

static const struct {
    const char *doc;
    size_t len; /* 0: strlen */
    const char *part;
} MALFORMED_DOCS[] = {
    {"", 0, "is empty"},
    {"not xml at all", 0, "malformed S3"},
    {"<Error><Code>x</Error>", 0, "(line 1): Opening and ending tag mismatch"},
    {"<Error><Code>x</Code>", 0, "malformed S3"},
    {"<?xml version=\"1.0\"?>", 0, "malformed S3"},
    {"<Error><Code>&xxe;</Code></Error>", 0, "Entity 'xxe' not defined"},
    {"<Error><Code>a&#0;b</Code></Error>", 0, "malformed S3"},
    {"<Error><Code>a&#1;b</Code></Error>", 0, "malformed S3"},
    {"<Error><Code>a\0b</Code></Error>", 31, "NUL byte at offset 14"},
    {"\xff\xfe<\0E\0r\0r\0o\0r\0/\0>\0", 18, "NUL byte at offset 3"}, /* UTF-16 */
    {"<Error><Code>\xc3\x28</Code></Error>", 0, "malformed S3"},      /* invalid UTF-8 */
    {"<Error><Code>x</Code></Error><Error/>", 0, "Extra content"},
    {"<Error><Code>x</Code></Error>trailing", 0, "Extra content"},
    {"<Error a=\"1\" a=\"2\"/>", 0, "Attribute a redefined"},
    {"<Error xmlns:p=\"urn:x\"><q:Code>x</q:Code></Error>", 0, "malformed S3"},
};

START_TEST(test_hostile_dtd)
{
    for (size_t doc_idx = 0; doc_idx < PVB_ARRAY_LEN(DTD_DOCS); doc_idx++) {
        for (size_t fn_idx = 0; fn_idx < PVB_ARRAY_LEN(parsers); fn_idx++) {
            pvb_error err;
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int rc = parsers[fn_idx].fn(DTD_DOCS[doc_idx], strlen(DTD_DOCS[doc_idx]), &err);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            ck_assert_msg(rc == PVB_E_CORRUPT, "doc %zu, %s: rc %d", doc_idx, parsers[fn_idx].name,
                          rc);
            if (err.msg[0] != '\0')
                ck_assert_msg(strstr(err.msg, "has a DTD (<!DOCTYPE>)") != NULL, "doc %zu, %s: %s",
                              doc_idx, parsers[fn_idx].name, err.msg);
            /* stopped before any expansion: no time to speak of */
            double ms =
                (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
            ck_assert_msg(ms < 2000, "doc %zu took %.0f ms", doc_idx, ms);
        }
    }
}
END_TEST

START_TEST(test_hostile_malformed)
{
    for (size_t doc_idx = 0; doc_idx < PVB_ARRAY_LEN(MALFORMED_DOCS); doc_idx++) {
        const char *doc = MALFORMED_DOCS[doc_idx].doc;
        size_t len = MALFORMED_DOCS[doc_idx].len != 0 ? MALFORMED_DOCS[doc_idx].len : strlen(doc);
        for (size_t fn_idx = 0; fn_idx < PVB_ARRAY_LEN(parsers); fn_idx++) {
            pvb_error err;
            int rc = parsers[fn_idx].fn(doc, len, &err);
            ck_assert_msg(rc == PVB_E_CORRUPT, "doc %zu, %s: rc %d", doc_idx, parsers[fn_idx].name,
                          rc);
            if (err.msg[0] != '\0')
                ck_assert_msg(strstr(err.msg, MALFORMED_DOCS[doc_idx].part) != NULL,
                              "doc %zu, %s: '%s' lacks '%s'", doc_idx, parsers[fn_idx].name,
                              err.msg, MALFORMED_DOCS[doc_idx].part);
        }
    }
    /* a NULL body of length 0 is an empty body; with a length, a caller's bug */
    pvb_error err;
    ck_fail_with(run_list(NULL, 0, &err), err, PVB_E_CORRUPT, "is empty");
    ck_fail_with(run_list(NULL, 5, &err), err, PVB_E_USAGE, "NULL body");
}
END_TEST

START_TEST(test_hostile_deep)
{
    /* far past libxml2's nesting limit: refused, without recursion in our walk */
    const size_t depth = 100000;
    char *doc = malloc(depth * 3 + 1);
    ck_assert_ptr_nonnull(doc);
    for (size_t idx = 0; idx < depth; idx++)
        memcpy(doc + idx * 3, "<a>", 3);
    doc[depth * 3] = '\0';
    for (size_t fn_idx = 0; fn_idx < PVB_ARRAY_LEN(parsers); fn_idx++) {
        pvb_error err;
        ck_assert_int_eq(parsers[fn_idx].fn(doc, depth * 3, &err), PVB_E_CORRUPT);
    }
    free(doc);
}
END_TEST

START_TEST(test_size_cap)
{
    /* exactly the cap parses (padding in comments keeps each node small) */
    const size_t cap = PVB_S3XML_MAX_INPUT;
    static const char head[] = "<ListBucketResult><IsTruncated>false</IsTruncated>";
    static const char tail[] = "</ListBucketResult>";
    char *doc = malloc(cap + 1);
    ck_assert_ptr_nonnull(doc);
    size_t used = 0;
    memcpy(doc, head, sizeof(head) - 1);
    used += sizeof(head) - 1;
    while (cap - used - (sizeof(tail) - 1) >= 1000) {
        memcpy(doc + used, "<!--", 4);
        memset(doc + used + 4, 'x', 1000 - 7);
        memcpy(doc + used + 997, "-->", 3);
        used += 1000;
    }
    memset(doc + used, ' ', cap - used - (sizeof(tail) - 1));
    used = cap - (sizeof(tail) - 1);
    memcpy(doc + used, tail, sizeof(tail) - 1);
    doc[cap] = ' ';

    pvb_error err;
    ck_assert_msg(run_list(doc, cap, &err) == PVB_OK, "%s", err.msg);
    /* one byte more is refused before parsing, by every parser */
    for (size_t fn_idx = 0; fn_idx < PVB_ARRAY_LEN(parsers); fn_idx++) {
        int rc = parsers[fn_idx].fn(doc, cap + 1, &err);
        ck_assert_int_eq(rc, PVB_E_CORRUPT);
        if (err.msg[0] != '\0')
            ck_assert_msg(strstr(err.msg, "exceeds the 16 MiB limit") != NULL, "%s", err.msg);
    }
    free(doc);
}
END_TEST

/* ---- error documents ---- */

START_TEST(test_error_doc)
{
    pvb_s3_error_doc d;
    ck_assert_int_eq(pvb_s3xml_parse_error(LIT(AWS_ERROR), &d), PVB_OK);
    ck_assert_str_eq(d.code, "NoSuchKey");
    ck_assert_str_eq(d.message, "The resource you requested does not exist");
    ck_assert_str_eq(d.request_id, "4442587FB7D0A2F9");
    ck_assert_str_eq(d.region, "");

    ck_assert_int_eq(pvb_s3xml_parse_error(LIT(AWS_ERROR_REGION), &d), PVB_OK);
    ck_assert_str_eq(d.code, "AuthorizationHeaderMalformed");
    ck_assert_str_eq(d.region, "eu-west-1");
    ck_assert_str_eq(d.request_id, "656c76696e6727732072657175657374");
    ck_assert_str_eq(d.message, "The authorization header is malformed; the region 'us-east-1' "
                                "is wrong; expecting 'eu-west-1'");

    ck_assert_int_eq(pvb_s3xml_parse_error(LIT(S3RVER_ERROR), &d), PVB_OK);
    ck_assert_str_eq(d.code, "NoSuchBucket");
    ck_assert_str_eq(d.request_id, "");

    /* missing fields are "", the first of repeated ones counts, entities are decoded */
    static const char sparse[] = "<Error xmlns=\"" XMLNS "\"><Code>SlowDown</Code>"
                                 "<Code>Other</Code><Message>a &amp; b</Message></Error>";
    ck_assert_int_eq(pvb_s3xml_parse_error(LIT(sparse), &d), PVB_OK);
    ck_assert_str_eq(d.code, "SlowDown");
    ck_assert_str_eq(d.message, "a & b");
    ck_assert_str_eq(d.request_id, "");
    ck_assert_int_eq(pvb_s3xml_parse_error(LIT("<Error/>"), &d), PVB_OK);
    ck_assert_str_eq(d.code, "");

    /* not an error document */
    ck_assert_int_eq(pvb_s3xml_parse_error(LIT(AWS_LIST), &d), PVB_E_CORRUPT);
    ck_assert_int_eq(pvb_s3xml_parse_error(LIT("<html><body>Bad Gateway</body></html>"), &d),
                     PVB_E_CORRUPT);
    ck_assert_str_eq(d.code, "");
    ck_assert_int_eq(pvb_s3xml_parse_error(LIT("<Error>"), NULL), PVB_E_USAGE);
}
END_TEST

/* Long fields are cut at a character boundary, never inside one. */
START_TEST(test_error_doc_truncation)
{
    pvb_buf doc = PVB_BUF_INIT;
    pvb_error err;
    static const char head[] = "<Error><Code>";
    ck_assert_int_eq(pvb_buf_append(&doc, head, strlen(head), &err), PVB_OK);
    for (int idx = 0; idx < 100; idx++) /* 4-byte characters: 63 bytes hold 15 and a part */
        ck_assert_int_eq(pvb_buf_append(&doc, "\xf0\x9f\x98\x80", 4, &err), PVB_OK);
    static const char mid[] = "</Code><Message>xy";
    ck_assert_int_eq(pvb_buf_append(&doc, mid, strlen(mid), &err), PVB_OK);
    for (int idx = 0; idx < 300; idx++) /* 2-byte characters after two ASCII bytes */
        ck_assert_int_eq(pvb_buf_append(&doc, "\xc3\xa9", 2, &err), PVB_OK);
    static const char tail[] = "</Message></Error>";
    ck_assert_int_eq(pvb_buf_append(&doc, tail, strlen(tail), &err), PVB_OK);

    pvb_s3_error_doc d;
    ck_assert_int_eq(pvb_s3xml_parse_error((const char *)doc.data, doc.len, &d), PVB_OK);
    ck_assert_uint_eq(strlen(d.code), 60);
    ck_assert_int_eq(memcmp(d.code + 56, "\xf0\x9f\x98\x80", 4), 0);
    ck_assert_uint_eq(strlen(d.message), 510);
    ck_assert_int_eq(memcmp(d.message + 508, "\xc3\xa9", 2), 0);
    pvb_buf_free(&doc);
}
END_TEST

/* ---- multipart uploads ---- */

START_TEST(test_initiate)
{
    pvb_error err;
    char *id = NULL;
    ck_assert_int_eq(pvb_s3xml_parse_initiate(LIT(AWS_INITIATE), &id, &err), PVB_OK);
    ck_assert_str_eq(id, "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA");
    free(id);

    /* s3rver: no namespace */
    static const char s3rver[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                 "<InitiateMultipartUploadResult><Bucket>pvb-test</Bucket>"
                                 "<Key>repo/data/ab/abcdef</Key>"
                                 "<UploadId>9c1f0d2e3b4a59687766554433221100</UploadId>"
                                 "</InitiateMultipartUploadResult>";
    ck_assert_int_eq(pvb_s3xml_parse_initiate(LIT(s3rver), &id, &err), PVB_OK);
    ck_assert_str_eq(id, "9c1f0d2e3b4a59687766554433221100");
    free(id);

    ck_fail_with(run_initiate(LIT("<InitiateMultipartUploadResult><Key>k</Key>"
                                  "</InitiateMultipartUploadResult>"),
                              &err),
                 err, PVB_E_CORRUPT, "has no <UploadId>");
    ck_fail_with(run_initiate(LIT("<InitiateMultipartUploadResult><UploadId/>"
                                  "</InitiateMultipartUploadResult>"),
                              &err),
                 err, PVB_E_CORRUPT, "has an empty <UploadId>");
    ck_fail_with(run_initiate(LIT("<InitiateMultipartUploadResult><UploadId>a</UploadId>"
                                  "<UploadId>b</UploadId></InitiateMultipartUploadResult>"),
                              &err),
                 err, PVB_E_CORRUPT, "two <UploadId>");
    ck_fail_with(run_initiate(LIT(AWS_COMPLETE), &err), err, PVB_E_CORRUPT,
                 "expected <InitiateMultipartUploadResult>");
    ck_fail_with(run_initiate(LIT(AWS_COMPLETE_ERROR), &err), err, PVB_E_IO,
                 "CreateMultipartUpload failed: InternalError");
    ck_assert_int_eq(pvb_s3xml_parse_initiate(LIT(AWS_INITIATE), NULL, &err), PVB_E_USAGE);
}
END_TEST

START_TEST(test_complete)
{
    pvb_error err;
    bool failed = true;
    pvb_s3_error_doc d;
    memset(&d, 'x', sizeof(d));
    ck_assert_int_eq(pvb_s3xml_parse_complete(LIT(AWS_COMPLETE), &failed, &d, &err), PVB_OK);
    ck_assert(!failed);
    ck_assert_str_eq(d.code, "");
    ck_assert_str_eq(d.message, "");

    ck_assert_int_eq(pvb_s3xml_parse_complete(LIT(AWS_COMPLETE_ERROR), &failed, &d, &err), PVB_OK);
    ck_assert(failed);
    ck_assert_str_eq(d.code, "InternalError");
    ck_assert_str_eq(d.message, "We encountered an internal error. Please try again.");
    ck_assert_str_eq(d.request_id, "656c76696e6727732072657175657374");

    /* doc may be NULL */
    ck_assert_int_eq(pvb_s3xml_parse_complete(LIT(AWS_COMPLETE_ERROR), &failed, NULL, &err),
                     PVB_OK);
    ck_assert(failed);

    ck_fail_with(run_complete(LIT(AWS_INITIATE), &err), err, PVB_E_CORRUPT,
                 "root element <InitiateMultipartUploadResult>, expected "
                 "<CompleteMultipartUploadResult> or <Error>");
    ck_assert_int_eq(pvb_s3xml_parse_complete(LIT(AWS_COMPLETE), NULL, &d, &err), PVB_E_USAGE);
}
END_TEST

START_TEST(test_uploads)
{
    pvb_error err;
    pvb_s3_uploads_page p;
    ck_assert_int_eq(pvb_s3xml_parse_uploads(LIT(AWS_UPLOADS), &p, &err), PVB_OK);
    ck_assert_uint_eq(p.n_uploads, 2);
    ck_assert_str_eq(p.uploads[0].key, "my-divisor");
    ck_assert_str_eq(p.uploads[0].upload_id, "XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw");
    ck_assert_int_eq((int64_t)p.uploads[0].initiated, 1289422113);
    ck_assert_str_eq(p.uploads[1].key, "my-movie.m2ts");
    ck_assert_int_eq((int64_t)p.uploads[1].initiated, 1709251199);
    ck_assert(p.truncated);
    ck_assert_str_eq(p.next_key_marker, "my-movie.m2ts");
    ck_assert_str_eq(p.next_upload_id_marker, "YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ");
    pvb_s3_uploads_page_free(&p);
    ck_assert_ptr_null(p.uploads);
    pvb_s3_uploads_page_free(&p);
    pvb_s3_uploads_page_free(NULL);

    /* nothing in progress: S3 still sends the (empty) markers */
    static const char empty[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                "<ListMultipartUploadsResult xmlns=\"" XMLNS "\">"
                                "<Bucket>bucket</Bucket><KeyMarker/><UploadIdMarker/>"
                                "<NextKeyMarker/><NextUploadIdMarker/><Prefix>repo/</Prefix>"
                                "<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>"
                                "</ListMultipartUploadsResult>";
    ck_assert_int_eq(pvb_s3xml_parse_uploads(LIT(empty), &p, &err), PVB_OK);
    ck_assert_uint_eq(p.n_uploads, 0);
    ck_assert_ptr_null(p.uploads);
    ck_assert(!p.truncated);
    ck_assert_ptr_null(p.next_key_marker);
    ck_assert_ptr_null(p.next_upload_id_marker);
    pvb_s3_uploads_page_free(&p);

    ck_fail_with(run_uploads(LIT("<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>"
                                 "<NextUploadIdMarker>x</NextUploadIdMarker>"
                                 "</ListMultipartUploadsResult>"),
                             &err),
                 err, PVB_E_CORRUPT, "truncated but has no <NextKeyMarker>");
    ck_fail_with(run_uploads(LIT("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>"
                                 "<Upload><UploadId>u</UploadId><Initiated>2010-11-10T20:48:33Z"
                                 "</Initiated></Upload></ListMultipartUploadsResult>"),
                             &err),
                 err, PVB_E_CORRUPT, "<Upload> #1 has no <Key>");
    ck_fail_with(run_uploads(LIT("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>"
                                 "<Upload><Key>k</Key><Initiated>2010-11-10T20:48:33Z"
                                 "</Initiated></Upload></ListMultipartUploadsResult>"),
                             &err),
                 err, PVB_E_CORRUPT, "upload of 'k' has no <UploadId>");
    ck_fail_with(run_uploads(LIT("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>"
                                 "<Upload><Key>k</Key><UploadId>u</UploadId></Upload>"
                                 "</ListMultipartUploadsResult>"),
                             &err),
                 err, PVB_E_CORRUPT, "upload of 'k' has no <Initiated>");
    ck_fail_with(run_uploads(LIT("<ListMultipartUploadsResult><EncodingType>url</EncodingType>"
                                 "<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"),
                             &err),
                 err, PVB_E_UNSUPPORTED, "EncodingType");
    ck_fail_with(run_uploads(LIT(AWS_LIST), &err), err, PVB_E_CORRUPT,
                 "expected <ListMultipartUploadsResult>");
    ck_fail_with(run_uploads(LIT(AWS_ERROR), &err), err, PVB_E_IO,
                 "ListMultipartUploads failed: NoSuchKey");
}
END_TEST

/* Parse one upload whose Initiated holds `text`. */
static int upload_time(const char *text, time_t *out, pvb_error *err)
{
    char doc[512];
    pvb_s3_uploads_page p;
    snprintf(doc, sizeof(doc),
             "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated><Upload><Key>k</Key>"
             "<UploadId>u</UploadId><Initiated>%s</Initiated></Upload>"
             "</ListMultipartUploadsResult>",
             text);
    int rc = pvb_s3xml_parse_uploads(doc, strlen(doc), &p, err);
    if (rc == PVB_OK)
        *out = p.uploads[0].initiated;
    pvb_s3_uploads_page_free(&p);
    return rc;
}

START_TEST(test_upload_times)
{
    static const struct {
        const char *text;
        int64_t value;
    } good[] = {
        {"2010-11-10T20:48:33.000Z", 1289422113},
        {"2010-11-10T20:48:33Z", 1289422113},
        {"2010-11-10T20:48:33.123456789Z", 1289422113},
        {" 2010-11-10T20:48:33Z\n", 1289422113},
        {"2014-11-21T19:40:05.000Z", 1416598805},
        {"2019-05-01T12:00:00+02:00", 1556704800},
        {"2019-05-01T08:30:00-01:30", 1556704800},
        {"2000-02-29T00:00:00Z", 951782400},
        {"1970-01-01T00:00:00Z", 0},
        {"1969-12-31T23:59:59Z", -1},
    };
    static const char *const bad[] = {
        "",
        "yesterday",
        "2010-11-10",
        "2010-11-10T20:48:33",
        "2010-11-10 20:48:33Z",
        "2010-11-10T20:48:33.Z",
        "2010-13-10T20:48:33Z",
        "2010-00-10T20:48:33Z",
        "2010-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2010-04-31T00:00:00Z",
        "2010-11-10T24:00:00Z",
        "2010-11-10T20:60:00Z",
        "2010-11-10T20:48:61Z",
        "2010-11-10T20:48:33+2:00",
        "2010-11-10T20:48:33+24:00",
        "2010-11-10T20:48:33Zjunk",
        "-010-11-10T20:48:33Z",
        "2010-1-10T20:48:33Z",
    };
    pvb_error err;
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(good); idx++) {
        time_t t = 12345;
        ck_assert_msg(upload_time(good[idx].text, &t, &err) == PVB_OK, "'%s': %s", good[idx].text,
                      err.msg);
        ck_assert_msg((int64_t)t == good[idx].value, "'%s': %lld", good[idx].text, (long long)t);
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        time_t t = 0;
        int rc = upload_time(bad[idx], &t, &err);
        ck_assert_msg(rc == PVB_E_CORRUPT, "'%s' accepted (rc %d)", bad[idx], rc);
    }
    time_t t;
    ck_fail_with(upload_time("yesterday", &t, &err), err, PVB_E_CORRUPT,
                 "upload of 'k' has an invalid <Initiated> 'yesterday'");
}
END_TEST

/* ---- DeleteObjects ---- */

START_TEST(test_delete_result)
{
    pvb_error err;
    pvb_s3_delete_result r;
    ck_assert_int_eq(pvb_s3xml_parse_delete(LIT(AWS_DELETE), &r, &err), PVB_OK);
    ck_assert_uint_eq(r.n_deleted, 2);
    ck_assert_uint_eq(r.n_errors, 1);
    ck_assert_str_eq(r.errors[0].key, "sample2.txt");
    ck_assert_str_eq(r.errors[0].code, "AccessDenied");
    ck_assert_str_eq(r.errors[0].message, "Access Denied");
    pvb_s3_delete_result_free(&r);
    ck_assert_ptr_null(r.errors);
    pvb_s3_delete_result_free(&r);
    pvb_s3_delete_result_free(NULL);

    /* quiet mode with everything deleted */
    ck_assert_int_eq(
        pvb_s3xml_parse_delete(LIT("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult "
                                   "xmlns=\"" XMLNS "\"></DeleteResult>"),
                               &r, &err),
        PVB_OK);
    ck_assert_uint_eq(r.n_deleted, 0);
    ck_assert_uint_eq(r.n_errors, 0);
    ck_assert_ptr_null(r.errors);
    pvb_s3_delete_result_free(&r);

    /* s3rver: every key reported deleted */
    ck_assert_int_eq(
        pvb_s3xml_parse_delete(LIT("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult "
                                   "xmlns=\"" XMLNS "\"><Deleted><Key>repo/locks/a</Key>"
                                   "</Deleted><Deleted><Key>repo/locks/b</Key></Deleted>"
                                   "</DeleteResult>"),
                               &r, &err),
        PVB_OK);
    ck_assert_uint_eq(r.n_deleted, 2);
    ck_assert_uint_eq(r.n_errors, 0);
    pvb_s3_delete_result_free(&r);

    /* errors without code or message, a key with entities */
    ck_assert_int_eq(pvb_s3xml_parse_delete(LIT("<DeleteResult><Error><Key>a&amp;b</Key></Error>"
                                                "<Error><Key>c</Key><Code>InternalError</Code>"
                                                "</Error></DeleteResult>"),
                                            &r, &err),
                     PVB_OK);
    ck_assert_uint_eq(r.n_errors, 2);
    ck_assert_str_eq(r.errors[0].key, "a&b");
    ck_assert_str_eq(r.errors[0].code, "");
    ck_assert_str_eq(r.errors[0].message, "");
    ck_assert_str_eq(r.errors[1].code, "InternalError");
    pvb_s3_delete_result_free(&r);

    ck_fail_with(run_delete(LIT("<DeleteResult><Error><Key>a</Key></Error><Error><Code>"
                                "AccessDenied</Code></Error></DeleteResult>"),
                            &err),
                 err, PVB_E_CORRUPT, "<Error> #2 has no <Key>");
    ck_fail_with(run_delete(LIT("<DeleteResult><Error><Key>a</Key><Key>b</Key></Error>"
                                "</DeleteResult>"),
                            &err),
                 err, PVB_E_CORRUPT, "two <Key> in <Error>");
    ck_fail_with(run_delete(LIT(AWS_ERROR_REGION), &err), err, PVB_E_IO,
                 "DeleteObjects failed: AuthorizationHeaderMalformed");
    ck_fail_with(run_delete(LIT(AWS_LIST), &err), err, PVB_E_CORRUPT, "expected <DeleteResult>");
}
END_TEST

/* ---- request bodies ---- */

/* Keys that need every kind of escaping, and non-ASCII. */
static const char *const HARD_KEYS[] = {
    "plain/key",
    "a&b<c>d\"e'f",
    "]]>&amp;&#x2B;",
    "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x98\x80",
    " lead and trail ",
    "tab\there\nnewline\r\ncrlf\rcr",
    "\xef\xbf\xbd\xc2\x80\xf4\x8f\xbf\xbd", /* U+FFFD, U+0080, U+10FFFD */
};

/* The text of every `child` element below each `parent` child of root, in order. */
static size_t collect_texts(const xmlNode *root, const char *parent, const char *child, char **out,
                            size_t max)
{
    size_t n = 0;
    for (const xmlNode *p = root->children; p != NULL; p = p->next) {
        if (p->type != XML_ELEMENT_NODE || strcmp((const char *)p->name, parent) != 0)
            continue;
        for (const xmlNode *c = p->children; c != NULL; c = c->next) {
            if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, child) == 0) {
                ck_assert_uint_lt(n, max);
                out[n++] = (char *)xmlNodeGetContent(c);
            }
        }
    }
    return n;
}

static xmlDoc *read_body(const pvb_buf *body)
{
    xmlDoc *doc = xmlReadMemory((const char *)body->data, (int)body->len, NULL, NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    ck_assert_msg(doc != NULL, "body is not well-formed: %.*s", (int)body->len,
                  (const char *)body->data);
    return doc;
}

START_TEST(test_build_delete_roundtrip)
{
    pvb_error err;
    pvb_buf body = PVB_BUF_INIT;
    const size_t n = PVB_ARRAY_LEN(HARD_KEYS);

    ck_assert_int_eq(pvb_s3xml_build_delete(HARD_KEYS, n, true, &body, &err), PVB_OK);
    xmlDoc *doc = read_body(&body);
    const xmlNode *root = xmlDocGetRootElement(doc);
    ck_assert_str_eq((const char *)root->name, "Delete");
    ck_assert_ptr_nonnull(root->ns);
    ck_assert_str_eq((const char *)root->ns->href, XMLNS);
    const xmlNode *first = root->children;
    ck_assert_str_eq((const char *)first->name, "Quiet");
    char *quiet = (char *)xmlNodeGetContent(first);
    ck_assert_str_eq(quiet, "true");
    xmlFree(quiet);
    char *texts[16];
    ck_assert_uint_eq(collect_texts(root, "Object", "Key", texts, 16), n);
    for (size_t idx = 0; idx < n; idx++) {
        ck_assert_str_eq(texts[idx], HARD_KEYS[idx]);
        xmlFree(texts[idx]);
    }
    xmlFreeDoc(doc);

    /* the same through our own parser: the escaped keys spliced into a listing */
    pvb_buf list = PVB_BUF_INIT;
    static const char head[] = "<ListBucketResult><IsTruncated>false</IsTruncated>";
    ck_assert_int_eq(pvb_buf_append(&list, head, strlen(head), &err), PVB_OK);
    const char *p = (const char *)body.data;
    const char *end = p + body.len;
    while ((p = memmem(p, (size_t)(end - p), "<Key>", 5)) != NULL) {
        p += 5;
        const char *close = memmem(p, (size_t)(end - p), "</Key>", 6);
        ck_assert_ptr_nonnull(close);
        static const char open_entry[] = "<Contents><Key>";
        static const char close_entry[] = "</Key><Size>1</Size></Contents>";
        ck_assert_int_eq(pvb_buf_append(&list, open_entry, strlen(open_entry), &err), PVB_OK);
        ck_assert_int_eq(pvb_buf_append(&list, p, (size_t)(close - p), &err), PVB_OK);
        ck_assert_int_eq(pvb_buf_append(&list, close_entry, strlen(close_entry), &err), PVB_OK);
        p = close;
    }
    ck_assert_int_eq(pvb_buf_append(&list, "</ListBucketResult>", 19, &err), PVB_OK);
    pvb_s3_list_page page;
    ck_assert_int_eq(pvb_s3xml_parse_list((const char *)list.data, list.len, &page, &err), PVB_OK);
    ck_assert_uint_eq(page.n_objects, n);
    for (size_t idx = 0; idx < n; idx++)
        ck_assert_str_eq(page.objects[idx].key, HARD_KEYS[idx]);
    pvb_s3_list_page_free(&page);
    pvb_buf_free(&list);

    /* not quiet: no Quiet element; the body replaces what the buffer held */
    ck_assert_int_eq(pvb_s3xml_build_delete(HARD_KEYS, 1, false, &body, &err), PVB_OK);
    static const char expect[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                 "<Delete xmlns=\"" XMLNS "\"><Object><Key>plain/key</Key>"
                                 "</Object></Delete>";
    ck_assert_uint_eq(body.len, strlen(expect));
    ck_assert_int_eq(memcmp(body.data, expect, body.len), 0);
    pvb_buf_free(&body);
}
END_TEST

START_TEST(test_build_delete_limits)
{
    pvb_error err;
    pvb_buf body = PVB_BUF_INIT;
    static char names[PVB_S3XML_DELETE_MAX + 1][32];
    static const char *keys[PVB_S3XML_DELETE_MAX + 1];
    for (size_t idx = 0; idx <= PVB_S3XML_DELETE_MAX; idx++) {
        snprintf(names[idx], sizeof(names[idx]), "repo/data/%04zu", idx);
        keys[idx] = names[idx];
    }

    ck_assert_int_eq(pvb_s3xml_build_delete(keys, PVB_S3XML_DELETE_MAX, true, &body, &err), PVB_OK);
    xmlDoc *doc = read_body(&body);
    char *texts[PVB_S3XML_DELETE_MAX];
    ck_assert_uint_eq(
        collect_texts(xmlDocGetRootElement(doc), "Object", "Key", texts, PVB_S3XML_DELETE_MAX),
        PVB_S3XML_DELETE_MAX);
    ck_assert_str_eq(texts[999], "repo/data/0999");
    for (size_t idx = 0; idx < PVB_S3XML_DELETE_MAX; idx++)
        xmlFree(texts[idx]);
    xmlFreeDoc(doc);

    /* refused calls leave the buffer empty */
    ck_fail_with(pvb_s3xml_build_delete(keys, PVB_S3XML_DELETE_MAX + 1, true, &body, &err), err,
                 PVB_E_USAGE, "takes 1 to 1000 keys, not 1001");
    ck_assert_uint_eq(body.len, 0);
    ck_fail_with(pvb_s3xml_build_delete(keys, 0, true, &body, &err), err, PVB_E_USAGE, "not 0");
    ck_fail_with(pvb_s3xml_build_delete(NULL, 3, true, &body, &err), err, PVB_E_USAGE, "keys");

    const char *with_null[] = {"a", NULL};
    ck_fail_with(pvb_s3xml_build_delete(with_null, 2, true, &body, &err), err, PVB_E_USAGE,
                 "key 1 of a DeleteObjects request is empty");
    const char *with_empty[] = {""};
    ck_fail_with(pvb_s3xml_build_delete(with_empty, 1, true, &body, &err), err, PVB_E_USAGE,
                 "is empty");
    static const struct {
        const char *key;
        const char *part;
    } bad[] = {
        {"ctl\x01key", "has character U+0001, which XML 1.0 cannot carry"},
        {"esc\x1b[31m", "has character U+001B"},
        {"bad\xc3", "is not valid UTF-8 (byte 3)"},
        {"bad\xc3(", "is not valid UTF-8"},
        {"overlong\xc0\xaf", "is not valid UTF-8"},
        {"overlong\xe0\x80\xaf", "is not valid UTF-8"},
        {"surrogate\xed\xa0\x80", "is not valid UTF-8"},
        {"too-high\xf4\x90\x80\x80", "is not valid UTF-8"},
        {"latin1\xe9", "is not valid UTF-8"},
        {"nonchar\xef\xbf\xbe", "has character U+FFFE"},
        {"nonchar\xef\xbf\xbf", "has character U+FFFF"},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        body.len = 0;
        ck_assert_int_eq(pvb_buf_append(&body, "junk", 4, &err), PVB_OK);
        const char *one[] = {"good", bad[idx].key};
        ck_fail_with(pvb_s3xml_build_delete(one, 2, false, &body, &err), err, PVB_E_USAGE,
                     bad[idx].part);
        ck_assert_uint_eq(body.len, 0);
    }
    /* control characters do not reach the message */
    ck_assert_ptr_null(strchr(err.msg, '\x1b'));
    ck_assert_int_eq(pvb_s3xml_build_delete(keys, 1, true, NULL, &err), PVB_E_USAGE);
    pvb_buf_free(&body);
}
END_TEST

START_TEST(test_build_complete)
{
    pvb_error err;
    pvb_buf body = PVB_BUF_INIT;
    const pvb_s3_part parts[] = {
        {1, "\"a54357aff0632cce46d942af68356b38\""},
        {2, "\"0c78aef83f66abc1fa1e8477f296d394\""},
        {5, "\"acbd18db4cc2f85cedef654fccc4a4d8\""},
        {10000, "weird&<>'\"\xc3\xa9"},
    };
    ck_assert_int_eq(pvb_s3xml_build_complete(parts, PVB_ARRAY_LEN(parts), &body, &err), PVB_OK);
    xmlDoc *doc = read_body(&body);
    const xmlNode *root = xmlDocGetRootElement(doc);
    ck_assert_str_eq((const char *)root->name, "CompleteMultipartUpload");
    ck_assert_str_eq((const char *)root->ns->href, XMLNS);
    char *numbers[8];
    char *etags[8];
    ck_assert_uint_eq(collect_texts(root, "Part", "PartNumber", numbers, 8), 4);
    ck_assert_uint_eq(collect_texts(root, "Part", "ETag", etags, 8), 4);
    for (size_t idx = 0; idx < 4; idx++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", parts[idx].number);
        ck_assert_str_eq(numbers[idx], want);
        ck_assert_str_eq(etags[idx], parts[idx].etag);
        xmlFree(numbers[idx]);
        xmlFree(etags[idx]);
    }
    xmlFreeDoc(doc);

    static const char expect[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                 "<CompleteMultipartUpload xmlns=\"" XMLNS "\"><Part>"
                                 "<PartNumber>1</PartNumber><ETag>&quot;x&quot;</ETag></Part>"
                                 "</CompleteMultipartUpload>";
    const pvb_s3_part one[] = {{1, "\"x\""}};
    ck_assert_int_eq(pvb_s3xml_build_complete(one, 1, &body, &err), PVB_OK);
    ck_assert_uint_eq(body.len, strlen(expect));
    ck_assert_int_eq(memcmp(body.data, expect, body.len), 0);

    static const struct {
        pvb_s3_part parts[2];
        size_t n;
        const char *part;
    } bad[] = {
        {{{0, "e"}}, 1, "part number 0 (entry 0) is out of range or order"},
        {{{-3, "e"}}, 1, "part number -3"},
        {{{10001, "e"}}, 1, "part number 10001"},
        {{{2, "e"}, {2, "f"}}, 2, "part number 2 (entry 1)"},
        {{{3, "e"}, {2, "f"}}, 2, "part number 2 (entry 1)"},
        {{{1, NULL}}, 1, "part 1 has no ETag"},
        {{{1, ""}}, 1, "part 1 has no ETag"},
        {{{1, "e\x02"}}, 1, "ETag 'e?' has character U+0002"},
        {{{1, "e"}}, 0, "1 to 10000 parts, not 0"},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        ck_fail_with(pvb_s3xml_build_complete(bad[idx].parts, bad[idx].n, &body, &err), err,
                     PVB_E_USAGE, bad[idx].part);
        ck_assert_uint_eq(body.len, 0);
    }
    ck_fail_with(pvb_s3xml_build_complete(parts, PVB_S3XML_PARTS_MAX + 1, &body, &err), err,
                 PVB_E_USAGE, "not 10001");
    ck_assert_int_eq(pvb_s3xml_build_complete(parts, 1, NULL, &err), PVB_E_USAGE);

    /* the largest upload S3 accepts */
    pvb_s3_part *many = calloc(PVB_S3XML_PARTS_MAX, sizeof(*many));
    ck_assert_ptr_nonnull(many);
    for (int idx = 0; idx < PVB_S3XML_PARTS_MAX; idx++) {
        many[idx].number = idx + 1;
        many[idx].etag = "\"d41d8cd98f00b204e9800998ecf8427e\"";
    }
    ck_assert_int_eq(pvb_s3xml_build_complete(many, PVB_S3XML_PARTS_MAX, &body, &err), PVB_OK);
    ck_assert_ptr_nonnull(memmem(body.data, body.len, "<PartNumber>10000</PartNumber>", 30));
    free(many);
    pvb_buf_free(&body);
}
END_TEST

/* ---- threads ---- */

#define THREADS 8
#define ROUNDS 300

static atomic_int thread_failures;

static void *parse_worker(void *arg)
{
    size_t id = (size_t)(uintptr_t)arg;
    for (int round = 0; round < ROUNDS; round++) {
        pvb_error err;
        switch ((id + (size_t)round) % 4) {
        case 0: {
            pvb_s3_list_page p;
            if (pvb_s3xml_parse_list(LIT(AWS_LIST_TRUNCATED), &p, &err) != PVB_OK ||
                p.n_objects != 2 || strcmp(p.objects[1].key, "sadface.jpg") != 0)
                atomic_fetch_add(&thread_failures, 1);
            pvb_s3_list_page_free(&p);
            break;
        }
        case 1: {
            pvb_s3_delete_result r;
            if (pvb_s3xml_parse_delete(LIT(AWS_DELETE), &r, &err) != PVB_OK || r.n_errors != 1)
                atomic_fetch_add(&thread_failures, 1);
            pvb_s3_delete_result_free(&r);
            break;
        }
        case 2: {
            pvb_s3_error_doc d;
            if (pvb_s3xml_parse_error(LIT(BILLION_LAUGHS), &d) != PVB_E_CORRUPT)
                atomic_fetch_add(&thread_failures, 1);
            break;
        }
        default: {
            pvb_s3_list_page p;
            if (pvb_s3xml_parse_list(LIT("<ListBucketResult><Contents>"), &p, &err) !=
                    PVB_E_CORRUPT ||
                strstr(err.msg, "malformed S3 ListObjectsV2 response") == NULL)
                atomic_fetch_add(&thread_failures, 1);
            break;
        }
        }
    }
    return NULL;
}

/* The first parses of a process race for libxml2's initialisation. */
START_TEST(test_threads)
{
    pthread_t threads[THREADS];
    atomic_store(&thread_failures, 0);
    for (size_t idx = 0; idx < THREADS; idx++)
        ck_assert_int_eq(pthread_create(&threads[idx], NULL, parse_worker, (void *)(uintptr_t)idx),
                         0);
    for (size_t idx = 0; idx < THREADS; idx++)
        ck_assert_int_eq(pthread_join(threads[idx], NULL), 0);
    ck_assert_int_eq(atomic_load(&thread_failures), 0);
}
END_TEST

static Suite *s3xml_suite(void)
{
    Suite *s = suite_create("s3xml");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        /* first, in its own fork: the one that initialises libxml2 from several threads */
        {"threads", test_threads},
        {"list_aws", test_list_aws},
        {"list_s3rver", test_list_s3rver},
        {"list_empty", test_list_empty},
        {"list_namespaces", test_list_namespaces},
        {"list_key_text", test_list_key_text},
        {"list_sizes", test_list_sizes},
        {"list_structure", test_list_structure},
        {"list_large", test_list_large},
        {"hostile_dtd", test_hostile_dtd},
        {"hostile_malformed", test_hostile_malformed},
        {"hostile_deep", test_hostile_deep},
        {"size_cap", test_size_cap},
        {"error_doc", test_error_doc},
        {"error_doc_truncation", test_error_doc_truncation},
        {"initiate", test_initiate},
        {"complete", test_complete},
        {"uploads", test_uploads},
        {"upload_times", test_upload_times},
        {"delete_result", test_delete_result},
        {"build_delete_roundtrip", test_build_delete_roundtrip},
        {"build_delete_limits", test_build_delete_limits},
        {"build_complete", test_build_complete},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        TCase *tc = tcase_create(cases[idx].name);
        tcase_add_test(tc, cases[idx].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return pvb_test_run(s3xml_suite());
}
