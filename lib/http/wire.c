/* What a request may put on the wire and what a response may claim, judged
 * before curl sees either: a method and header names are tokens, a header
 * line is one line and frames the body as the body is, and only the methods
 * RFC 9110 calls idempotent are repeated after an answer that may have had
 * an effect; a response's Content-Length that no body can reach is a body
 * cut short, and a request head too large for curl is named as such.  Each
 * rule exists because curl sends what it is given (request.c calls them). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "http_internal.h"
#include "ascii.h"

/* Whether c may be in a token (RFC 9110 5.6.2): a method, a header name. */
static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A method is a token (RFC 9110 9.1): "VERSION-CONTROL" and the other
 * WebDAV methods with a hyphen were refused when only letters were let
 * through. */
bool async__http_method_ok(const char *m)
{
    if (!*m || strlen(m) > 16) return false;
    for (; *m; m++)
        if (!tchar((unsigned char)*m)) return false;
    return true;
}

/* The methods RFC 9110 (9.2.2) calls idempotent, whose request may be
 * repeated after an answer that may have had an effect (a 5xx, a connection
 * dropped once the request was out); m is upper case, NULL for GET.  Every
 * other method, PATCH and those the client does not know included, is
 * repeated only where the server did not act (transient_curl,
 * transient_status).  Until round 18 every method but POST was repeated. */
bool async__http_idempotent(const char *m)
{
    static const char *const names[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
    if (!m) return true;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(m, names[i]) == 0) return true;
    return false;
}

/* Whether the name of header line h (up to its colon) is a token (RFC 9110
 * 5.1, 5.6.2), right up to the colon (RFC 9112 5.1 has servers refuse a
 * blank there, and some read the name without it).  A name curl would send
 * as it is but a server may read as another ("Content-Length\v", a name
 * with a space inside, an empty one) is no name. */
static bool name_is_token(const char *h)
{
    const char *p = h;
    while (*p != ':' && tchar((unsigned char)*p)) p++;
    return p != h && *p == ':';
}

/* Whether header line h (a token name, then its colon: name_is_token), if
 * it is a Content-Length, states the body's length n, and if it is a
 * Transfer-Encoding, frames the body.  curl sends a caller's Content-Length
 * in place of its own and the body whatever it says, so one that does not
 * match frames the request wrongly: the rest of the body is read as the
 * next request on the connection (request smuggling), and its answer goes
 * to the client's next request there.  An empty value is curl's way to
 * send none, right for a length only without a body (has_body). */
static bool length_agrees(const char *h, size_t n, bool has_body)
{
    const char *colon = strchr(h, ':');
    size_t nl = (size_t)(colon - h);
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    if (nl == 17 && async__ascii_ncasecmp(h, "Transfer-Encoding", 17) == 0) {
        /* curl chunks a body itself when told "chunked", but sends any
         * other value beside a Content-Length (a request RFC 9112 6.1 says
         * a server must refuse, and one a lenient one misreads), and
         * "chunked" without a body with no last chunk: the server reads
         * the next request as the body.  Only "chunked" beside a body, as
         * written here (with "CHUNKED " the server still waited for chunks
         * at the test's timeout), or an empty value, frames a request. */
        return !*v || (has_body && strcmp(v, "chunked") == 0);
    }
    if (nl != 14 || async__ascii_ncasecmp(h, "Content-Length", 14) != 0) return true;
    if (!*v) return !has_body;
    size_t len = 0;
    bool over = false;
    for (; *v >= '0' && *v <= '9'; v++) {
        over |= len > (SIZE_MAX - 9) / 10;
        len = len * 10 + (size_t)(*v - '0');
    }
    while (*v == ' ' || *v == '\t') v++;
    return !*v && !over && len == n;
}

bool async__http_header_ok(const char *h, size_t body_len, bool has_body)
{
    /* A CR or LF would end the line early: what follows would go out as
     * more headers, or as a second request on the connection. */
    return strchr(h, ':') && !strpbrk(h, "\r\n") && name_is_token(h) &&
           length_agrees(h, body_len, has_body);
}

/* Whether an HTTP/1 response that curl saw end without error was cut short
 * all the same: its Content-Length is a number beyond curl_off_t, which
 * libcurl (7.88 and 8) does not refuse but reads as "until the connection
 * closes", so a server that announced 10^22 bytes and closed after two had
 * them reported as the whole body.  No body can be that long, so the claim
 * is false however many bytes came; chunked framing, which overrides the
 * length, and the answers that carry no body (HEAD, 204, 304) are left out.
 * Writes why into the handle's error buffer. */
bool async__http_length_beyond_reach(http_xfer_t *x, long status)
{
    if (x->status_line_len < 7 || memcmp(x->status_line, "HTTP/1", 6) != 0) return false;
    if (status == 204 || status == 304 || (x->method && strcmp(x->method, "HEAD") == 0))
        return false;
    http_header_span_t sp;
    size_t at = 0;
    const char *len = NULL;
    size_t len_n = 0;
    while (async__http_header_next(&x->easy->hdr, &at, &sp)) {
        if (sp.name_len == 17 && async__ascii_ncasecmp(sp.name, "Transfer-Encoding", 17) == 0) return false;
        if (sp.name_len != 14 || async__ascii_ncasecmp(sp.name, "Content-Length", 14) != 0) continue;
        len = sp.value;
        len_n = sp.value_len;
    }
    if (!len) return false;
    size_t i = 0;
    while (i < len_n && len[i] == '0') i++;
    const char *d = len + i;
    size_t nd = len_n - i;
    for (size_t k = 0; k < nd; k++)
        if (d[k] < '0' || d[k] > '9') return false; /* curl refused it already */
    static const char max[] = "9223372036854775807"; /* INT64_MAX, curl_off_t's */
    if (nd < sizeof max - 1 || (nd == sizeof max - 1 && memcmp(d, max, nd) <= 0)) return false;
    snprintf(x->easy->errbuf, sizeof x->easy->errbuf,
             "transfer closed before the %.40s%s bytes its Content-Length announced", len,
             len_n > 40 ? "..." : "");
    return true;
}

/* The bytes of x's request head that are the caller's: its URL, its header
 * lines (the User-Agent with them) and a body curl would put beside them. */
size_t async__http_head_bytes(const http_xfer_t *x)
{
    size_t n = strlen(x->url);
    const struct curl_slist *l = x->headers ? x->headers : x->http->ua_header;
    for (; l; l = l->next) n += strlen(l->data) + 2;
    /* Or curl's own line for it (CURLOPT_USERAGENT). */
    if (!x->http->ua_header) n += strlen(x->http->user_agent) + 14;
    if (x->body && x->body_len <= CURL_POST_INLINE) n += x->body_len;
    return n;
}
