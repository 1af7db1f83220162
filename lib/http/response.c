/* HTTP requests onto easy handles, and responses off them: the options each
 * attempt runs with, the body and header callbacks, the response object with
 * its headers, timings and precise error message, the JSON helper (jansson)
 * and URL building with query escaping.  All memory of a response comes from
 * the allocator seam and is released by async_http_response_free. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <jansson.h>
#include "ca_store.h"
#include "ascii.h"
#include "decode.h"
#include "http_internal.h"

/* --- buffers --------------------------------------------------------------- */

/* Appends n bytes to b, to be filled by the caller: their address, or NULL
 * without memory. */
static char *buf_room(http_buf_t *b, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = async__realloc(b->data, cap);
        if (!d) return NULL;
        b->data = d;
        b->cap = cap;
    }
    char *at = b->data + b->len;
    b->len += n;
    b->data[b->len] = 0;
    return at;
}

int async__http_buf_add(http_buf_t *b, const void *p, size_t n)
{
    char *at = buf_room(b, n);
    if (!at) return ASYNC_ENOMEM;
    memcpy(at, p, n);
    return 0;
}

void async__http_buf_free(http_buf_t *b)
{
    async__free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* --- curl callbacks -------------------------------------------------------- */

/* Keeps len more bytes of the (decoded) body: 0, or 1 when the body would
 * pass max_body or memory ran out (too_big, oom). */
static int body_keep(void *ud, const char *p, size_t len)
{
    http_xfer_t *x = ud;
    if (x->resp_body.len + len > x->http->opts.max_body) {
        x->too_big = true;
        return 1;
    }
    if (async__http_buf_add(&x->resp_body, p, len)) {
        x->oom = true;
        return 1;
    }
    return 0;
}

/* The decoder for the attempt's response, from the values of its
 * Content-Encoding headers joined in the order sent; x->dec stays NULL
 * for a body sent as it is.  Returns nonzero when the body cannot be
 * decoded (dec_failed or oom set). */
static int decoder_for(http_easy_t *h, http_xfer_t *x)
{
    x->dec_looked = true;
    char codings[256];
    size_t n = 0;
    http_header_span_t sp;
    size_t at = 0;
    while (async__http_header_next(&h->hdr, &at, &sp)) {
        if (sp.name_len != 16 || async__ascii_ncasecmp(sp.name, "Content-Encoding", 16)) continue;
        if (n + sp.value_len + 2 > sizeof codings) {
            snprintf(h->dec_err, sizeof h->dec_err, "Content-Encoding too long");
            x->dec_failed = true;
            return 1;
        }
        if (n) codings[n++] = ',';
        memcpy(codings + n, sp.value, sp.value_len);
        n += sp.value_len;
    }
    int err = async__http_decoder_new(&x->dec, codings, n, body_keep, x, h->dec_err,
                                      sizeof h->dec_err);
    if (err == ASYNC_ENOMEM) x->oom = true;
    else if (err) x->dec_failed = true;
    return err;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    http_easy_t *h = ud;
    http_xfer_t *x = h->x;
    size_t len = size * n;
    h->hdr_start = false; /* what follows the body (trailers) is no status line */
    /* Each refusal below makes curl fail the transfer with CURLE_WRITE_ERROR. */
    if (x->http->decode_self) {
        if (!x->dec_looked && decoder_for(h, x)) return 0;
        if (x->dec) {
            int err = async__http_decoder_write(x->dec, p, len, h->dec_err, sizeof h->dec_err);
            if (err == ASYNC_ENOMEM) x->oom = true;
            else if (err < 0) x->dec_failed = true;
            return err ? 0 : len;
        }
    }
    return body_keep(x, p, len) ? 0 : len;
}

/* isspace() of the C locale, without its table lookup. */
static bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* The version of a status line after its "HTTP/", as curl would report it
 * (CURLINFO_HTTP_VERSION), or 0 for one to ask curl about: reading it here
 * spares a curl_easy_getinfo per response. */
static long status_version(const char *v, size_t n)
{
    if (n < 2) return 0;
    if (n >= 4 && v[0] == '1' && v[1] == '.' && v[3] == ' ') {
        if (v[2] == '1') return CURL_HTTP_VERSION_1_1;
        if (v[2] == '0') return CURL_HTTP_VERSION_1_0;
        return 0;
    }
    if (v[1] != ' ') return 0;
    if (v[0] == '2') return CURL_HTTP_VERSION_2_0;
    if (v[0] == '3') return CURL_HTTP_VERSION_3;
    return 0;
}

/* A 303 (See Other) names a resource to GET, whatever the request's method
 * (RFC 9110 15.4.4), and curl does switch its own method to GET there; but
 * a method set by name (CURLOPT_CUSTOMREQUEST: DELETE, PUT, PATCH...) is
 * what curl sends on every request of the transfer, the redirect's
 * included, so a DELETE answered "303, see /list" deleted /list.  The name
 * goes when the 303's header block ends, before curl follows it; the next
 * request on the handle sets its own (h->plain_get, async__http_easy_setup),
 * and so does a retry of this one. */
static void see_other(http_easy_t *h)
{
    h->x->custom = false;
    h->plain_get = false;
    (void)curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, (char *)NULL);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    http_easy_t *h = ud;
    size_t len = size * n;
    bool start = h->hdr_start;
    /* A NUL byte in a header line would cut its name or value short as a C
     * string (and leave the blanks before it untrimmed).  RFC 9110 5.5 says
     * reject the message or replace it; curl 8 rejects it ("Nul byte in
     * header"), as this does for curl 7's sake: the transfer fails. */
    if (__builtin_expect(memchr(p, '\0', len) != NULL, 0)) {
        h->x->bad_header = true; /* curl fails the transfer with CURLE_WRITE_ERROR */
        return 0;
    }
    /* The blank line ends a header block; whatever comes next, if anything,
     * starts the next response's (see hdr_start). */
    h->hdr_start = (len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n');
    if (h->hdr_start && h->x->custom && async__http_status_code(h->x) == 303) see_other(h);
    if (start && len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* A new status line (the first, or after a redirect or a 100
         * Continue): the headers kept are those of the final response.  Only
         * a block's first line is one, as for curl: a server's header line
         * "HTTP/1.1 200 OK: x" after a 500's status line is a header, not a
         * status that would turn the 500 into a success.  The line is kept
         * as it is; its code, version and reason are read when needed, for
         * most responses only the code and the version. */
        http_xfer_t *x = h->x;
        h->hdr.len = 0;
        h->n_hdr = 0;
        /* Its body, if any, is decoded by its own Content-Encoding. */
        async__http_decoder_free(x->dec);
        x->dec = NULL;
        x->dec_looked = false;
        size_t keep = len < sizeof x->status_line - 1 ? len : sizeof x->status_line - 1;
        memcpy(x->status_line, p, keep);
        x->status_line[keep] = 0;
        x->status_line_len = keep;
        return len;
    }
    /* Split once, as it comes: a line costs one scan for its colon and one
     * copy, and the response later copies all the headers in one go.  A
     * line without a colon (the blank line, a folded line, junk) is no
     * header and is not kept. */
    const char *colon = memchr(p, ':', len);
    if (!colon) return len;
    const char *v = colon + 1, *e = p + len;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    while (e > v && is_space((unsigned char)e[-1])) e--;
    size_t nl = (size_t)(colon - p), vl = (size_t)(e - v);
    char *d = buf_room(&h->hdr, 2 * sizeof(size_t) + nl + vl + 2);
    if (!d) {
        h->x->oom = true; /* curl fails the transfer with CURLE_WRITE_ERROR */
        return 0;
    }
    memcpy(d, &nl, sizeof nl);
    memcpy(d + sizeof nl, &vl, sizeof vl);
    d += 2 * sizeof(size_t);
    memcpy(d, p, nl);
    d[nl] = 0;
    memcpy(d + nl + 1, v, vl);
    d[nl + 1 + vl] = 0;
    h->n_hdr++; /* curl hands over one header line per call */
    return len;
}

bool async__http_header_next(const http_buf_t *raw, size_t *at, http_header_span_t *out)
{
    if (!raw->data || raw->len < 2 * sizeof(size_t) || *at > raw->len - 2 * sizeof(size_t))
        return false;
    const char *r = raw->data + *at;
    memcpy(&out->name_len, r, sizeof(size_t));
    memcpy(&out->value_len, r + sizeof(size_t), sizeof(size_t));
    out->name = r + 2 * sizeof(size_t);
    out->value = out->name + out->name_len + 1;
    *at += 2 * sizeof(size_t) + out->name_len + out->value_len + 2;
    return true;
}

/* The status line's part after "HTTP/": its version, then its code. */
long async__http_status_code(const http_xfer_t *x)
{
    const char *p = x->status_line, *e = p + x->status_line_len;
    const char *sp = x->status_line_len > 5 ? memchr(p + 5, ' ', (size_t)(e - p - 5)) : NULL;
    if (!sp || e - sp < 4) return 0;
    const char *c = sp + 1;
    if (c[0] < '1' || c[0] > '9' || c[1] < '0' || c[1] > '9' || c[2] < '0' || c[2] > '9')
        return 0;
    if (e - c > 3 && c[3] != ' ' && c[3] != '\r' && c[3] != '\n') return 0;
    return (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
}

/* The reason phrase of x's status line (the text after its code), cut to
 * len - 1 bytes, into out. */
static void status_reason(const http_xfer_t *x, char *out, size_t len)
{
    const char *p = x->status_line, *e = p + x->status_line_len;
    const char *sp = memchr(p, ' ', x->status_line_len);
    const char *rs = sp ? memchr(sp + 1, ' ', (size_t)(e - sp - 1)) : NULL;
    size_t rl = 0;
    if (rs) {
        rs++;
        while (rs + rl < e && rs[rl] != '\r' && rs[rl] != '\n') rl++;
        if (rl >= len) rl = len - 1;
        memcpy(out, rs, rl);
    }
    out[rl] = 0;
}

/* --- one attempt's options ------------------------------------------------- */

/* curl's socket open and close, counted: open sockets minus running
 * transfers is the number of idle connections that a new transfer could
 * reuse (see async__http_easy_setup).  The open is on behalf of the running
 * transfer, which keeps the errno of a failed socket(): curl itself reports
 * only "Couldn't connect" and leaves CURLINFO_OS_ERRNO at 0. */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    http_xfer_t *x = ((http_easy_t *)ud)->x;
    curl_socket_t s = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (s != CURL_SOCKET_BAD) {
        x->t.shard->n_sockets++;
        async__http_sock_opened(x->t.shard, s);
    } else {
        x->socket_errno = errno;
    }
    return s;
}

/* curl keeps the close callback and its data with the connection, so the
 * shard that opened a socket is the one that counts its close. */
static int on_close_socket(void *ud, curl_socket_t s)
{
    http_shard_t *sh = ud;
    sh->n_sockets--;
    async__http_sock_closing(sh, s);
    return close(s);
}

/* libcurl 7.88 formats a User-Agent given as CURLOPT_USERAGENT twice for
 * each transfer, into "User-Agent: %s\r\n" when the transfer starts and
 * into the request with curl's printf, which appends byte by byte: some
 * 3,300 instructions a GET for "libasync/0.x".  Sent as a header of the
 * request's own it is copied into the request once.  curl still sends a
 * CURLOPT_USERAGENT, and no header of the request's, to a proxy's CONNECT
 * (CURLHEADER_SEPARATE, curl's default), so a client that may go through a
 * proxy keeps curl's way. */
int async__http_ua_header(async_http_t *http)
{
    if (!http->no_proxy_env || !http->user_agent[0]) return 0;
    size_t n = strlen("User-Agent: ") + strlen(http->user_agent) + 1;
    char *line = async__malloc(n);
    if (!line) return ASYNC_ENOMEM;
    snprintf(line, n, "User-Agent: %s", http->user_agent);
    http->ua_header = curl_slist_append(NULL, line);
    async__free(line);
    return http->ua_header ? 0 : ASYNC_ENOMEM;
}

/* Options every request of the client shares, set once when an easy handle
 * is made: pooled handles keep them, so a reused handle is not reset (a
 * reset frees curl's buffers only for the next request to allocate them). */
static int easy_init(async_http_t *http, http_easy_t *h)
{
    CURL *e = h->curl;
    int bad = 0;
#define SET(opt, val) bad |= curl_easy_setopt(e, opt, val) != CURLE_OK
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, h->errbuf);
    SET(CURLOPT_WRITEDATA, (void *)h);
    SET(CURLOPT_HEADERDATA, (void *)h);
    SET(CURLOPT_OPENSOCKETDATA, (void *)h);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 1L);
    SET(CURLOPT_MAXREDIRS, 10L);
    /* Without a header of its own (ua_header), the User-Agent is curl's. */
    if (!http->ua_header) SET(CURLOPT_USERAGENT, http->user_agent);
    /* Off unless asked: curl's decoder setup costs about a fifth of the CPU
     * of a small request on loopback. */
    if (http->accept_encoding) SET(CURLOPT_ACCEPT_ENCODING, http->accept_encoding);
    /* curl sends the Accept-Encoding; the client decodes (decode.h). */
    if (http->decode_self) SET(CURLOPT_HTTP_CONTENT_DECODING, 0L);
    bad |= async__http_ca_setup(e, http->ca_file, http->ca_shared) != CURLE_OK; /* ca_store.h */
    SET(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SET(CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    if (http->opts.no_http2) SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    /* No proxy variable was set when the client was made: an empty proxy
     * and an empty no-proxy list are curl's "none" without its getenv calls
     * for them on each transfer (libcurl 7.88, url.c,
     * create_conn_helper_init_proxy).  A variable set later is not seen,
     * as for the client's CA choice (ca_store.c). */
    if (http->no_proxy_env) {
        SET(CURLOPT_PROXY, "");
        SET(CURLOPT_NOPROXY, "");
    }
    return bad ? ASYNC_EINVAL : 0;
}

http_easy_t *async__http_easy_new(async_http_t *http)
{
    http_easy_t *h = async__calloc(1, sizeof *h);
    if (!h) return NULL;
    /* Nothing is set yet: values no request has make the first set them. */
    h->timeout_ms = h->connect_timeout_ms = h->fresh_connect = h->pipewait = -1;
    h->curl = curl_easy_init();
    if (!h->curl || easy_init(http, h)) {
        async__http_easy_free(h);
        return NULL;
    }
    return h;
}

void async__http_easy_free(http_easy_t *h)
{
    if (!h) return;
    if (h->curl) curl_easy_cleanup(h->curl);
    curl_url_cleanup(h->uh); /* after the handle that pointed at it */
    async__http_buf_free(&h->hdr);
    async__free(h);
}

/* Sets opt to val unless the handle already has it (*last). */
static int set_long(CURL *e, CURLoption opt, long val, long *last)
{
    if (*last == val) return 0;
    if (curl_easy_setopt(e, opt, val) != CURLE_OK) return 1;
    *last = val;
    return 0;
}

/* Gives curl url for the handle's next transfers.  libcurl 7.88 parses a URL
 * set as a string (CURLOPT_URL) anew at the start of every transfer and
 * formats it back (url.c, parseurlandfillconn: curl_url_set, then
 * curl_url_get of the whole URL), some 6,000 instructions a GET; from a
 * parsed one (CURLOPT_CURLU) it copies the parts (curl_url_dup).  So a URL
 * the handle remembers (parsed, a request to the same URL sets nothing) is
 * parsed here, once, with the flags curl parses a string with, into a fresh
 * CURLU: one that held a URL would resolve a scheme-less one against it.  A
 * URL that is not remembered, or that does not parse, goes to curl as a
 * string: curl then fails the transfer with its own error, as before.
 * Returns nonzero if curl refused an option. */
static int set_url(http_easy_t *h, const char *url, bool parse)
{
    CURLU *uh = parse ? curl_url() : NULL;
    if (uh && curl_url_set(uh, CURLUPART_URL, url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) !=
                  CURLUE_OK) {
        curl_url_cleanup(uh);
        uh = NULL;
    }
    int bad = 0;
    /* curl takes the URL string of a transfer from CURLOPT_URL, and formats
     * it from the CURLU when that is NULL.  It reads the CURLU only when a
     * transfer starts, so the old one may go now. */
    bad |= curl_easy_setopt(h->curl, CURLOPT_CURLU, uh) != CURLE_OK;
    bad |= curl_easy_setopt(h->curl, CURLOPT_URL, uh ? NULL : url) != CURLE_OK;
    curl_url_cleanup(h->uh);
    h->uh = uh;
    return bad;
}

/* The options of this request that differ from what the previous request on
 * the same handle set. */
int async__http_easy_setup(http_xfer_t *x, http_shard_t *sh)
{
    async_http_t *http = x->http;
    http_easy_t *h = x->easy;
    CURL *e = h->curl;
    int bad = 0;
    h->x = x;
    h->errbuf[0] = 0;
    x->status_line_len = 0;
    x->status = 0;
    h->hdr.len = 0;
    h->n_hdr = 0;
    h->hdr_start = true;
    x->socket_errno = 0;
    x->too_big = x->oom = x->bad_header = false;
    /* As the block below sets CURLOPT_CUSTOMREQUEST (see_other). */
    x->custom = x->method && strcmp(x->method, "HEAD") != 0 &&
                (strcmp(x->method, "POST") != 0 || !x->body);
    async__http_decoder_free(x->dec);
    x->dec = NULL;
    x->dec_looked = x->dec_failed = false;
    size_t ul = strlen(x->url);
    if (ul != h->url_len || memcmp(h->url, x->url, ul) != 0) {
        bool keep = ul < sizeof h->url;
        bad |= set_url(h, x->url, keep);
        keep = keep && !bad;
        if (keep) memcpy(h->url, x->url, ul);
        h->url_len = keep ? ul : 0;
    }
    if (h->close_shard != sh) {
        /* curl keeps this with each connection it opens from now on. */
        SET(CURLOPT_CLOSESOCKETDATA, (void *)sh);
        h->close_shard = sh;
    }
    bad |= set_long(e, CURLOPT_TIMEOUT_MS, x->timeout_ms, &h->timeout_ms);
    bad |= set_long(e, CURLOPT_CONNECTTIMEOUT_MS, x->connect_timeout_ms, &h->connect_timeout_ms);
    bool plain = !x->headers && !x->body && !x->method;
    if (!plain || !h->plain_get) {
        SET(CURLOPT_HTTPHEADER, x->headers ? x->headers : http->ua_header);
        /* Back to a plain GET: clears POST, NOBODY and UPLOAD, then the
         * custom method string. */
        SET(CURLOPT_HTTPGET, 1L);
        SET(CURLOPT_CUSTOMREQUEST, (char *)NULL);
        if (x->body) {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
            SET(CURLOPT_POSTFIELDS, x->body);
        }
        if (x->method) {
            if (strcmp(x->method, "HEAD") == 0) SET(CURLOPT_NOBODY, 1L);
            else if (strcmp(x->method, "POST") != 0 || !x->body) SET(CURLOPT_CUSTOMREQUEST, x->method);
        }
        /* A method with a body other than POST goes as a POST renamed, and
         * curl turns a POST into a GET on a 301 or 302 but keeps the name:
         * a PUT redirected went out again as a PUT without its body.  Such
         * a request keeps its body there (RFC 9110 15.4.2, 15.4.3: only a
         * POST may become a GET); a real POST is left as curl and browsers
         * treat it. */
        bool renamed = x->body && x->method && strcmp(x->method, "POST") != 0;
        SET(CURLOPT_POSTREDIR, renamed ? (long)(CURL_REDIR_POST_301 | CURL_REDIR_POST_302) : 0L);
        h->plain_get = plain;
    }
    /* Wait for a connection that may multiplex instead of opening one more;
     * only where HTTP/2 can be negotiated (TLS ALPN). */
    bool h2 = x->h2;
    bad |= set_long(e, CURLOPT_PIPEWAIT, (long)h2, &h->pipewait);
    x->t.multiplex = h2; /* sh has room for it: async__http_shard_pick */
    /* libcurl 7.88 looks for a reusable connection by walking every
     * connection to the host, so a burst of n new connections costs n^2.
     * When every open socket already carries a transfer, no HTTP/1
     * connection can be reused: skip the walk and connect at once. */
    /* Under a connection limit a transfer may queue until a connection
     * frees up, and must then reuse it. */
    long host = http->opts.max_host_connections, total = http->opts.max_connections;
    bool queued = (host && sh->n_running >= (size_t)host) ||
                  (total && sh->n_running >= (size_t)total);
    long fresh = !h2 && !queued && sh->n_sockets <= sh->n_running;
    bad |= set_long(e, CURLOPT_FRESH_CONNECT, fresh, &h->fresh_connect);
#undef SET
    if (bad) {
        /* What curl holds is unknown now: the next request sets it all. */
        h->timeout_ms = h->connect_timeout_ms = h->fresh_connect = h->pipewait = -1;
        h->close_shard = NULL;
        h->plain_get = false;
        h->url_len = 0;
    }
    return bad ? ASYNC_EINVAL : 0;
}

/* --- responses ------------------------------------------------------------- */

static double secs(CURL *e, CURLINFO info)
{
    curl_off_t us = 0;
    if (curl_easy_getinfo(e, info, &us) != CURLE_OK) return 0;
    return (double)us / 1e6;
}

/* A response, its request, a flag of the response's and the URL of a
 * request without a query, in one allocation: the request's memory stays
 * until the response is freed (a few hundred bytes), which spares two
 * allocations and their frees per request. */
typedef struct resp_block {
    async_http_response_t r; /* first: a response's address is its block's */
    bool headers_in_body;    /* r.headers lies in r.body's spare room */
    http_xfer_t x;
    char url[];              /* x.url and then r.url when they point here */
} resp_block_t;

http_xfer_t *async__http_xfer_alloc(const char *url)
{
    size_t ul = url ? strlen(url) + 1 : 0;
    resp_block_t *b = async__calloc(1, sizeof *b + ul);
    if (!b) return NULL;
    b->x.resp = &b->r;
    if (url) {
        memcpy(b->url, url, ul);
        b->x.url = b->url;
    }
    return &b->x;
}

void async__http_xfer_free(http_xfer_t *x)
{
    resp_block_t *b = container_of(x, resp_block_t, x);
    if (x->url != b->url) async__free(x->url);
    async__free(x->method);
    async__free(x->body);
    if (x->headers) curl_slist_free_all(x->headers);
    async__http_decoder_free(x->dec);
    async__http_buf_free(&x->resp_body);
    if (x->resp) async_http_response_free(x->resp);
}

/* Gives the response the n headers on_header kept: a copy of their block
 * (names and values are NUL-terminated there already) and the array
 * pointing into it.  A NUL byte inside a name or value thus ends it, as it
 * would any C string.  Copy and array go into the room left after the body
 * (body, of capacity cap) when they fit, as they do for a small response in
 * the body buffer's first 512 bytes, and into an allocation of their own
 * otherwise. */
static int parse_headers(async_http_response_t *r, const http_buf_t *raw, size_t n, size_t cap)
{
    if (!n || !raw->len) return 0;
    size_t need = n * sizeof(async_http_header_t) + raw->len;
    size_t align = _Alignof(async_http_header_t);
    size_t off = (r->body_len + 1 + align - 1) & ~(align - 1);
    char *block;
    if (cap >= off && cap - off >= need) {
        block = r->body + off;
        ((resp_block_t *)r)->headers_in_body = true;
    } else if (!(block = async__malloc(need))) {
        return ASYNC_ENOMEM;
    }
    async_http_header_t *h = (async_http_header_t *)block;
    char *s = block + n * sizeof *h;
    memcpy(s, raw->data, raw->len);
    http_buf_t copy = {s, raw->len, raw->len};
    http_header_span_t sp;
    size_t at = 0, k = 0;
    while (k < n && async__http_header_next(&copy, &at, &sp)) {
        h[k].name = sp.name;
        h[k].value = sp.value;
        k++;
    }
    r->headers = h;
    r->n_headers = k;
    return 0;
}

static const char *version_name(long v)
{
    switch (v) {
    case CURL_HTTP_VERSION_1_0: return "HTTP/1.0";
    case CURL_HTTP_VERSION_1_1: return "HTTP/1.1";
    case CURL_HTTP_VERSION_2_0: return "HTTP/2";
    case CURL_HTTP_VERSION_3: return "HTTP/3";
    default: return "";
    }
}

int async__http_response_build(http_xfer_t *x, CURLcode rc)
{
    async_http_response_t *r = x->resp;
    /* Built once, when the request ends, in a block that was zeroed when it
     * was allocated (async__http_xfer_alloc): nothing of the response has
     * been set yet, so it needs no clearing. */
    CURL *e = x->t.easy;
    const char *errbuf = x->easy->errbuf;
    r->status = x->status; /* on_attempt_done read it */
    long ver = x->status_line_len > 5 ? status_version(x->status_line + 5, x->status_line_len - 5) : 0;
    if (!ver) curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &ver);
    r->http_version = version_name(ver);
    r->attempts = x->attempt;
    async_http_timings_t *t = &r->timings;
    t->queued = (double)(x->t_start - x->t_call) / 1e9;
    t->namelookup = secs(e, CURLINFO_NAMELOOKUP_TIME_T);
    t->connect = secs(e, CURLINFO_CONNECT_TIME_T);
    t->appconnect = secs(e, CURLINFO_APPCONNECT_TIME_T);
    t->pretransfer = secs(e, CURLINFO_PRETRANSFER_TIME_T);
    t->starttransfer = secs(e, CURLINFO_STARTTRANSFER_TIME_T);
    t->total = secs(e, CURLINFO_TOTAL_TIME_T);
    t->elapsed = (double)(async_now() - x->t_call) / 1e9;

    /* The body and the header block move into the response. */
    if (!x->resp_body.data && async__http_buf_add(&x->resp_body, "", 0)) return ASYNC_ENOMEM;
    r->body = x->resp_body.data;
    r->body_len = x->resp_body.len;
    /* A retry empties the buffer without clearing it: an attempt that
     * wrote nothing would otherwise show the one before it.  The buffer
     * always has room for the NUL (buf_room). */
    r->body[r->body_len] = 0;
    size_t cap = x->resp_body.cap;
    x->resp_body.data = NULL;
    x->resp_body.len = x->resp_body.cap = 0;
    int err = parse_headers(r, &x->easy->hdr, x->easy->n_hdr, cap);
    if (err) return err;
    /* The request ends with this response (no attempt follows), so its URL
     * moves rather than being copied. */
    r->url = x->url;
    x->url = NULL;

    if (rc != CURLE_OK) {
        const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
        if (x->socket_errno == EMFILE || x->socket_errno == ENFILE) {
            r->error = -x->socket_errno;
            snprintf(r->errmsg, sizeof r->errmsg, "out of descriptors: no socket (%s): %.180s",
                     strerror(x->socket_errno), detail);
        } else if (rc == CURLE_OPERATION_TIMEDOUT) {
            r->error = ASYNC_ETIMEDOUT;
            snprintf(r->errmsg, sizeof r->errmsg, "timed out: %.240s", detail);
        } else if (x->oom) {
            /* Our buffer could not grow, which curl reports as its write
             * error 23 ("Failed writing header"): it is memory. */
            r->error = ASYNC_ENOMEM;
            snprintf(r->errmsg, sizeof r->errmsg, "out of memory for the response: %.200s",
                     detail);
        } else if (x->bad_header) {
            r->error = ASYNC_ECURL;
            snprintf(r->errmsg, sizeof r->errmsg,
                     "malformed response: a header line holds a NUL byte (curl error %d)",
                     (int)CURLE_WEIRD_SERVER_REPLY);
        } else if (x->too_big) {
            r->error = ASYNC_ECURL;
            if (x->dec)
                snprintf(r->errmsg, sizeof r->errmsg,
                         "response body larger than %zu bytes once decoded (Content-Encoding: "
                         "%s)",
                         x->http->opts.max_body, async__http_decoder_name(x->dec));
            else
                snprintf(r->errmsg, sizeof r->errmsg, "response body larger than %zu bytes",
                         x->http->opts.max_body);
        } else if (x->dec_failed) {
            /* What curl calls its error 61, CURLE_BAD_CONTENT_ENCODING. */
            r->error = ASYNC_ECURL;
            snprintf(r->errmsg, sizeof r->errmsg, "%.200s (curl error %d)", x->easy->dec_err,
                     (int)CURLE_BAD_CONTENT_ENCODING);
        } else if (rc == CURLE_SSL_CACERT_BADFILE && async__http_ca_error(x->http->ca_shared)) {
            r->error = ASYNC_ECURL; /* the shared store's own reason, with the path */
            snprintf(r->errmsg, sizeof r->errmsg, "%.220s (curl error %d)",
                     async__http_ca_error(x->http->ca_shared), (int)rc);
        } else if (errbuf[0]) {
            r->error = ASYNC_ECURL;
            snprintf(r->errmsg, sizeof r->errmsg, "%.220s (curl error %d)", errbuf, (int)rc);
        } else {
            r->error = ASYNC_ECURL;
            snprintf(r->errmsg, sizeof r->errmsg, "%.220s (curl error %d)",
                     curl_easy_strerror(rc), (int)rc);
        }
    } else if (r->status < 200 || r->status >= 300) {
        char reason[64];
        status_reason(x, reason, sizeof reason);
        r->error = ASYNC_EHTTP;
        snprintf(r->errmsg, sizeof r->errmsg, "HTTP status %ld%s%s", r->status,
                 reason[0] ? " " : "", reason);
    } else if (x->dec && async__http_decoder_end(x->dec, x->easy->dec_err,
                                                 sizeof x->easy->dec_err)) {
        /* The framing said the body was all there, the stream inside did not. */
        r->error = ASYNC_ECURL;
        snprintf(r->errmsg, sizeof r->errmsg, "%.160s after %zu bytes decoded (curl error %d)",
                 x->easy->dec_err, r->body_len, (int)CURLE_BAD_CONTENT_ENCODING);
    }
    return 0;
}

