#include "pvbackup/common.h"

#include "s3/s3xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlversion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* S3 XML on libxml2's tree API.
 *
 * Responses are small (a page of at most 1000 entries), so a whole tree costs little and lets
 * each parser check the document's shape directly, element by element, instead of keeping a
 * SAX state machine. The tree is only walked at fixed depths (root, its children, theirs), so
 * no recursion depends on the input; libxml2 itself caps nesting at 256 levels without
 * XML_PARSE_HUGE, which is never set.
 *
 * DTDs are refused from the SAX internalSubset callback, which libxml2 calls as soon as it has
 * read "<!DOCTYPE name ...", before the first declaration of the internal subset: the parser is
 * stopped there, so no entity is ever declared, let alone expanded or fetched. Without a DTD
 * the only references left are the five predefined entities and character references, which
 * libxml2 always decodes, and an undeclared entity is a well-formedness error. XML_PARSE_NONET
 * stays on as a second lock in case a later change lets a DTD through.
 *
 * libxml2 errors go to a per-parse structured handler (never to stderr, never through
 * libxml2's process-wide handler, which other threads share); the first one becomes the
 * message, the later ones being mostly consequences of it. */

#define S3_NAMESPACE "http://s3.amazonaws.com/doc/2006-03-01/"
#define XML_DECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"

/* Bytes of untrusted text (keys, values) quoted in an error message. */
#define SHOWN_MAX 160

/* The operation names used in messages. */
#define WHAT_LIST "ListObjectsV2"
#define WHAT_ERROR "error"
#define WHAT_INITIATE "CreateMultipartUpload"
#define WHAT_COMPLETE "CompleteMultipartUpload"
#define WHAT_DELETE "DeleteObjects"
#define WHAT_UPLOADS "ListMultipartUploads"

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

/* Several threads parse at once, and xmlInitParser is not safe to call concurrently in the
 * libxml2 2.9 we build against. xmlCleanupParser is never called: it would pull libxml2's
 * state from under any other user of the library in the process. */
static void xml_init(void)
{
    xmlInitParser();
}

/* ---- untrusted text in messages ---- */

/* Copy s for a message: at most SHOWN_MAX bytes, control characters as '?' so that a hostile
 * server cannot drive the user's terminal through our error messages. dst: SHOWN_MAX + 4. */
static const char *shown(const char *s, char *dst)
{
    size_t used = 0;
    for (; s[used] != '\0' && used < SHOWN_MAX; used++) {
        unsigned char c = (unsigned char)s[used];
        dst[used] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (s[used] != '\0') {
        memcpy(dst + used, "...", 3);
        used += 3;
    }
    dst[used] = '\0';
    return dst;
}

/* ---- parsing a document ---- */

typedef struct parse_state {
    bool saw_dtd;
    bool failed; /* an error was recorded below */
    bool out_of_memory;
    int line;
    char msg[256];
} parse_state;

static void on_doctype(void *ctx, const xmlChar *name, const xmlChar *external_id,
                       const xmlChar *system_id)
{
    PVB_UNUSED(name);
    PVB_UNUSED(external_id);
    PVB_UNUSED(system_id);
    xmlParserCtxtPtr ctxt = ctx;
    parse_state *st = ctxt->_private;
    st->saw_dtd = true;
    xmlStopParser(ctxt);
}

/* libxml2 2.12 made the error const. */
#if LIBXML_VERSION >= 21200
static void on_error(void *ctx, const xmlError *e)
#else
static void on_error(void *ctx, xmlErrorPtr e)
#endif
{
    xmlParserCtxtPtr ctxt = ctx;
    parse_state *st = ctxt->_private;
    if (e == NULL || e->level < XML_ERR_ERROR)
        return;
    if (e->code == XML_ERR_NO_MEMORY)
        st->out_of_memory = true;
    if (st->failed)
        return;
    st->failed = true;
    st->line = e->line;
    snprintf(st->msg, sizeof(st->msg), "%s", e->message != NULL ? e->message : "unknown error");
    /* libxml2 ends its messages with a newline and puts some inside ("...\nBytes: 0xC3"):
     * keep ours on one line */
    size_t n = strlen(st->msg);
    while (n > 0 && (st->msg[n - 1] == '\n' || st->msg[n - 1] == ' '))
        st->msg[--n] = '\0';
    for (size_t idx = 0; idx < n; idx++) {
        unsigned char c = (unsigned char)st->msg[idx];
        if (c < 0x20 || c == 0x7f)
            st->msg[idx] = ' ';
    }
}

/* Checks that need no parser: S3 bodies are UTF-8 text of bounded size. A NUL byte is refused
 * here because libxml2's strings end at the first NUL, and a key cut there would name another
 * object. */
static int check_body(const char *xml, size_t len, const char *what, pvb_error *err)
{
    if (xml == NULL && len > 0)
        return PVB_ERR(err, PVB_E_USAGE, "S3 %s response: NULL body of %zu bytes", what, len);
    if (len == 0)
        return PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response is empty", what);
    if (len > PVB_S3XML_MAX_INPUT)
        return PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response of %zu bytes exceeds the %zu MiB limit",
                       what, len, PVB_S3XML_MAX_INPUT >> 20);
    const char *nul = memchr(xml, '\0', len);
    if (nul != NULL)
        return PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response has a NUL byte at offset %zu", what,
                       (size_t)(nul - xml));
    return PVB_OK;
}