void async__http_response_error(http_xfer_t *x, int error, const char *msg)
{
    async_http_response_t *r = x->resp;
    r->error = error;
    snprintf(r->errmsg, sizeof r->errmsg, "%s", msg);
    if (!r->body) {
        /* Best effort: without memory the body stays NULL, which is
         * documented only for this out-of-memory case. */
        r->body = async__malloc(1);
        if (r->body) r->body[0] = 0;
    }
    if (!r->url) {
        resp_block_t *b = container_of(x, resp_block_t, x);
        /* The URL in the block is the response's already; x->url stays for
         * async__http_xfer_free, which does not free it. */
        r->url = x->url == b->url ? b->url : async__strdup(x->url);
    }
    if (!r->http_version) r->http_version = "";
    r->attempts = x->attempt;
    r->timings.elapsed = (double)(async_now() - x->t_call) / 1e9;
}

void async_http_response_free(async_http_response_t *resp)
{
    if (!resp) return;
    resp_block_t *b = (resp_block_t *)resp;
    if (!b->headers_in_body) async__free(resp->headers);
    if (resp->url != b->url) async__free(resp->url);
    async__free(resp->body);
    async__free(resp); /* and its request, in the same block */
}

const char *async_http_response_header(const async_http_response_t *resp, const char *name)
{
    if (!resp || !name) return NULL;
    /* The last one wins, as for a repeated header in most clients. */
    for (size_t i = resp->n_headers; i-- > 0;)
        if (async__ascii_casecmp(resp->headers[i].name, name) == 0) return resp->headers[i].value;
    return NULL;
}