/* Parse a whole body into *doc_out, refusing DTDs. */
static int parse_doc(const char *xml, size_t len, const char *what, xmlDoc **doc_out,
                     pvb_error *err)
{
    int rc = PVB_OK;
    xmlParserCtxtPtr ctxt = NULL;
    xmlDoc *doc = NULL;
    parse_state st = {0};

    *doc_out = NULL;
    rc = check_body(xml, len, what, err);
    if (rc != PVB_OK)
        goto out;

    pthread_once(&xml_once, xml_init);
    ctxt = xmlNewParserCtxt();
    if (ctxt == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "cannot parse S3 %s response: out of memory", what);
        goto out;
    }
    ctxt->_private = &st;
    ctxt->sax->internalSubset = on_doctype;
    ctxt->sax->serror = on_error;
    /* NOENT, DTDLOAD, DTDATTR, XINCLUDE and HUGE stay off, whatever libxml2's global defaults
     * say: xmlCtxtReadMemory sets every parser option from this mask. */
    int options = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING;
#if LIBXML_VERSION >= 21300
    options |= XML_PARSE_NO_XXE;
#endif
    doc = xmlCtxtReadMemory(ctxt, xml, (int)len, NULL, NULL, options);

    /* First: a parser stopped by on_doctype hands back what it had built as well-formed. */
    if (st.saw_dtd || (doc != NULL && (doc->intSubset != NULL || doc->extSubset != NULL))) {
        rc = PVB_ERR(err, PVB_E_CORRUPT,
                     "S3 %s response has a DTD (<!DOCTYPE>), which S3 never sends: refused", what);
        goto out;
    }
    if (st.out_of_memory) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "cannot parse S3 %s response: out of memory", what);
        goto out;
    }
    if (doc == NULL || !ctxt->wellFormed || st.failed) {
        if (st.failed)
            rc = PVB_ERR(err, PVB_E_CORRUPT, "malformed S3 %s response (line %d): %s", what,
                         st.line, st.msg);
        else
            rc = PVB_ERR(err, PVB_E_CORRUPT, "malformed S3 %s response", what);
        goto out;
    }
    if (xmlDocGetRootElement(doc) == NULL) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response has no root element", what);
        goto out;
    }
    *doc_out = doc;
    doc = NULL;

out:
    xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    return rc;
}

/* Local name only: the namespace varies between S3 implementations (see the header). */
static bool is_elem(const xmlNode *node, const char *name)
{
    return node->type == XML_ELEMENT_NODE && strcmp((const char *)node->name, name) == 0;
}

/* ---- fields ---- */

typedef struct field {
    const char *name;
    const xmlNode *node; /* NULL until found */
} field;

/* Find the child elements of parent named in fields. With first_wins the first of repeated
 * children counts; otherwise a repeat is refused. Other children are skipped. */
static int find_fields(const xmlNode *parent, field *fields, size_t n, bool first_wins,
                       const char *what, pvb_error *err)
{
    for (const xmlNode *child = parent->children; child != NULL; child = child->next) {
        if (child->type != XML_ELEMENT_NODE)
            continue;
        for (size_t idx = 0; idx < n; idx++) {
            if (!is_elem(child, fields[idx].name))
                continue;
            if (fields[idx].node == NULL)
                fields[idx].node = child;
            else if (!first_wins)
                return PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response has two <%s> in <%s>", what,
                               fields[idx].name, (const char *)parent->name);
            break;
        }
    }
    return PVB_OK;
}

static size_t count_children(const xmlNode *parent, const char *name)
{
    size_t n = 0;
    for (const xmlNode *child = parent->children; child != NULL; child = child->next)
        n += is_elem(child, name);
    return n;
}

static bool is_text(const xmlNode *node)
{
    return node->type == XML_TEXT_NODE || node->type == XML_CDATA_SECTION_NODE;
}

/* The text of a leaf element as a malloc'ed string: its text and CDATA children joined (a
 * comment may split them). Anything else inside, an element above all, means the document
 * does not have the shape S3 gives it. */
static int leaf_text(const xmlNode *elem, const char *what, char **out, pvb_error *err)
{
    size_t total = 0;
    *out = NULL;
    for (const xmlNode *child = elem->children; child != NULL; child = child->next) {
        if (is_text(child))
            total += child->content != NULL ? strlen((const char *)child->content) : 0;
        else if (child->type != XML_COMMENT_NODE && child->type != XML_PI_NODE)
            return PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response: <%s> holds more than text", what,
                           (const char *)elem->name);
    }
    char *text = malloc(total + 1);
    if (text == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "S3 %s response: out of memory", what);
    size_t used = 0;
    for (const xmlNode *child = elem->children; child != NULL; child = child->next) {
        if (!is_text(child) || child->content == NULL)
            continue;
        size_t n = strlen((const char *)child->content);
        memcpy(text + used, child->content, n);
        used += n;
    }
    text[used] = '\0';
    *out = text;
    return PVB_OK;
}

/* Like leaf_text for an optional field (absent: NULL), where an empty value means absent. */
static int optional_text(const xmlNode *elem, const char *what, char **out, pvb_error *err)
{
    *out = NULL;
    if (elem == NULL)
        return PVB_OK;
    int rc = leaf_text(elem, what, out, err);
    if (rc == PVB_OK && (*out)[0] == '\0') {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* A required field with a non-empty value. */
static int required_text(const xmlNode *elem, const char *name, const char *context,
                         const char *what, char **out, pvb_error *err)
{
    *out = NULL;
    if (elem == NULL)
        return PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response: %s has no <%s>", what, context, name);
    int rc = leaf_text(elem, what, out, err);
    if (rc == PVB_OK && (*out)[0] == '\0') {
        free(*out);
        *out = NULL;
        rc = PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response: %s has an empty <%s>", what, context,
                     name);
    }
    return rc;
}

/* Copy the text children of elem into dst (cap bytes with the NUL), cutting at a UTF-8
 * character boundary. For the fields of error documents, which are only shown: nothing is
 * refused. */
static void copy_text(const xmlNode *elem, char *dst, size_t cap)
{
    size_t used = 0;
    bool cut = false;
    dst[0] = '\0';
    if (elem == NULL)
        return;
    for (const xmlNode *child = elem->children; child != NULL && !cut; child = child->next) {
        if (!is_text(child) || child->content == NULL)
            continue;
        size_t n = strlen((const char *)child->content);
        if (n > cap - 1 - used) {
            n = cap - 1 - used;
            cut = true;
        }
        memcpy(dst + used, child->content, n);
        used += n;
    }
    if (cut) {
        /* Back up to the lead byte of the last character; drop it if it lost bytes. */
        size_t lead = used;
        while (lead > 0 && ((unsigned char)dst[lead - 1] & 0xC0) == 0x80)
            lead--;
        if (lead > 0 && ((unsigned char)dst[lead - 1] & 0x80) != 0) {
            unsigned char c = (unsigned char)dst[lead - 1];
            size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if (used - (lead - 1) < want)
                used = lead - 1;
        }
    }
    dst[used] = '\0';
}

static bool is_xml_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* s without surrounding XML whitespace, as [*begin, *begin + *len). */
static void trim(const char *s, const char **begin, size_t *len)
{
    while (is_xml_space(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && is_xml_space(s[n - 1]))
        n--;
    *begin = s;
    *len = n;
}

/* Plain decimal digits: no sign, no base prefix, no trailing junk, no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    const char *p;
    size_t n;
    uint64_t v = 0;
    trim(s, &p, &n);
    if (n == 0)
        return false;
    for (size_t idx = 0; idx < n; idx++) {
        if (p[idx] < '0' || p[idx] > '9')
            return false;
        uint64_t digit = (uint64_t)(p[idx] - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    *out = v;
    return true;
}

/* xsd:boolean. */
static bool parse_bool(const char *s, bool *out)
{
    const char *p;
    size_t n;
    trim(s, &p, &n);
    if ((n == 4 && memcmp(p, "true", 4) == 0) || (n == 1 && p[0] == '1'))
        *out = true;
    else if ((n == 5 && memcmp(p, "false", 5) == 0) || (n == 1 && p[0] == '0'))
        *out = false;
    else
        return false;
    return true;
}

/* n decimal digits at *p, advancing it. */
static bool take_digits(const char **p, const char *end, size_t n, int *out)
{
    int v = 0;
    if ((size_t)(end - *p) < n)
        return false;
    for (size_t idx = 0; idx < n; idx++) {
        char c = (*p)[idx];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool take_char(const char **p, const char *end, char c)
{
    if (*p >= end || **p != c)
        return false;
    (*p)++;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil): exact
 * for every year, independent of TZ and of the C library's timegm. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t mp = m > 2 ? m - 3 : m + 9;
    const int64_t doy = (153 * mp + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* "YYYY-MM-DDThh:mm:ss[.fff...](Z|+hh:mm|-hh:mm)", as S3 writes Initiated. */
static bool parse_time(const char *s, time_t *out)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p;
    size_t n;
    int year, mon, day, hour, min, sec, off_h = 0, off_m = 0;
    trim(s, &p, &n);
    const char *end = p + n;

    if (!take_digits(&p, end, 4, &year) || !take_char(&p, end, '-') ||
        !take_digits(&p, end, 2, &mon) || !take_char(&p, end, '-') ||
        !take_digits(&p, end, 2, &day) || !take_char(&p, end, 'T') ||
        !take_digits(&p, end, 2, &hour) || !take_char(&p, end, ':') ||
        !take_digits(&p, end, 2, &min) || !take_char(&p, end, ':') ||
        !take_digits(&p, end, 2, &sec))
        return false;
    if (take_char(&p, end, '.')) {
        const char *digits = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == digits)
            return false;
    }
    int sign = 0;
    if (take_char(&p, end, 'Z'))
        sign = 0;
    else if (take_char(&p, end, '+'))
        sign = 1;
    else if (take_char(&p, end, '-'))
        sign = -1;
    else
        return false;
    if (sign != 0 && (!take_digits(&p, end, 2, &off_h) || !take_char(&p, end, ':') ||
                      !take_digits(&p, end, 2, &off_m) || off_h > 23 || off_m > 59))
        return false;
    if (p != end)
        return false;

    if (mon < 1 || mon > 12 || day < 1 || hour > 23 || min > 59 || sec > 60)
        return false;
    int dim = mdays[mon - 1] + (mon == 2 && is_leap(year));
    if (day > dim)
        return false;
    int64_t t = days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec;
    t -= (int64_t)sign * (off_h * 3600 + off_m * 60);
    if ((int64_t)(time_t)t != t)
        return false;
    *out = (time_t)t;
    return true;
}

/* ---- documents ---- */

static void fill_error_doc(const xmlNode *root, pvb_s3_error_doc *doc)
{
    field fields[] = {{"Code", NULL}, {"Message", NULL}, {"RequestId", NULL}, {"Region", NULL}};
    /* first_wins: cannot fail */
    (void)find_fields(root, fields, PVB_ARRAY_LEN(fields), true, WHAT_ERROR, NULL);
    copy_text(fields[0].node, doc->code, sizeof(doc->code));
    copy_text(fields[1].node, doc->message, sizeof(doc->message));
    copy_text(fields[2].node, doc->request_id, sizeof(doc->request_id));
    copy_text(fields[3].node, doc->region, sizeof(doc->region));
}

/* Parse a body whose root must be root_name. An <Error> root instead is the server reporting
 * a failure with a 200 status: PVB_E_IO carrying its code and message. */
static int parse_root(const char *xml, size_t len, const char *what, const char *root_name,
                      xmlDoc **doc_out, const xmlNode **root_out, pvb_error *err)
{
    char shown_buf[SHOWN_MAX + 4];
    xmlDoc *doc = NULL;
    int rc = parse_doc(xml, len, what, &doc, err);
    if (rc != PVB_OK)
        goto out;
    const xmlNode *root = xmlDocGetRootElement(doc);
    if (is_elem(root, "Error")) {
        pvb_s3_error_doc e;
        fill_error_doc(root, &e);
        rc = PVB_ERR(err, PVB_E_IO, "S3 %s failed: %s: %s%s%s%s", what,
                     e.code[0] != '\0' ? e.code : "(no code)", e.message,
                     e.request_id[0] != '\0' ? " (request id " : "", e.request_id,
                     e.request_id[0] != '\0' ? ")" : "");
        goto out;
    }
    if (!is_elem(root, root_name)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response has root element <%s>, expected <%s>",
                     what, shown((const char *)root->name, shown_buf), root_name);
        goto out;
    }
    *doc_out = doc;
    *root_out = root;
    doc = NULL;

out:
    xmlFreeDoc(doc);
    return rc;
}

/* IsTruncated (required) and EncodingType (refused) of a listing. */
static int listing_flags(const xmlNode *truncated_node, const xmlNode *encoding_node,
                         const char *what, bool *truncated, pvb_error *err)
{
    char shown_buf[SHOWN_MAX + 4];
    char *text = NULL;
    int rc = PVB_OK;

    if (encoding_node != NULL) {
        rc = optional_text(encoding_node, what, &text, err);
        if (rc != PVB_OK)
            goto out;
        if (text != NULL) {
            rc = PVB_ERR(err, PVB_E_UNSUPPORTED,
                         "S3 %s response uses EncodingType '%s': encoded keys are not supported",
                         what, shown(text, shown_buf));
            goto out;
        }
    }
    if (truncated_node == NULL) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response has no <IsTruncated>", what);
        goto out;
    }
    rc = leaf_text(truncated_node, what, &text, err);
    if (rc != PVB_OK)
        goto out;
    if (!parse_bool(text, truncated)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "S3 %s response: <IsTruncated> is '%s', not a boolean",
                     what, shown(text, shown_buf));
        goto out;
    }

out:
    free(text);
    return rc;
}