int async_http_response_json(struct json_t **out, async_http_response_t *resp)
{
    if (!resp || !out) return ASYNC_EINVAL;
    *out = NULL;
    if (resp->error) return resp->error;
    json_error_t e;
    json_t *j = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, &e);
    if (!j) {
        resp->error = ASYNC_EJSON;
        snprintf(resp->errmsg, sizeof resp->errmsg, "JSON error at line %d, column %d: %s",
                 e.line, e.column, e.text);
        return ASYNC_EJSON;
    }
    *out = j;
    return 0;
}

/* --- URLs ------------------------------------------------------------------ */

/* Percent-encodes everything but RFC 3986's unreserved characters. */
static int escape(http_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        /* ASCII's letters and digits, not isalnum()'s: in a Latin-1 locale
         * that takes 0xC0-0xFF too, and UTF-8 went out half raw. */
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (alnum || c == '-' || c == '.' || c == '_' || c == '~') {
            if (async__http_buf_add(b, s, 1)) return ASYNC_ENOMEM;
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (async__http_buf_add(b, e, 3)) return ASYNC_ENOMEM;
        }
    }
    return 0;
}

int async__http_url_build(const char *url, const char *const *query, char **out)
{
    *out = NULL;
    if (!url || !*url) return ASYNC_EINVAL;
    http_buf_t b = {0};
    /* The query goes before a fragment ('#' to the end), which is never
     * sent: appended after it, it went into the fragment and no server saw
     * it.  A '?' inside the fragment is the fragment's. */
    const char *frag = strchr(url, '#');
    size_t base = frag ? (size_t)(frag - url) : strlen(url);
    int err = async__http_buf_add(&b, url, base);
    const char *qm = memchr(url, '?', base);
    char sep = qm ? '&' : '?';
    /* A URL that ends its query already ("...?", "...&") takes the first
     * pair as it is, not after an empty one. */
    bool open = qm && (url[base - 1] == '?' || url[base - 1] == '&');
    for (size_t i = 0; !err && query && query[i]; i += 2) {
        if (!query[i + 1] || !*query[i]) {
            err = ASYNC_EINVAL; /* a key without a value, or an empty key */
            break;
        }
        if (!open) err = async__http_buf_add(&b, &sep, 1);
        if (!err) err = escape(&b, query[i]);
        if (!err) err = async__http_buf_add(&b, "=", 1);
        if (!err) err = escape(&b, query[i + 1]);
        sep = '&';
        open = false;
    }
    if (!err && frag) err = async__http_buf_add(&b, frag, strlen(frag));
    if (err) {
        async__http_buf_free(&b);
        return err;
    }
    *out = b.data;
    return 0;
}