/* Result arrays are allocated once, from a count of their entries, before being filled. */
static int alloc_array(size_t n, size_t size, const char *what, void **out, pvb_error *err)
{
    *out = NULL;
    if (n == 0)
        return PVB_OK;
    *out = calloc(n, size);
    if (*out == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "S3 %s response: out of memory for %zu entries", what, n);
    return PVB_OK;
}

void pvb_s3_list_page_free(pvb_s3_list_page *p)
{
    if (p == NULL)
        return;
    for (size_t idx = 0; idx < p->n_objects; idx++)
        free(p->objects[idx].key);
    free(p->objects);
    free(p->next_token);
    p->objects = NULL;
    p->n_objects = 0;
    p->truncated = false;
    p->next_token = NULL;
}

static int parse_contents(const xmlNode *contents, size_t index, pvb_s3_object *obj, pvb_error *err)
{
    char context[64];
    char shown_key[SHOWN_MAX + 4];
    char shown_size[SHOWN_MAX + 4];
    char *size_text = NULL;
    field fields[] = {{"Key", NULL}, {"Size", NULL}};
    int rc = find_fields(contents, fields, PVB_ARRAY_LEN(fields), false, WHAT_LIST, err);
    if (rc != PVB_OK)
        goto out;
    snprintf(context, sizeof(context), "<Contents> #%zu", index + 1);
    rc = required_text(fields[0].node, "Key", context, WHAT_LIST, &obj->key, err);
    if (rc != PVB_OK)
        goto out;
    if (fields[1].node == NULL) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "S3 " WHAT_LIST " response: object '%s' has no <Size>",
                     shown(obj->key, shown_key));
        goto out;
    }
    rc = leaf_text(fields[1].node, WHAT_LIST, &size_text, err);
    if (rc != PVB_OK)
        goto out;
    if (!parse_u64(size_text, &obj->size)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT,
                     "S3 " WHAT_LIST " response: object '%s' has an invalid <Size> '%s'",
                     shown(obj->key, shown_key), shown(size_text, shown_size));
        goto out;
    }

out:
    free(size_text);
    return rc;
}

int pvb_s3xml_parse_list(const char *xml, size_t len, pvb_s3_list_page *out, pvb_error *err)
{
    int rc = PVB_OK;
    xmlDoc *doc = NULL;
    const xmlNode *root = NULL;
    pvb_s3_list_page page = {NULL, 0, false, NULL};
    void *array = NULL;
    field fields[] = {
        {"IsTruncated", NULL}, {"NextContinuationToken", NULL}, {"EncodingType", NULL}};

    if (out == NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "pvb_s3xml_parse_list: NULL output");
        goto out;
    }
    *out = page;
    rc = parse_root(xml, len, WHAT_LIST, "ListBucketResult", &doc, &root, err);
    if (rc != PVB_OK)
        goto out;
    rc = find_fields(root, fields, PVB_ARRAY_LEN(fields), false, WHAT_LIST, err);
    if (rc != PVB_OK)
        goto out;
    rc = listing_flags(fields[0].node, fields[2].node, WHAT_LIST, &page.truncated, err);
    if (rc != PVB_OK)
        goto out;
    rc = optional_text(fields[1].node, WHAT_LIST, &page.next_token, err);
    if (rc != PVB_OK)
        goto out;
    if (page.truncated && page.next_token == NULL) {
        rc = PVB_ERR(err, PVB_E_CORRUPT,
                     "S3 " WHAT_LIST " response is truncated but has no <NextContinuationToken>");
        goto out;
    }

    size_t n = count_children(root, "Contents");
    rc = alloc_array(n, sizeof(pvb_s3_object), WHAT_LIST, &array, err);
    if (rc != PVB_OK)
        goto out;
    page.objects = array;
    for (const xmlNode *child = root->children; child != NULL; child = child->next) {
        if (!is_elem(child, "Contents"))
            continue;
        /* counted before parsing so that a failure frees exactly what was filled */
        page.n_objects++;
        rc = parse_contents(child, page.n_objects - 1, &page.objects[page.n_objects - 1], err);
        if (rc != PVB_OK)
            goto out;
    }
    *out = page;

out:
    if (rc != PVB_OK)
        pvb_s3_list_page_free(&page);
    xmlFreeDoc(doc);
    return rc;
}

int pvb_s3xml_parse_error(const char *xml, size_t len, pvb_s3_error_doc *out)
{
    int rc = PVB_OK;
    xmlDoc *doc = NULL;
    const xmlNode *root = NULL;

    if (out == NULL) {
        rc = PVB_E_USAGE;
        goto out;
    }
    memset(out, 0, sizeof(*out));
    rc = parse_doc(xml, len, WHAT_ERROR, &doc, NULL);
    if (rc != PVB_OK)
        goto out;
    root = xmlDocGetRootElement(doc);
    if (!is_elem(root, "Error")) {
        rc = PVB_E_CORRUPT;
        goto out;
    }
    fill_error_doc(root, out);

out:
    xmlFreeDoc(doc);
    return rc;
}

int pvb_s3xml_parse_initiate(const char *xml, size_t len, char **upload_id, pvb_error *err)
{
    int rc = PVB_OK;
    xmlDoc *doc = NULL;
    const xmlNode *root = NULL;
    field fields[] = {{"UploadId", NULL}};

    if (upload_id == NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "pvb_s3xml_parse_initiate: NULL output");
        goto out;
    }
    *upload_id = NULL;
    rc = parse_root(xml, len, WHAT_INITIATE, "InitiateMultipartUploadResult", &doc, &root, err);
    if (rc != PVB_OK)
        goto out;
    rc = find_fields(root, fields, PVB_ARRAY_LEN(fields), false, WHAT_INITIATE, err);
    if (rc != PVB_OK)
        goto out;
    rc = required_text(fields[0].node, "UploadId", "the result", WHAT_INITIATE, upload_id, err);

out:
    xmlFreeDoc(doc);
    return rc;
}

int pvb_s3xml_parse_complete(const char *xml, size_t len, bool *failed, pvb_s3_error_doc *doc,
                             pvb_error *err)
{
    char shown_buf[SHOWN_MAX + 4];
    int rc = PVB_OK;
    xmlDoc *tree = NULL;

    if (doc != NULL)
        memset(doc, 0, sizeof(*doc));
    if (failed == NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "pvb_s3xml_parse_complete: NULL output");
        goto out;
    }
    *failed = false;
    rc = parse_doc(xml, len, WHAT_COMPLETE, &tree, err);
    if (rc != PVB_OK)
        goto out;
    const xmlNode *root = xmlDocGetRootElement(tree);
    if (is_elem(root, "Error")) {
        *failed = true;
        if (doc != NULL)
            fill_error_doc(root, doc);
    } else if (!is_elem(root, "CompleteMultipartUploadResult")) {
        rc = PVB_ERR(err, PVB_E_CORRUPT,
                     "S3 " WHAT_COMPLETE " response has root element <%s>, expected "
                     "<CompleteMultipartUploadResult> or <Error>",
                     shown((const char *)root->name, shown_buf));
    }

out:
    xmlFreeDoc(tree);
    return rc;
}

void pvb_s3_delete_result_free(pvb_s3_delete_result *r)
{
    if (r == NULL)
        return;
    for (size_t idx = 0; idx < r->n_errors; idx++)
        free(r->errors[idx].key);
    free(r->errors);
    r->errors = NULL;
    r->n_errors = 0;
    r->n_deleted = 0;
}

static int parse_delete_error(const xmlNode *entry, size_t index, pvb_s3_delete_error *out,
                              pvb_error *err)
{
    char context[64];
    field fields[] = {{"Key", NULL}, {"Code", NULL}, {"Message", NULL}};
    int rc = find_fields(entry, fields, PVB_ARRAY_LEN(fields), false, WHAT_DELETE, err);
    if (rc != PVB_OK)
        return rc;
    snprintf(context, sizeof(context), "<Error> #%zu", index + 1);
    rc = required_text(fields[0].node, "Key", context, WHAT_DELETE, &out->key, err);
    if (rc != PVB_OK)
        return rc;
    copy_text(fields[1].node, out->code, sizeof(out->code));
    copy_text(fields[2].node, out->message, sizeof(out->message));
    return PVB_OK;
}

int pvb_s3xml_parse_delete(const char *xml, size_t len, pvb_s3_delete_result *out, pvb_error *err)
{
    int rc = PVB_OK;
    xmlDoc *doc = NULL;
    const xmlNode *root = NULL;
    pvb_s3_delete_result result = {0, NULL, 0};
    void *array = NULL;

    if (out == NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "pvb_s3xml_parse_delete: NULL output");
        goto out;
    }
    *out = result;
    rc = parse_root(xml, len, WHAT_DELETE, "DeleteResult", &doc, &root, err);
    if (rc != PVB_OK)
        goto out;
    rc = alloc_array(count_children(root, "Error"), sizeof(pvb_s3_delete_error), WHAT_DELETE,
                     &array, err);
    if (rc != PVB_OK)
        goto out;
    result.errors = array;
    for (const xmlNode *child = root->children; child != NULL; child = child->next) {
        if (is_elem(child, "Deleted")) {
            result.n_deleted++;
        } else if (is_elem(child, "Error")) {
            result.n_errors++;
            rc = parse_delete_error(child, result.n_errors - 1, &result.errors[result.n_errors - 1],
                                    err);
            if (rc != PVB_OK)
                goto out;
        }
    }
    *out = result;

out:
    if (rc != PVB_OK)
        pvb_s3_delete_result_free(&result);
    xmlFreeDoc(doc);
    return rc;
}

void pvb_s3_uploads_page_free(pvb_s3_uploads_page *p)
{
    if (p == NULL)
        return;
    for (size_t idx = 0; idx < p->n_uploads; idx++) {
        free(p->uploads[idx].key);
        free(p->uploads[idx].upload_id);
    }
    free(p->uploads);
    free(p->next_key_marker);
    free(p->next_upload_id_marker);
    memset(p, 0, sizeof(*p));
}

static int parse_upload(const xmlNode *entry, size_t index, pvb_s3_upload *out, pvb_error *err)
{
    char context[SHOWN_MAX + 64];
    char shown_buf[SHOWN_MAX + 4];
    char *text = NULL;
    field fields[] = {{"Key", NULL}, {"UploadId", NULL}, {"Initiated", NULL}};
    int rc = find_fields(entry, fields, PVB_ARRAY_LEN(fields), false, WHAT_UPLOADS, err);
    if (rc != PVB_OK)
        goto out;
    snprintf(context, sizeof(context), "<Upload> #%zu", index + 1);
    rc = required_text(fields[0].node, "Key", context, WHAT_UPLOADS, &out->key, err);
    if (rc != PVB_OK)
        goto out;
    snprintf(context, sizeof(context), "upload of '%s'", shown(out->key, shown_buf));
    rc = required_text(fields[1].node, "UploadId", context, WHAT_UPLOADS, &out->upload_id, err);
    if (rc != PVB_OK)
        goto out;
    rc = required_text(fields[2].node, "Initiated", context, WHAT_UPLOADS, &text, err);
    if (rc != PVB_OK)
        goto out;
    if (!parse_time(text, &out->initiated)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT,
                     "S3 " WHAT_UPLOADS " response: %s has an invalid "
                     "<Initiated> '%s'",
                     context, shown(text, shown_buf));
        goto out;
    }

out:
    free(text);
    return rc;
}

int pvb_s3xml_parse_uploads(const char *xml, size_t len, pvb_s3_uploads_page *out, pvb_error *err)
{
    int rc = PVB_OK;
    xmlDoc *doc = NULL;
    const xmlNode *root = NULL;
    pvb_s3_uploads_page page = {NULL, 0, false, NULL, NULL};
    void *array = NULL;
    field fields[] = {{"IsTruncated", NULL},
                      {"NextKeyMarker", NULL},
                      {"NextUploadIdMarker", NULL},
                      {"EncodingType", NULL}};

    if (out == NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "pvb_s3xml_parse_uploads: NULL output");
        goto out;
    }
    *out = page;
    rc = parse_root(xml, len, WHAT_UPLOADS, "ListMultipartUploadsResult", &doc, &root, err);
    if (rc != PVB_OK)
        goto out;
    rc = find_fields(root, fields, PVB_ARRAY_LEN(fields), false, WHAT_UPLOADS, err);
    if (rc != PVB_OK)
        goto out;
    rc = listing_flags(fields[0].node, fields[3].node, WHAT_UPLOADS, &page.truncated, err);
    if (rc != PVB_OK)
        goto out;
    rc = optional_text(fields[1].node, WHAT_UPLOADS, &page.next_key_marker, err);
    if (rc != PVB_OK)
        goto out;
    rc = optional_text(fields[2].node, WHAT_UPLOADS, &page.next_upload_id_marker, err);
    if (rc != PVB_OK)
        goto out;
    if (page.truncated && page.next_key_marker == NULL) {
        rc = PVB_ERR(err, PVB_E_CORRUPT,
                     "S3 " WHAT_UPLOADS " response is truncated but has no <NextKeyMarker>");
        goto out;
    }

    rc = alloc_array(count_children(root, "Upload"), sizeof(pvb_s3_upload), WHAT_UPLOADS, &array,
                     err);
    if (rc != PVB_OK)
        goto out;
    page.uploads = array;
    for (const xmlNode *child = root->children; child != NULL; child = child->next) {
        if (!is_elem(child, "Upload"))
            continue;
        page.n_uploads++;
        rc = parse_upload(child, page.n_uploads - 1, &page.uploads[page.n_uploads - 1], err);
        if (rc != PVB_OK)
            goto out;
    }
    *out = page;

out:
    if (rc != PVB_OK)
        pvb_s3_uploads_page_free(&page);
    xmlFreeDoc(doc);
    return rc;
}

/* ---- request bodies ---- */

/* Length of the UTF-8 character at s (1 to 4) and its code point, or 0 when s does not start
 * a valid, shortest-form, non-surrogate one. */
static size_t utf8_char(const unsigned char *s, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t n;
    uint32_t v;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        v = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        v = c & 0x0Fu;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        v = c & 0x07u;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    for (size_t idx = 1; idx < n; idx++) {
        unsigned char cc = s[idx]; /* a NUL stops here: it is no continuation byte */
        if (cc < (idx == 1 ? lo : 0x80) || cc > (idx == 1 ? hi : 0xBF))
            return 0;
        v = (v << 6) | (cc & 0x3Fu);
    }
    *cp = v;
    return n;
}

/* Append s as XML character data. Beyond the five markup characters, CR is written as a
 * character reference, or the receiving parser would normalise it (and CR LF) to LF. XML 1.0
 * cannot carry the other C0 controls at all, even as references, nor U+FFFE and U+FFFF: those
 * are refused, as is invalid UTF-8 (S3 would answer MalformedXML). */
static int append_text(pvb_buf *out, const char *s, const char *what, pvb_error *err)
{
    char shown_buf[SHOWN_MAX + 4];
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p; /* start of bytes not yet appended */
    int rc = PVB_OK;

    while (*p != '\0') {
        uint32_t cp = 0;
        size_t n = utf8_char(p, &cp);
        if (n == 0) {
            return PVB_ERR(err, PVB_E_USAGE, "%s '%s' is not valid UTF-8 (byte %zu)", what,
                           shown(s, shown_buf), (size_t)(p - (const unsigned char *)s));
        }
        if ((cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0xFFFE || cp == 0xFFFF) {
            return PVB_ERR(err, PVB_E_USAGE,
                           "%s '%s' has character U+%04X, which XML 1.0 cannot carry", what,
                           shown(s, shown_buf), (unsigned)cp);
        }
        const char *esc = NULL;
        switch (cp) {
        case '&':
            esc = "&amp;";
            break;
        case '<':
            esc = "&lt;";
            break;
        case '>':
            esc = "&gt;";
            break;
        case '"':
            esc = "&quot;";
            break;
        case '\'':
            esc = "&apos;";
            break;
        case '\r':
            esc = "&#13;";
            break;
        default:
            break;
        }
        if (esc != NULL) {
            rc = pvb_buf_append(out, run, (size_t)(p - run), err);
            if (rc == PVB_OK)
                rc = pvb_buf_append(out, esc, strlen(esc), err);
            if (rc != PVB_OK)
                return rc;
            run = p + n;
        }
        p += n;
    }
    return pvb_buf_append(out, run, (size_t)(p - run), err);
}

static int append_lit(pvb_buf *out, const char *s, pvb_error *err)
{
    return pvb_buf_append(out, s, strlen(s), err);
}

int pvb_s3xml_build_complete(const pvb_s3_part *parts, size_t n, pvb_buf *out, pvb_error *err)
{
    int rc = PVB_OK;
    char num[32];

    if (out == NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "pvb_s3xml_build_complete: NULL output");
        goto out;
    }
    pvb_buf_reset(out);
    if (n == 0 || n > PVB_S3XML_PARTS_MAX || parts == NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "a multipart upload has 1 to %d parts, not %zu",
                     PVB_S3XML_PARTS_MAX, n);
        goto out;
    }
    rc = append_lit(out, XML_DECL "<CompleteMultipartUpload xmlns=\"" S3_NAMESPACE "\">", err);
    for (size_t idx = 0; idx < n && rc == PVB_OK; idx++) {
        const pvb_s3_part *part = &parts[idx];
        if (part->number < 1 || part->number > PVB_S3XML_PARTS_MAX ||
            (idx > 0 && part->number <= parts[idx - 1].number)) {
            rc = PVB_ERR(err, PVB_E_USAGE,
                         "part number %d (entry %zu) is out of range or order: parts are "
                         "numbered 1 to %d in ascending order",
                         part->number, idx, PVB_S3XML_PARTS_MAX);
            goto out;
        }
        if (part->etag == NULL || part->etag[0] == '\0') {
            rc = PVB_ERR(err, PVB_E_USAGE, "part %d has no ETag", part->number);
            goto out;
        }
        snprintf(num, sizeof(num), "%d", part->number);
        rc = append_lit(out, "<Part><PartNumber>", err);
        if (rc == PVB_OK)
            rc = append_lit(out, num, err);
        if (rc == PVB_OK)
            rc = append_lit(out, "</PartNumber><ETag>", err);
        if (rc == PVB_OK)
            rc = append_text(out, part->etag, "ETag", err);
        if (rc == PVB_OK)
            rc = append_lit(out, "</ETag></Part>", err);
    }
    if (rc == PVB_OK)
        rc = append_lit(out, "</CompleteMultipartUpload>", err);

out:
    if (rc != PVB_OK)
        pvb_buf_reset(out);
    return rc;
}

int pvb_s3xml_build_delete(const char *const *keys, size_t n, bool quiet, pvb_buf *out,
                           pvb_error *err)
{
    int rc = PVB_OK;

    if (out == NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "pvb_s3xml_build_delete: NULL output");
        goto out;
    }
    pvb_buf_reset(out);
    if (n == 0 || n > PVB_S3XML_DELETE_MAX || keys == NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "one S3 " WHAT_DELETE " request takes 1 to %d keys, not %zu",
                     PVB_S3XML_DELETE_MAX, n);
        goto out;
    }
    rc = append_lit(out, XML_DECL "<Delete xmlns=\"" S3_NAMESPACE "\">", err);
    if (rc == PVB_OK && quiet)
        rc = append_lit(out, "<Quiet>true</Quiet>", err);
    for (size_t idx = 0; idx < n && rc == PVB_OK; idx++) {
        if (keys[idx] == NULL || keys[idx][0] == '\0') {
            rc = PVB_ERR(err, PVB_E_USAGE, "key %zu of a " WHAT_DELETE " request is empty", idx);
            goto out;
        }
        rc = append_lit(out, "<Object><Key>", err);
        if (rc == PVB_OK)
            rc = append_text(out, keys[idx], "key", err);
        if (rc == PVB_OK)
            rc = append_lit(out, "</Key></Object>", err);
    }
    if (rc == PVB_OK)
        rc = append_lit(out, "</Delete>", err);

out:
    if (rc != PVB_OK)
        pvb_buf_reset(out);
    return rc;
}
