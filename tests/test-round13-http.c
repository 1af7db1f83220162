/* Round 13's hostile review of the HTTP client (lib/http): what round 12
 * left untested, decoding and TLS.
 *
 * Decoding: bodies of a few kilobytes that decode to hundreds of megabytes
 * (gzip, deflate, gzip twice, br, zstd), sent at once or trickled; an
 * encoding the client did not ask for; corrupt, cut short and doubly
 * encoded streams.  The decoded size must stop at max_body with an error
 * that says so, the peak RSS (getrusage in a forked child) must stay near
 * max_body, and a wait must block in the poll.
 *
 * TLS, against peers the test plays itself (certificates made here with
 * libcrypto, servers forked with http_fixture.h's raw_start_conn): the
 * wrong host name, expired and not-yet-valid certificates, self-signed ones,
 * chains with and without their intermediate, CA files that are missing,
 * empty, garbage, a directory or a key; a peer that stalls mid-handshake,
 * sends garbage or a plain HTTP answer instead of a ServerHello, or closes
 * half-way through its flight; ALPN that picks http/1.1 when the client
 * prefers HTTP/2; and an HTTP/2 server that resets streams.
 *
 * The compressors come from the libraries curl itself loads (libz,
 * libbrotlienc, libzstd), opened with dlopen since the tests link none of
 * them; a test whose library is missing is skipped by name. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <zlib.h>
#include <async.h>
#include <async/http.h>
#include "http/decode.h"
#include "http_fixture.h"
#include "support/answer.h"

TestSuite(round13_http, .init = http_fixture_setup, .fini = http_fixture_teardown,
          .timeout = 90);

/* --- blobs and the compressors that make them --------------------------------- */

typedef struct blob {
    unsigned char *p;
    size_t n, cap;
} blob_t;

static void blob_add(blob_t *b, const void *p, size_t n)
{
    if (!n) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        cr_assert_not_null(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void blob_free(blob_t *b)
{
    free(b->p);
    *b = (blob_t){0};
}

/* A library curl loads, or the test is skipped (it names the library). */
static void *lib_open(const char *soname)
{
    void *h = dlopen(soname, RTLD_NOW);
    if (!h) cr_skip_test("%s is missing: %s", soname, dlerror());
    return h;
}

static void *sym(void *lib, const char *name)
{
    void *f = dlsym(lib, name);
    cr_assert_not_null(f, "%s", name);
    return f;
}

/* Streams the input of a compressor: the bytes of in, or else `zeros` zero
 * bytes, in pieces of at most 1 MiB, so that no input is ever whole in
 * memory.  Each call gives the next piece; its length, 0 at the end. */
typedef struct feed {
    const blob_t *in;
    size_t zeros, at;
} feed_t;

static size_t feed_next(feed_t *f, const unsigned char **p)
{
    static const unsigned char zero[1 << 20];
    size_t total = f->in ? f->in->n : f->zeros;
    size_t n = total - f->at < sizeof zero ? total - f->at : sizeof zero;
    *p = f->in ? f->in->p + f->at : zero;
    f->at += n;
    return n;
}

/* zlib: wbits 31 gzip, 15 zlib (HTTP's "deflate"), -15 raw deflate. */
static blob_t z_pack(int wbits, const blob_t *in, size_t zeros)
{
    void *lib = lib_open("libz.so.1");
    int (*init)(z_streamp, int, int, int, int, int, const char *, int) = sym(lib, "deflateInit2_");
    int (*def)(z_streamp, int) = sym(lib, "deflate");
    int (*end)(z_streamp) = sym(lib, "deflateEnd");
    z_stream z = {0};
    /* Zeros compress best and fastest as runs (Z_RLE): 258 bytes a match. */
    cr_assert_eq(init(&z, 9, Z_DEFLATED, wbits, 9, in ? Z_DEFAULT_STRATEGY : Z_RLE, ZLIB_VERSION,
                      (int)sizeof z),
                 Z_OK);
    blob_t out = {0};
    feed_t f = {.in = in, .zeros = zeros};
    unsigned char buf[1 << 16];
    int rc;
    do {
        const unsigned char *p;
        size_t n = feed_next(&f, &p);
        z.next_in = (unsigned char *)p;
        z.avail_in = (uInt)n;
        int flush = n ? Z_NO_FLUSH : Z_FINISH;
        do {
            z.next_out = buf;
            z.avail_out = sizeof buf;
            rc = def(&z, flush);
            cr_assert(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR, "deflate: %d", rc);
            blob_add(&out, buf, sizeof buf - z.avail_out);
        } while (z.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
    } while (rc != Z_STREAM_END);
    end(&z);
    dlclose(lib);
    return out;
}

#if __has_include(<brotli/encode.h>)
#include <brotli/encode.h>
#define HAVE_BROTLI_H 1
static blob_t br_pack(size_t zeros)
{
    void *lib = lib_open("libbrotlienc.so.1");
    BrotliEncoderState *(*create)(brotli_alloc_func, brotli_free_func, void *) =
        sym(lib, "BrotliEncoderCreateInstance");
    BROTLI_BOOL (*param)(BrotliEncoderState *, BrotliEncoderParameter, uint32_t) =
        sym(lib, "BrotliEncoderSetParameter");
    BROTLI_BOOL (*stream)(BrotliEncoderState *, BrotliEncoderOperation, size_t *,
                          const uint8_t **, size_t *, uint8_t **, size_t *) =
        sym(lib, "BrotliEncoderCompressStream");
    BROTLI_BOOL (*finished)(BrotliEncoderState *) = sym(lib, "BrotliEncoderIsFinished");
    void (*destroy)(BrotliEncoderState *) = sym(lib, "BrotliEncoderDestroyInstance");
    BrotliEncoderState *s = create(NULL, NULL, NULL);
    cr_assert_not_null(s);
    param(s, BROTLI_PARAM_QUALITY, 5);
    blob_t out = {0};
    feed_t f = {.zeros = zeros};
    uint8_t buf[1 << 16];
    for (;;) {
        const unsigned char *p;
        size_t n = feed_next(&f, &p);
        BrotliEncoderOperation op = n ? BROTLI_OPERATION_PROCESS : BROTLI_OPERATION_FINISH;
        const uint8_t *next_in = p;
        do {
            uint8_t *next_out = buf;
            size_t avail_out = sizeof buf;
            cr_assert(stream(s, op, &n, &next_in, &avail_out, &next_out, NULL));
            blob_add(&out, buf, sizeof buf - avail_out);
        } while (n || (op == BROTLI_OPERATION_FINISH && !finished(s)));
        if (op == BROTLI_OPERATION_FINISH) break;
    }
    destroy(s);
    dlclose(lib);
    return out;
}
#endif

/* zstd's streaming API, declared here (zstd.h is not installed; these are
 * its stable ABI since 1.4). */
typedef struct {
    const void *src;
    size_t size, pos;
} zstd_in_t;
typedef struct {
    void *dst;
    size_t size, pos;
} zstd_out_t;

static blob_t zstd_pack(size_t zeros)
{
    void *lib = lib_open("libzstd.so.1");
    void *(*create)(void) = sym(lib, "ZSTD_createCCtx");
    size_t (*compress)(void *, zstd_out_t *, zstd_in_t *, int) = sym(lib, "ZSTD_compressStream2");
    unsigned (*is_error)(size_t) = sym(lib, "ZSTD_isError");
    size_t (*destroy)(void *) = sym(lib, "ZSTD_freeCCtx");
    void *c = create();
    cr_assert_not_null(c);
    blob_t out = {0};
    feed_t f = {.zeros = zeros};
    unsigned char buf[1 << 16];
    for (;;) {
        const unsigned char *p;
        size_t n = feed_next(&f, &p);
        int op = n ? 0 : 2; /* ZSTD_e_continue, ZSTD_e_end */
        zstd_in_t in = {p, n, 0};
        size_t left;
        do {
            zstd_out_t o = {buf, sizeof buf, 0};
            left = compress(c, &o, &in, op);
            cr_assert(!is_error(left), "ZSTD_compressStream2 failed");
            blob_add(&out, buf, o.pos);
        } while (in.pos < in.size || (op == 2 && left));
        if (op == 2) break;
    }
    destroy(c);
    dlclose(lib);
    return out;
}

/* --- a server of canned answers ----------------------------------------------- */

/* What the scripted server answers for a path: a head, then the body, all
 * of it or its first `send` bytes, at once or in pieces of `piece` bytes
 * every `every_ms`; then it keeps the connection (keep-alive), closes it, or
 * holds it open without a word. */
typedef struct canned {
    const char *path;
    char head[512];
    const blob_t *body;
    size_t send;      /* 0: all of body */
    size_t piece;     /* 0: at once */
    int every_ms;
    enum { KEEP, CLOSE, HOLD } after;
} canned_t;

static canned_t canned[24];
static int n_canned;
static const blob_t ok_body = {(unsigned char *)"ok", 2, 2};

/* Adds an answer for path: its head (a status line and headers, to which
 * the blank line is added) and body; the caller may adjust the rest. */
static canned_t *can(const char *path, const char *head, const blob_t *body)
{
    cr_assert_lt(n_canned, 24);
    canned_t *c = &canned[n_canned++];
    *c = (canned_t){.path = path, .body = body};
    snprintf(c->head, sizeof c->head, "%s\r\n\r\n", head);
    return c;
}

static bool canned_answer(int fd, const char *path)
{
    for (int i = 0; i < n_canned; i++) {
        canned_t *c = &canned[i];
        if (strcmp(c->path, path)) continue;
        raw_puts(fd, c->head);
        size_t n = c->send ? c->send : c->body ? c->body->n : 0;
        for (size_t at = 0; at < n;) {
            size_t k = c->piece && c->piece < n - at ? c->piece : n - at;
            raw_put(fd, c->body->p + at, k);
            at += k;
            if (c->piece && at < n) nap_ms(c->every_ms);
        }
        if (c->after == HOLD)
            for (;;) nap_ms(1000);
        return c->after == KEEP;
    }
    raw_puts(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    return true;
}

/* A head with its Content-Encoding and a Content-Length of n. */
static const char *head_of(char *buf, size_t cap, const char *encoding, size_t n)
{
    snprintf(buf, cap, "HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %zu", encoding,
             n);
    return buf;
}

static bool all_zero(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

/* One GET of path by a new client with options o: it must succeed with
 * exactly the n bytes of want as its body. */
static void expect_body(raw_srv_t *s, const async_http_opts_t *o, const char *path,
                        const void *want, size_t n)
{
    async_http_request_t req = {.url = raw_url(s, path)};
    waited_t w = run_one(o, &req);
    cr_expect_eq(w.resp->error, 0, "%s: %s", path, w.resp->errmsg);
    cr_expect(w.resp->body_len == n && !memcmp(w.resp->body, want, n), "%s: %zu bytes, want %zu",
              path, w.resp->body_len, n);
    async_http_response_free(w.resp);
}

/* --- decoding bombs ----------------------------------------------------------------- */

#define MIB ((size_t)1 << 20)

/* What a forked child saw of one request: the response's outcome and the
 * growth of its peak RSS over the request. */
typedef struct bomb_seen {
    int error;
    char errmsg[256];
    size_t body_len;
    bool zeros;       /* the body held only zeros */
    long rss_kib;     /* ru_maxrss after the request, less before it */
    double cpu, wall; /* the child's CPU (all threads) and wall seconds for it */
} bomb_seen_t;

static double process_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* In a child of its own, so that its peak RSS is its own: a client with
 * max_body and every encoding accepted makes one small request (curl and
 * its decoders warm), then the one measured. */
static bomb_seen_t bomb_in_child(raw_srv_t *s, const char *path, size_t max_body)
{
    bomb_seen_t *seen = mmap(NULL, sizeof *seen, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(seen, MAP_FAILED);
    memset(seen, 0, sizeof *seen);
    seen->error = 1;
    char url[160], warm[160];
    snprintf(url, sizeof url, "%s", raw_url(s, path));
    snprintf(warm, sizeof warm, "%s", raw_url(s, "/ok"));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        async_http_opts_t o = {.accept_encoding = "", .max_body = max_body};
        async_http_t *http;
        async_http_response_t *r = NULL;
        if (async_http_new(&http, NULL, &o)) _exit(1);
        async_http_get(&r, http, warm, NULL);
        async_http_response_free(r);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        long before = ru.ru_maxrss;
        double cpu0 = process_cpu();
        int64_t t0 = async_now();
        async_http_get(&r, http, url, NULL);
        seen->wall = (double)(async_now() - t0) / 1e9;
        seen->cpu = process_cpu() - cpu0;
        getrusage(RUSAGE_SELF, &ru);
        seen->rss_kib = ru.ru_maxrss - before;
        if (r) {
            seen->error = r->error;
            snprintf(seen->errmsg, sizeof seen->errmsg, "%s", r->errmsg);
            seen->body_len = r->body_len;
            seen->zeros = all_zero(r->body, r->body_len);
        }
        async_http_response_free(r);
        async_http_destroy(http);
        _exit(0);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed (status %d)", st);
    bomb_seen_t out = *seen;
    munmap(seen, sizeof *seen);
    return out;
}

typedef struct bomb {
    const char *path, *encoding;
    size_t decoded; /* zeros it decodes to */
    blob_t body;
} bomb_t;

/* Each bomb decodes to far more than max_body: the request fails once the
 * decoded bytes pass it, with the limit in the message, the body kept is
 * no larger than the limit (and is the bomb's zeros), and the child's peak
 * RSS grows by about max_body, never by the bomb. */
static void expect_bombs_stop_at_max_body(bomb_t *bombs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char head[160];
        can(bombs[i].path, head_of(head, sizeof head, bombs[i].encoding, bombs[i].body.n),
            &bombs[i].body)
            ->after = CLOSE;
    }
    can("/ok", "HTTP/1.1 200 OK\r\nContent-Length: 2", &ok_body);
    raw_srv_t s;
    raw_start(&s, canned_answer);
    const size_t max_body = 8 * MIB;
    char want[96];
    snprintf(want, sizeof want, "response body larger than %zu bytes", max_body);
    for (size_t i = 0; i < n; i++) {
        bomb_t *b = &bombs[i];
        bomb_seen_t w = bomb_in_child(&s, b->path, max_body);
        cr_log_info("%s: %zu bytes decoding to %zu MiB: %s; body %zu bytes, RSS +%ld KiB, "
                    "%.3f s CPU in %.3f s",
                    b->encoding, b->body.n, b->decoded / MIB, w.errmsg, w.body_len, w.rss_kib,
                    w.cpu, w.wall);
        cr_expect_lt(b->body.n * 64, b->decoded, "%s: not a bomb (%zu bytes)", b->encoding,
                     b->body.n);
        cr_expect_eq(w.error, ASYNC_ECURL, "%s: %s", b->encoding, w.errmsg);
        cr_expect(strstr(w.errmsg, want), "%s: %s (wanted \"%s\")", b->encoding, w.errmsg, want);
        cr_expect_leq(w.body_len, max_body, "%s", b->encoding);
        cr_expect(w.zeros, "%s: the body kept is not the bomb's zeros", b->encoding);
        cr_expect_lt((size_t)w.rss_kib * 1024, max_body + 24 * MIB,
                     "%s: the peak RSS grew by %ld KiB for a limit of %zu MiB", b->encoding,
                     w.rss_kib, max_body / MIB);
    }
    raw_stop(&s);
}

Test(round13_http, zlib_bombs_stop_at_max_body_in_bounded_memory)
{
    bomb_t bombs[] = {
        {"/gzip", "gzip", 256 * MIB, {0}},
        {"/x-gzip", "x-gzip", 256 * MIB, {0}},
        {"/deflate", "deflate", 256 * MIB, {0}},
        {"/raw-deflate", "deflate", 256 * MIB, {0}},
        {"/gzip-gzip", "gzip, gzip", 1024 * MIB, {0}},
    };
    bombs[0].body = z_pack(31, NULL, bombs[0].decoded);
    bombs[1].body = z_pack(31, NULL, bombs[1].decoded);
    bombs[2].body = z_pack(15, NULL, bombs[2].decoded);
    bombs[3].body = z_pack(-15, NULL, bombs[3].decoded);
    blob_t inner = z_pack(31, NULL, bombs[4].decoded);
    bombs[4].body = z_pack(31, &inner, 0);
    blob_free(&inner);
    expect_bombs_stop_at_max_body(bombs, sizeof bombs / sizeof *bombs);
    for (size_t i = 0; i < sizeof bombs / sizeof *bombs; i++) blob_free(&bombs[i].body);
}

Test(round13_http, brotli_and_zstd_bombs_stop_at_max_body_in_bounded_memory)
{
#ifndef HAVE_BROTLI_H
    cr_skip_test("brotli/encode.h is missing (package libbrotli-dev)");
#else
    bomb_t bombs[] = {
        {"/br", "br", 1024 * MIB, {0}},
        {"/zstd", "zstd", 1024 * MIB, {0}},
    };
    bombs[0].body = br_pack(bombs[0].decoded);
    bombs[1].body = zstd_pack(bombs[1].decoded);
    expect_bombs_stop_at_max_body(bombs, 2);
    blob_free(&bombs[0].body);
    blob_free(&bombs[1].body);
#endif
}

/* A bomb in small pieces, a piece every 50 ms: each decodes to a quarter of
 * a megabyte, and the wait for the next blocks in the poll. */
Test(round13_http, a_trickled_bomb_stops_at_max_body_without_spinning)
{
    blob_t bomb = z_pack(31, NULL, 256 * MIB);
    char head[160];
    canned_t *c = can("/trickle", head_of(head, sizeof head, "gzip", bomb.n), &bomb);
    c->piece = 256;
    c->every_ms = 50;
    raw_srv_t s;
    raw_start(&s, canned_answer);
    async_http_opts_t o = {.accept_encoding = "gzip", .max_body = 4 * MIB};
    async_http_request_t req = {.url = raw_url(&s, "/trickle")};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "response body larger than 4194304 bytes"), "%s",
              w.resp->errmsg);
    cr_expect_leq(w.resp->body_len, 4 * MIB);
    cr_expect(all_zero(w.resp->body, w.resp->body_len));
    expect_no_spin(&w, 20);
    async_http_response_free(w.resp);
    raw_stop(&s);
    blob_free(&bomb);
}

/* --- encodings asked for and not ----------------------------------------------------- */

static blob_t text_blob(const char *line, int times)
{
    blob_t b = {0};
    for (int i = 0; i < times; i++) blob_add(&b, line, strlen(line));
    return b;
}

/* A client that asked for no encoding gets the bytes as they came, bomb or
 * not, and the header that says what they are.  One that asked for gzip
 * only still has curl decode what curl knows (br here), held to max_body
 * the same; what curl does not know is a precise error. */
Test(round13_http, encodings_not_asked_for)
{
    blob_t bomb = z_pack(31, NULL, 64 * MIB);
    blob_t text = text_blob("brewery,city,state\n", 2000);
    blob_t gz = z_pack(31, &text, 0);
    char h1[160], h2[160], h3[160];
    can("/bomb", head_of(h1, sizeof h1, "gzip", bomb.n), &bomb);
    can("/gzip-text", head_of(h2, sizeof h2, "gzip", gz.n), &gz);
    can("/xz", head_of(h3, sizeof h3, "xz", text.n), &text);
    raw_srv_t s;
    raw_start(&s, canned_answer);

    async_http_opts_t plain = {.max_body = 4 * MIB};
    expect_body(&s, &plain, "/bomb", bomb.p, bomb.n); /* the bytes as sent, not decoded */
    async_http_request_t req = {.url = raw_url(&s, "/bomb")};
    waited_t w = run_one(&plain, &req);
    cr_expect_str_eq(async_http_response_header(w.resp, "Content-Encoding") ?: "(none)", "gzip");
    async_http_response_free(w.resp);

    async_http_opts_t gzip_only = {.accept_encoding = "gzip", .max_body = 4 * MIB};
    expect_body(&s, &gzip_only, "/gzip-text", text.p, text.n);

    req.url = raw_url(&s, "/xz");
    w = run_one(&gzip_only, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "curl error 61"), "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "content encoding"), "%s", w.resp->errmsg);
    async_http_response_free(w.resp);
    raw_stop(&s);
    blob_free(&bomb);
    blob_free(&text);
    blob_free(&gz);
}

/* --- corrupt, cut short, encoded twice ------------------------------------------------ */

/* A gzip stream with one byte changed: in its compressed data, in the CRC
 * of its trailer, in the length of its trailer.  zlib finds each, and the
 * request fails with curl's decoding error and zlib's reason. */
Test(round13_http, a_corrupt_gzip_stream_is_a_decoding_error)
{
    blob_t text = text_blob("0123456789abcdef\n", 4000);
    blob_t gz[3];
    const char *paths[3] = {"/data", "/crc", "/isize"};
    char heads[3][160];
    for (int i = 0; i < 3; i++) {
        gz[i] = z_pack(31, &text, 0);
        size_t at = i == 0 ? gz[i].n / 2 : i == 1 ? gz[i].n - 8 : gz[i].n - 4;
        gz[i].p[at] ^= 0x55;
        can(paths[i], head_of(heads[i], sizeof heads[i], "gzip", gz[i].n), &gz[i]);
    }
    raw_srv_t s;
    raw_start(&s, canned_answer);
    async_http_opts_t o = {.accept_encoding = ""};
    for (int i = 0; i < 3; i++) {
        async_http_request_t req = {.url = raw_url(&s, paths[i])};
        waited_t w = run_one(&o, &req);
        cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s: %s", paths[i], w.resp->errmsg);
        cr_expect(strstr(w.resp->errmsg, "curl error 61"), "%s: %s", paths[i], w.resp->errmsg);
        async_http_response_free(w.resp);
        blob_free(&gz[i]);
    }
    raw_stop(&s);
    blob_free(&text);
}

/* A gzip stream cut off half-way, its HTTP framing whole or not: the
 * Content-Length promises the whole stream and the connection closes
 * early; or the framing itself is complete (a Content-Length of the bytes
 * sent, a chunked body with its last chunk, a body that the close ends)
 * while the gzip stream inside it is not.  Each is an error: the body is
 * not all there. */
Test(round13_http, a_gzip_stream_cut_short_is_an_error)
{
    blob_t text = text_blob("0123456789abcdef\n", 20000);
    blob_t gz = z_pack(31, &text, 0);
    size_t half = gz.n / 2;
    blob_t chunked = {0};
    char line[32];
    int m = snprintf(line, sizeof line, "%zx\r\n", half);
    blob_add(&chunked, line, (size_t)m);
    blob_add(&chunked, gz.p, half);
    blob_add(&chunked, "\r\n0\r\n\r\n", 7);
    char h1[160], h2[160];
    canned_t *c = can("/promised", head_of(h1, sizeof h1, "gzip", gz.n), &gz);
    c->send = half;
    c->after = CLOSE;
    can("/framed", head_of(h2, sizeof h2, "gzip", half), &gz)->send = half;
    can("/chunked", "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked",
        &chunked);
    c = can("/close-delimited", "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close",
            &gz);
    c->send = half;
    c->after = CLOSE;
    raw_srv_t s;
    raw_start(&s, canned_answer);
    async_http_opts_t o = {.accept_encoding = ""};
    const char *paths[] = {"/promised", "/framed", "/chunked", "/close-delimited"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        async_http_request_t req = {.url = raw_url(&s, paths[i])};
        waited_t w = run_one(&o, &req);
        cr_expect_neq(w.resp->error, 0, "%s: a cut gzip stream succeeded with %zu of %zu bytes",
                      paths[i], w.resp->body_len, text.n);
        cr_expect_lt(w.resp->body_len, text.n, "%s", paths[i]);
        async_http_response_free(w.resp);
    }
    raw_stop(&s);
    blob_free(&text);
    blob_free(&gz);
    blob_free(&chunked);
}

/* A body encoded twice is decoded as often as its Content-Encoding says,
 * in one header or two, and no more: "gzip" on a body gzipped twice gives
 * the inner gzip stream, untouched. */
Test(round13_http, a_body_gzipped_twice_is_decoded_as_often_as_it_says)
{
    blob_t text = text_blob("name,city\nA,B\n", 3000);
    blob_t once = z_pack(31, &text, 0);
    blob_t twice = z_pack(31, &once, 0);
    char h1[160], h2[200], h3[160];
    can("/both", head_of(h1, sizeof h1, "gzip, gzip", twice.n), &twice);
    snprintf(h2, sizeof h2,
             "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Encoding: gzip\r\n"
             "Content-Length: %zu", twice.n);
    can("/two-headers", h2, &twice);
    can("/said-once", head_of(h3, sizeof h3, "gzip", twice.n), &twice);
    raw_srv_t s;
    raw_start(&s, canned_answer);
    async_http_opts_t o = {.accept_encoding = ""};
    expect_body(&s, &o, "/both", text.p, text.n);
    expect_body(&s, &o, "/two-headers", text.p, text.n);
    expect_body(&s, &o, "/said-once", once.p, once.n); /* the inner stream */
    raw_stop(&s);
    blob_free(&text);
    blob_free(&once);
    blob_free(&twice);
}

/* --- certificates ---------------------------------------------------------------------- */

static EVP_PKEY *key_new(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    cr_assert_not_null(k);
    return k;
}

static void add_ext(X509 *x, X509V3_CTX *c, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, c, nid, value);
    cr_assert_not_null(e, "extension %d = %s", nid, value);
    cr_assert(X509_add_ext(x, e, -1));
    X509_EXTENSION_free(e);
}

/* A certificate for key: subject CN cn, subjectAltName san (NULL: none),
 * valid from `from` to `to` days from now, a CA or not, signed by issuer's
 * key (NULL: self-signed). */
static X509 *cert_new(EVP_PKEY *key, const char *cn, const char *san, long from, long to, bool ca,
                      X509 *issuer, EVP_PKEY *issuer_key)
{
    static long serial = 1000;
    X509 *x = X509_new();
    cr_assert_not_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from * 86400L);
    X509_gmtime_adj(X509_getm_notAfter(x), to * 86400L);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509V3_CTX c;
    X509V3_set_ctx_nodb(&c);
    X509V3_set_ctx(&c, issuer ? issuer : x, x, NULL, NULL, 0);
    add_ext(x, &c, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    add_ext(x, &c, NID_subject_key_identifier, "hash");
    if (ca) add_ext(x, &c, NID_key_usage, "critical,keyCertSign,cRLSign");
    else add_ext(x, &c, NID_ext_key_usage, "serverAuth");
    if (issuer) add_ext(x, &c, NID_authority_key_identifier, "keyid:always");
    if (san) add_ext(x, &c, NID_subject_alt_name, san);
    cr_assert(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()));
    return x;
}

/* The certificates of the TLS tests, made once per test: a root CA, an
 * intermediate under it, leaves for 127.0.0.1 under each, and the odd
 * ones (wrong name, expired, not yet valid, self-signed), with files for
 * the CA bundles a client may be given, in a directory of the test's. */
typedef struct pki {
    char dir[64];
    EVP_PKEY *root_key, *mid_key, *leaf_key;
    X509 *root, *mid, *leaf, *leaf_of_mid, *wrong_name, *expired, *not_yet, *self;
    char root_pem[128], mid_pem[128], self_pem[128], empty_pem[128], garbage_pem[128],
        key_pem[128], missing_pem[128];
} pki_t;

static void write_certs(const char *path, X509 *a, X509 *b)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    if (a) PEM_write_X509(f, a);
    if (b) PEM_write_X509(f, b);
    fclose(f);
}

static void pki_make(pki_t *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "/tmp/round13-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(p->dir));
    p->root_key = key_new();
    p->mid_key = key_new();
    p->leaf_key = key_new();
    const char *ip = "IP:127.0.0.1";
    p->root = cert_new(p->root_key, "round13 root", NULL, -1, 30, true, NULL, NULL);
    p->mid = cert_new(p->mid_key, "round13 intermediate", NULL, -1, 30, true, p->root, p->root_key);
    p->leaf = cert_new(p->leaf_key, "127.0.0.1", ip, -1, 30, false, p->root, p->root_key);
    p->leaf_of_mid = cert_new(p->leaf_key, "127.0.0.1", ip, -1, 30, false, p->mid, p->mid_key);
    p->wrong_name = cert_new(p->leaf_key, "other.example", "DNS:other.example", -1, 30, false,
                             p->root, p->root_key);
    p->expired = cert_new(p->leaf_key, "127.0.0.1", ip, -30, -1, false, p->root, p->root_key);
    p->not_yet = cert_new(p->leaf_key, "127.0.0.1", ip, 1, 30, false, p->root, p->root_key);
    p->self = cert_new(p->leaf_key, "127.0.0.1", ip, -1, 30, false, NULL, NULL);
#define PATH(field, name) snprintf(p->field, sizeof p->field, "%s/" name, p->dir)
    PATH(root_pem, "root.pem");
    PATH(mid_pem, "mid.pem");
    PATH(self_pem, "self.pem");
    PATH(empty_pem, "empty.pem");
    PATH(garbage_pem, "garbage.pem");
    PATH(key_pem, "key.pem");
    PATH(missing_pem, "missing.pem");
#undef PATH
    write_certs(p->root_pem, p->root, NULL);
    write_certs(p->mid_pem, p->mid, NULL);
    write_certs(p->self_pem, p->self, NULL);
    write_certs(p->empty_pem, NULL, NULL);
    FILE *f = fopen(p->garbage_pem, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 4096; i++) fputc((i * 7919) & 0xff, f);
    fclose(f);
    f = fopen(p->key_pem, "w");
    cr_assert_not_null(f);
    PEM_write_PrivateKey(f, p->leaf_key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
}

static void pki_free(pki_t *p)
{
    X509 *all[] = {p->root, p->mid, p->leaf, p->leaf_of_mid, p->wrong_name, p->expired,
                   p->not_yet, p->self};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) X509_free(all[i]);
    EVP_PKEY_free(p->root_key);
    EVP_PKEY_free(p->mid_key);
    EVP_PKEY_free(p->leaf_key);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", p->dir);
    if (system(cmd)) {}
}

/* --- TLS peers ------------------------------------------------------------------------------ */

/* What the forked TLS peer does with each connection (set before
 * raw_start_conn, so that the server's processes have it). */
static struct {
    enum {
        PEER_HTTP1,   /* a TLS handshake, then "ok" to each request */
        PEER_H2,      /* a TLS handshake, then HTTP/2 frames (h2_conn) */
        PEER_STALL,   /* reads the ClientHello and never answers */
        PEER_GARBAGE, /* answers the ClientHello with a plain HTTP answer */
        PEER_NOISE,   /* answers it with bytes that are no TLS record */
        PEER_CUT,     /* sends half of its first flight, then closes */
        PEER_CUT_RST, /* the same, then resets */
    } mode;
    SSL_CTX *ctx;
    const char *alpn;   /* the protocol chosen from the client's; NULL: no ALPN */
    int answer_ms;      /* PEER_HTTP1: the wait before each answer */
    unsigned reset_every; /* PEER_H2: the nth stream of a connection is reset when n % it == 0 */
    unsigned reset_until; /* and n <= it (0: any n) */
    uint32_t reset_code;  /* with this HTTP/2 error code */
    const blob_t *h2_body; /* PEER_H2: the gzip body of each answer, or NULL for "ok" */
} peer;

static int alpn_pick(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                     const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    if (!peer.alpn) return SSL_TLSEXT_ERR_NOACK;
    size_t want = strlen(peer.alpn);
    for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
        if (in[i] == want && i + 1 + want <= inlen && !memcmp(in + i + 1, peer.alpn, want)) {
            *out = in + i + 1;
            *outlen = in[i];
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* A server context with leaf (and chain, which may be NULL) as its
 * certificate. */
static SSL_CTX *peer_ctx(X509 *leaf, X509 *chain, EVP_PKEY *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    cr_assert_not_null(ctx);
    cr_assert(SSL_CTX_use_certificate(ctx, leaf));
    cr_assert(SSL_CTX_use_PrivateKey(ctx, key));
    if (chain) cr_assert(SSL_CTX_add1_chain_cert(ctx, chain));
    SSL_CTX_set_alpn_select_cb(ctx, alpn_pick, NULL);
    return ctx;
}

static bool ssl_read_full(SSL *ssl, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        int r = SSL_read(ssl, (char *)buf + got, (int)(n - got));
        if (r <= 0) return false;
        got += (size_t)r;
    }
    return true;
}

static void ssl_put(SSL *ssl, const void *p, size_t n)
{
    if (SSL_write(ssl, p, (int)n) != (int)n) _exit(0);
}

static void h2_frame(SSL *ssl, int type, int flags, uint32_t stream, const void *p, size_t n)
{
    static unsigned char f[9 + (1 << 14)];
    if (n > 1 << 14) _exit(1);
    f[0] = (unsigned char)(n >> 16);
    f[1] = (unsigned char)(n >> 8);
    f[2] = (unsigned char)n;
    f[3] = (unsigned char)type;
    f[4] = (unsigned char)flags;
    f[5] = (unsigned char)(stream >> 24 & 0x7f);
    f[6] = (unsigned char)(stream >> 16);
    f[7] = (unsigned char)(stream >> 8);
    f[8] = (unsigned char)stream;
    if (n) memcpy(f + 9, p, n);
    ssl_put(ssl, f, 9 + n);
}

/* ":status 200" (HPACK's static entry 8), with "content-encoding: gzip"
 * (a literal of static entry 26's name) and peer.h2_body in DATA frames of
 * 16 KiB if that is set, or else the body "ok". */
static void h2_answer(SSL *ssl, uint32_t sid)
{
    if (!peer.h2_body) {
        h2_frame(ssl, 1, 4, sid, "\x88", 1);
        h2_frame(ssl, 0, 1, sid, "ok", 2);
        return;
    }
    h2_frame(ssl, 1, 4, sid, "\x88\x0f\x0b\x04gzip", 8);
    const blob_t *b = peer.h2_body;
    for (size_t at = 0; at < b->n;) {
        size_t k = b->n - at < (1 << 14) ? b->n - at : (1 << 14);
        h2_frame(ssl, 0, at + k == b->n, sid, b->p + at, k);
        at += k;
    }
}

/* HTTP/2 after the handshake: the server's SETTINGS, acks of the client's
 * SETTINGS and PINGs, and for each request (a HEADERS frame) either a
 * RST_STREAM or an answer (h2_answer). */
static void h2_conn(raw_srv_t *s, SSL *ssl)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    char pre[24];
    if (!ssl_read_full(ssl, pre, 24) || memcmp(pre, preface, 24)) return;
    h2_frame(ssl, 4, 0, 0, NULL, 0);
    unsigned streams = 0;
    for (;;) {
        unsigned char h[9], payload[1 << 14];
        if (!ssl_read_full(ssl, h, 9)) return;
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        uint32_t sid = (uint32_t)(h[5] & 0x7f) << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8];
        if (len > sizeof payload || !ssl_read_full(ssl, payload, len)) return;
        if (h[3] == 4 && !(h[4] & 1)) h2_frame(ssl, 4, 1, 0, NULL, 0);
        if (h[3] == 6 && !(h[4] & 1)) h2_frame(ssl, 6, 1, 0, payload, 8);
        if (h[3] == 7) return;
        if (h[3] != 1) continue;
        atomic_fetch_add(&s->st->requests, 1);
        streams++;
        if (peer.reset_every && streams % peer.reset_every == 0 &&
            (!peer.reset_until || streams <= peer.reset_until)) {
            unsigned char code[4] = {(unsigned char)(peer.reset_code >> 24),
                                     (unsigned char)(peer.reset_code >> 16),
                                     (unsigned char)(peer.reset_code >> 8),
                                     (unsigned char)peer.reset_code};
            h2_frame(ssl, 3, 0, sid, code, 4);
        } else {
            h2_answer(ssl, sid);
        }
    }
}

/* Reads what the client sent first (its ClientHello) into buf; its length. */
static size_t read_hello(int fd, char *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap, 0);
    return n > 0 ? (size_t)n : 0;
}

/* Sends half of the server's first flight (ServerHello onwards), made in
 * memory from the client's hello, and returns. */
static void half_flight(int fd)
{
    SSL *ssl = SSL_new(peer.ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    char buf[16384];
    char *out = NULL;
    long n = 0;
    while (n == 0) {
        size_t k = read_hello(fd, buf, sizeof buf);
        if (!k) _exit(0);
        BIO_write(rb, buf, (int)k);
        SSL_accept(ssl);
        n = BIO_get_mem_data(wb, &out);
    }
    raw_put(fd, out, (size_t)n / 2);
    nap_ms(50);
}

static void tls_conn(raw_srv_t *s, int fd)
{
    char buf[16384];
    switch (peer.mode) {
    case PEER_STALL:
        read_hello(fd, buf, sizeof buf);
        for (;;) nap_ms(1000);
    case PEER_GARBAGE:
        read_hello(fd, buf, sizeof buf);
        raw_puts(fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        for (;;) nap_ms(1000);
    case PEER_NOISE:
        read_hello(fd, buf, sizeof buf);
        memset(buf, 0xee, 512);
        raw_put(fd, buf, 512);
        for (;;) nap_ms(1000);
    case PEER_CUT:
        half_flight(fd);
        return;
    case PEER_CUT_RST: {
        half_flight(fd);
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        return;
    }
    case PEER_HTTP1:
    case PEER_H2:
        break;
    }
    SSL *ssl = SSL_new(peer.ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) return;
    if (peer.mode == PEER_H2) {
        h2_conn(s, ssl);
        return;
    }
    for (;;) {
        size_t n = 0;
        while (n < 4 || memcmp(buf + n - 4, "\r\n\r\n", 4)) {
            if (n == sizeof buf || SSL_read(ssl, buf + n, 1) != 1) return;
            n++;
        }
        atomic_fetch_add(&s->st->requests, 1);
        if (peer.answer_ms) nap_ms(peer.answer_ms);
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        ssl_put(ssl, ok, sizeof ok - 1);
    }
}

static const char *tls_url(raw_srv_t *s)
{
    snprintf(s->url, sizeof s->url, "https://127.0.0.1:%u/", s->port);
    return s->url;
}

/* Starts a TLS peer in the given mode with leaf (and chain) as its
 * certificate. */
static void peer_start(raw_srv_t *s, int mode, X509 *leaf, X509 *chain, EVP_PKEY *key)
{
    SSL_CTX_free(peer.ctx);
    peer.ctx = peer_ctx(leaf, chain, key);
    peer.mode = mode;
    raw_start_conn(s, tls_conn);
}

static void peer_stop(raw_srv_t *s)
{
    raw_stop(s);
    SSL_CTX_free(peer.ctx);
    peer.ctx = NULL;
}

/* --- TLS: certificates and CA files ------------------------------------------------------- */

/* One GET of the peer by a new client trusting ca_file (NULL: the system's),
 * with the shared CA store, or (curl_loads) with curl loading the file
 * itself, as it does behind a TLS proxy (one in the environment that
 * 127.0.0.1 bypasses).  Returns the curl error number in the message, 0 on
 * success, -1 for an error that is not curl's; msg receives the message. */
static int tls_get(raw_srv_t *s, const char *ca_file, bool curl_loads, char *msg, size_t cap)
{
    if (curl_loads) {
        setenv("https_proxy", "https://127.0.0.1:9", 1);
        setenv("no_proxy", "127.0.0.1", 1);
    }
    async_http_opts_t o = {.ca_file = ca_file, .no_http2 = true};
    async_http_request_t req = {.url = tls_url(s), .timeout_ns = ASYNC_SEC(20)};
    waited_t w = run_one(&o, &req);
    unsetenv("https_proxy");
    unsetenv("no_proxy");
    snprintf(msg, cap, "%s", w.resp->errmsg);
    const char *e = strstr(w.resp->errmsg, "(curl error ");
    int code = !w.resp->error ? 0 : e && w.resp->error == ASYNC_ECURL ? atoi(e + 12) : -1;
    if (!w.resp->error) cr_expect_str_eq(w.resp->body, "ok");
    async_http_response_free(w.resp);
    return code;
}

/* Each certificate a server may show, with each CA file a client may
 * trust: the verdict of the shared CA store (lib/http/ca_store.c) must be
 * curl's own, that is the one curl gives when it loads the file itself, and
 * the one a TLS client owes: trusted chains pass (an intermediate that the
 * CA file holds is an anchor, as for curl, X509_V_FLAG_PARTIAL_CHAIN), and
 * the wrong name, an expired or not yet valid certificate, a self-signed
 * one and a chain without its intermediate fail with their reason. */
Test(round13_http, certificates_are_judged_as_curl_judges_them)
{
    pki_t p;
    pki_make(&p);
    const struct {
        const char *what;
        X509 *leaf, *chain;
        const char *ca;
        int want;          /* curl's error, 0 for success */
        const char *why;   /* in the message */
    } cases[] = {
        {"a leaf of the root", p.leaf, NULL, p.root_pem, 0, ""},
        {"a chain through the intermediate", p.leaf_of_mid, p.mid, p.root_pem, 0, ""},
        {"the intermediate trusted alone", p.leaf_of_mid, p.mid, p.mid_pem, 0, ""},
        {"the intermediate trusted, not sent", p.leaf_of_mid, NULL, p.mid_pem, 0, ""},
        {"the intermediate not sent", p.leaf_of_mid, NULL, p.root_pem, 60,
         "unable to get local issuer certificate"},
        {"the wrong host name", p.wrong_name, NULL, p.root_pem, 60,
         "no alternative certificate subject name matches target host name '127.0.0.1'"},
        {"an expired certificate", p.expired, NULL, p.root_pem, 60, "certificate has expired"},
        {"a certificate not yet valid", p.not_yet, NULL, p.root_pem, 60,
         "certificate is not yet valid"},
        {"a self-signed one, the system's CAs", p.self, NULL, NULL, 60, "self-signed certificate"},
        {"a self-signed one, another CA", p.self, NULL, p.root_pem, 60, "self-signed certificate"},
        {"a self-signed one, trusted", p.self, NULL, p.self_pem, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        raw_srv_t s;
        peer_start(&s, PEER_HTTP1, cases[i].leaf, cases[i].chain, p.leaf_key);
        char mine[256], curls[256];
        int got = tls_get(&s, cases[i].ca, false, mine, sizeof mine);
        int curl_got = tls_get(&s, cases[i].ca, true, curls, sizeof curls);
        cr_log_info("%s: shared store \"%s\", curl's own \"%s\"", cases[i].what, mine, curls);
        cr_expect_eq(got, cases[i].want, "%s: %s", cases[i].what, mine);
        cr_expect_eq(curl_got, cases[i].want, "%s (curl's own loading): %s", cases[i].what, curls);
        cr_expect(strstr(mine, cases[i].why), "%s: %s (wanted \"%s\")", cases[i].what, mine,
                  cases[i].why);
        peer_stop(&s);
    }
    pki_free(&p);
}

/* A CA file that cannot serve fails the request, not async_http_new (the
 * file is read when a connection needs it, and may appear or be mended
 * meanwhile), with curl's error 77 and, from the shared store, the path and
 * the reason. */
Test(round13_http, a_ca_file_that_cannot_serve_fails_the_request_and_names_itself)
{
    pki_t p;
    pki_make(&p);
    raw_srv_t s;
    peer_start(&s, PEER_HTTP1, p.leaf, NULL, p.leaf_key);
    const struct {
        const char *what, *ca, *why;
    } cases[] = {
        {"missing", p.missing_pem, "No such file or directory"},
        {"empty", p.empty_pem, ""},
        {"garbage", p.garbage_pem, ""},
        {"a private key", p.key_pem, ""},
        {"a directory", p.dir, "Is a directory"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char mine[256], curls[256], want[200];
        async_http_t *http;
        async_http_opts_t o = {.ca_file = cases[i].ca};
        cr_expect_eq(async_http_new(&http, loop, &o), 0, "%s: refused at create", cases[i].what);
        async_http_destroy(http);
        int got = tls_get(&s, cases[i].ca, false, mine, sizeof mine);
        int curl_got = tls_get(&s, cases[i].ca, true, curls, sizeof curls);
        cr_log_info("%s: shared store \"%s\", curl's own \"%s\"", cases[i].what, mine, curls);
        snprintf(want, sizeof want, "CA file %s: %s", cases[i].ca, cases[i].why);
        cr_expect_eq(got, 77, "%s: %s", cases[i].what, mine);
        cr_expect_eq(curl_got, 77, "%s (curl's own loading): %s", cases[i].what, curls);
        cr_expect(!strncmp(mine, want, strlen(want)), "%s: %s (wanted \"%s...\")", cases[i].what,
                  mine, want);
    }
    peer_stop(&s);
    pki_free(&p);
}

/* --- TLS: peers that break the handshake --------------------------------------------------- */

/* A peer that takes the ClientHello and says nothing: the request's timeout
 * ends it (or its connect timeout, which covers the handshake), on time,
 * and the wait blocks in the poll. */
Test(round13_http, a_peer_stalling_mid_handshake_times_out_without_spinning)
{
    pki_t p;
    pki_make(&p);
    raw_srv_t s;
    peer_start(&s, PEER_STALL, p.leaf, NULL, p.leaf_key);
    async_http_opts_t o = {.ca_file = p.root_pem};
    async_http_request_t req = {.url = tls_url(&s), .timeout_ns = ASYNC_MSEC(1200)};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ETIMEDOUT, "%s", w.resp->errmsg);
    cr_expect_geq(w.wall, 1.15);
    cr_expect_lt(w.wall, 10.0, "a 1.2 s timeout ended after %.1f s", w.wall);
    expect_no_spin(&w, 0);
    async_http_response_free(w.resp);

    req = (async_http_request_t){.url = tls_url(&s), .timeout_ns = ASYNC_SEC(20),
                                 .connect_timeout_ns = ASYNC_MSEC(800)};
    w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ETIMEDOUT, "%s", w.resp->errmsg);
    cr_expect_geq(w.wall, 0.75);
    cr_expect_lt(w.wall, 10.0, "a 0.8 s connect timeout ended after %.1f s", w.wall);
    expect_no_spin(&w, 0);
    async_http_response_free(w.resp);
    cr_expect_eq(atomic_load(&s.st->connections), 2, "a handshake failure was retried");
    peer_stop(&s);
    pki_free(&p);
}

/* A plain HTTP answer, bytes that are no TLS record, half a flight then a
 * close or a reset: each fails at once with curl's TLS connect error and
 * OpenSSL's reason, long before the timeout, without a retry. */
Test(round13_http, a_peer_breaking_the_handshake_is_a_tls_error_at_once)
{
    pki_t p;
    pki_make(&p);
    const struct {
        const char *what;
        int mode;
    } cases[] = {
        {"a plain HTTP answer", PEER_GARBAGE},
        {"bytes that are no record", PEER_NOISE},
        {"half a flight, then a close", PEER_CUT},
        {"half a flight, then a reset", PEER_CUT_RST},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        raw_srv_t s;
        peer_start(&s, cases[i].mode, p.leaf, NULL, p.leaf_key);
        async_http_opts_t o = {.ca_file = p.root_pem, .max_retries = 2,
                               .retry_base_ns = ASYNC_MSEC(1)};
        async_http_request_t req = {.url = tls_url(&s), .timeout_ns = ASYNC_SEC(10)};
        waited_t w = run_one(&o, &req);
        cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s: %s", cases[i].what, w.resp->errmsg);
        cr_expect(strstr(w.resp->errmsg, "curl error 35"), "%s: %s", cases[i].what,
                  w.resp->errmsg);
        cr_expect_lt(w.wall, 5.0, "%s: %.1f s", cases[i].what, w.wall);
        cr_expect_eq(w.resp->attempts, 1, "%s", cases[i].what);
        expect_no_spin(&w, 2);
        async_http_response_free(w.resp);
        peer_stop(&s);
    }
    pki_free(&p);
}

/* --- TLS: ALPN and HTTP/2 ------------------------------------------------------------------- */

typedef struct many {
    test_answer_t a[20];
    int n;
} many_t;

/* n GETs at once by a client trusting the root; each must end once. */
static void get_many(raw_srv_t *s, const async_http_opts_t *o, many_t *m, int n)
{
    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, o), 0);
    memset(m, 0, sizeof *m);
    m->n = n;
    async_http_request_t req = {.url = tls_url(s), .timeout_ns = ASYNC_SEC(20)};
    for (int i = 0; i < n; i++)
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &m->a[i]), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(m->a[i].calls, 1, "request %d ended %d times", i, m->a[i].calls);
        cr_assert_not_null(m->a[i].resp);
    }
    cr_assert_eq(async_http_destroy(http), 0);
}

static void many_free(many_t *m)
{
    for (int i = 0; i < m->n; i++) async_http_response_free(m->a[i].resp);
}

/* The client prefers HTTP/2 (it waits for the first connection to learn
 * whether the host multiplexes); a server whose ALPN picks http/1.1, or
 * that offers no ALPN at all, gets every request over HTTP/1.1, on as many
 * connections as run at once, or within a host connection limit. */
Test(round13_http, alpn_choosing_http1_serves_every_request_over_http1)
{
    pki_t p;
    pki_make(&p);
    const char *alpns[] = {"http/1.1", NULL};
    for (int k = 0; k < 2; k++) {
        for (long limit = 0; limit <= 2; limit += 2) {
            peer.alpn = alpns[k];
            peer.answer_ms = 200;
            raw_srv_t s;
            peer_start(&s, PEER_HTTP1, p.leaf, NULL, p.leaf_key);
            async_http_opts_t o = {.ca_file = p.root_pem, .max_host_connections = limit};
            many_t m;
            get_many(&s, &o, &m, 20);
            for (int i = 0; i < 20; i++) {
                async_http_response_t *r = m.a[i].resp;
                cr_expect_eq(r->error, 0, "ALPN %s, limit %ld, request %d: %s",
                             alpns[k] ?: "none", limit, i, r->errmsg);
                cr_expect_str_eq(r->http_version, "HTTP/1.1");
            }
            long conns = atomic_load(&s.st->connections);
            cr_log_info("ALPN %s, limit %ld: 20 requests on %ld connections", alpns[k] ?: "none",
                        limit, conns);
            cr_expect_leq(conns, limit ? limit : 20);
            cr_expect_eq(atomic_load(&s.st->requests), 20);
            many_free(&m);
            peer_stop(&s);
        }
    }
    peer.alpn = NULL;
    peer.answer_ms = 0;
    pki_free(&p);
}

/* An HTTP/2 server that resets streams.  Every other stream of the first
 * ten reset with INTERNAL_ERROR: those requests fail with curl's HTTP/2
 * stream error, the others succeed on the same connection; with retries
 * (later streams are answered), all succeed.  Every
 * stream refused (REFUSED_STREAM, which tells the client it may send the
 * request again): the request fails after its retries, each of which curl
 * itself repeats a bounded number of times, and the wait does not spin. */
Test(round13_http, an_http2_server_resetting_streams)
{
    pki_t p;
    pki_make(&p);
    peer.alpn = "h2";
    peer.reset_every = 2;
    peer.reset_until = 10;
    peer.reset_code = 2; /* INTERNAL_ERROR */
    for (int retries = 0; retries <= 3; retries += 3) {
        raw_srv_t s;
        peer_start(&s, PEER_H2, p.leaf, NULL, p.leaf_key);
        async_http_opts_t o = {.ca_file = p.root_pem, .max_retries = retries,
                               .retry_base_ns = ASYNC_MSEC(1)};
        many_t m;
        get_many(&s, &o, &m, 10);
        int ok = 0, reset = 0;
        for (int i = 0; i < 10; i++) {
            async_http_response_t *r = m.a[i].resp;
            if (!r->error) {
                ok++;
                cr_expect_str_eq(r->http_version, "HTTP/2");
                cr_expect_str_eq(r->body, "ok");
            } else {
                reset++;
                cr_expect_eq(r->error, ASYNC_ECURL, "%s", r->errmsg);
                cr_expect(strstr(r->errmsg, "curl error 92"), "%s", r->errmsg);
            }
        }
        cr_log_info("retries %d: %d ok, %d reset, %ld connections, %ld streams", retries, ok,
                    reset, atomic_load(&s.st->connections), atomic_load(&s.st->requests));
        if (retries) {
            cr_expect_eq(ok, 10, "retries %d: %d of 10 succeeded", retries, ok);
        } else {
            cr_expect_gt(ok, 0);
            cr_expect_gt(reset, 0);
        }
        many_free(&m);
        peer_stop(&s);
    }

    peer.reset_every = 1;
    peer.reset_until = 0;
    peer.reset_code = 7; /* REFUSED_STREAM */
    raw_srv_t s;
    peer_start(&s, PEER_H2, p.leaf, NULL, p.leaf_key);
    async_http_opts_t o = {.ca_file = p.root_pem, .max_retries = 1,
                           .retry_base_ns = ASYNC_MSEC(1)};
    async_http_request_t req = {.url = tls_url(&s), .timeout_ns = ASYNC_SEC(20)};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect_eq(w.resp->attempts, 2);
    cr_expect_lt(w.wall, 10.0);
    long streams = atomic_load(&s.st->requests);
    cr_log_info("every stream refused: %s after %ld streams on %ld connections", w.resp->errmsg,
                streams, atomic_load(&s.st->connections));
    cr_expect_leq(streams, 2 * 6, "curl repeats a refused stream five times at most");
    expect_no_spin(&w, 12);
    async_http_response_free(w.resp);
    peer_stop(&s);
    peer.alpn = NULL;
    peer.reset_every = 0;
    pki_free(&p);
}

/* --- the client's own decoder ------------------------------------------------------------ */

/* What the client decodes itself since round 13, whole and cut short, for
 * every coding: raw deflate as some servers send it, br and zstd, a chain
 * of six (one more than libcurl's limit of five), identity; a HEAD answer
 * that names an encoding but has no body; and one client's handle going
 * from an encoded answer to a plain one and back (nothing of the first
 * decoder is left for the second). */
Test(round13_http, every_coding_decodes_whole_and_fails_cut_short)
{
#ifndef HAVE_BROTLI_H
    cr_skip_test("brotli/encode.h is missing (package libbrotli-dev)");
#else
    blob_t text = text_blob("id,name,city\n", 5000);
    blob_t raw = z_pack(-15, &text, 0);
    blob_t br = br_pack(3 * MIB), zs = zstd_pack(3 * MIB);
    blob_t six = z_pack(31, &text, 0);
    for (int i = 0; i < 5; i++) {
        blob_t next = z_pack(31, &six, 0);
        blob_free(&six);
        six = next;
    }
    char heads[8][200];
    can("/raw-deflate", head_of(heads[0], sizeof heads[0], "deflate", raw.n), &raw);
    can("/br", head_of(heads[1], sizeof heads[1], "br", br.n), &br);
    can("/zstd", head_of(heads[2], sizeof heads[2], "zstd", zs.n), &zs);
    can("/br-cut", head_of(heads[3], sizeof heads[3], "br", br.n / 2), &br)->send = br.n / 2;
    can("/zstd-cut", head_of(heads[4], sizeof heads[4], "zstd", zs.n / 2), &zs)->send = zs.n / 2;
    can("/six", head_of(heads[5], sizeof heads[5], "gzip, gzip, gzip, gzip, gzip, gzip", six.n),
        &six);
    can("/identity", head_of(heads[6], sizeof heads[6], "identity", text.n), &text);
    can("/plain", "HTTP/1.1 200 OK\r\nContent-Length: 2", &ok_body);
    can("/head", "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1234", NULL);
    raw_srv_t s;
    raw_start(&s, canned_answer);
    async_http_opts_t o = {.accept_encoding = "", .max_body = 16 * MIB};
    const struct {
        const char *path;
        size_t len;       /* of the body, 0 for an error */
        bool zeros;       /* the body is zeros, else the text */
        const char *why;  /* in the error */
    } cases[] = {
        {"/raw-deflate", 0, false, NULL},
        {"/br", 3 * MIB, true, NULL},
        {"/zstd", 3 * MIB, true, NULL},
        {"/br-cut", 0, true, "the br stream is cut short"},
        {"/zstd-cut", 0, true, "the zstd stream is cut short"},
        {"/six", 0, false, "more than 5 content encodings"},
        {"/identity", 0, false, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        async_http_request_t req = {.url = raw_url(&s, cases[i].path)};
        waited_t w = run_one(&o, &req);
        async_http_response_t *r = w.resp;
        if (cases[i].why) {
            cr_expect_eq(r->error, ASYNC_ECURL, "%s: %s", cases[i].path, r->errmsg);
            cr_expect(strstr(r->errmsg, cases[i].why), "%s: %s", cases[i].path, r->errmsg);
            cr_expect(strstr(r->errmsg, "curl error 61"), "%s: %s", cases[i].path, r->errmsg);
        } else if (cases[i].zeros) {
            cr_expect_eq(r->error, 0, "%s: %s", cases[i].path, r->errmsg);
            cr_expect_eq(r->body_len, cases[i].len, "%s", cases[i].path);
            cr_expect(all_zero(r->body, r->body_len), "%s", cases[i].path);
        } else {
            cr_expect_eq(r->error, 0, "%s: %s", cases[i].path, r->errmsg);
            cr_expect(r->body_len == text.n && !memcmp(r->body, text.p, text.n),
                      "%s: %zu bytes, want %zu", cases[i].path, r->body_len, text.n);
        }
        async_http_response_free(r);
    }

    async_http_t *http;
    cr_assert_eq(async_http_new(&http, loop, &o), 0);
    const char *seq[] = {"/raw-deflate", "/head", "/zstd", "/plain", "/raw-deflate"};
    for (size_t i = 0; i < sizeof seq / sizeof *seq; i++) {
        test_answer_t a = {0};
        async_http_request_t req = {.url = raw_url(&s, seq[i]),
                                    .method = i == 1 ? "HEAD" : NULL};
        cr_assert_eq(async_http_send(http, &req, test_answer_catch, &a), 0);
        cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
        cr_assert_eq(a.calls, 1);
        cr_expect_eq(a.resp->error, 0, "%s: %s", seq[i], a.resp->errmsg);
        size_t want = i == 1 ? 0 : !strcmp(seq[i], "/plain") ? 2 : !strcmp(seq[i], "/zstd") ? 3 * MIB : text.n;
        cr_expect_eq(a.resp->body_len, want, "%s", seq[i]);
        async_http_response_free(a.resp);
    }
    async_http_stats_t st;
    async_http_stats(http, &st);
    cr_expect_eq(st.easy_pooled, 1, "one handle carried every request");
    cr_assert_eq(async_http_destroy(http), 0);
    raw_stop(&s);
    blob_free(&text);
    blob_free(&raw);
    blob_free(&br);
    blob_free(&zs);
    blob_free(&six);
#endif
}

/* A redirect's own body, encoded or not, says nothing of the final
 * answer's: each response is decoded by its own Content-Encoding (libcurl
 * 7.88 does not hand over the body of a redirect it follows; the decoder
 * is dropped at each status line all the same).  And a stream followed by
 * more bytes is an error, as for curl, which rejects bytes after a gzip
 * stream's end. */
Test(round13_http, each_response_is_decoded_by_its_own_encoding)
{
    blob_t text = text_blob("a,b,c\n", 4000);
    blob_t gz = z_pack(31, &text, 0);
    blob_t gz_tail = z_pack(31, &text, 0);
    blob_add(&gz_tail, "tail", 4);
    blob_t moved = text_blob("moved\n", 1);
    char h[5][200];
    snprintf(h[0], sizeof h[0],
             "HTTP/1.1 302 Found\r\nLocation: /plain\r\nContent-Encoding: gzip\r\n"
             "Content-Length: %zu", gz.n);
    can("/r-gzip", h[0], &gz);
    snprintf(h[1], sizeof h[1], "HTTP/1.1 302 Found\r\nLocation: /gzip\r\nContent-Length: %zu",
             moved.n);
    can("/r-plain", h[1], &moved);
    can("/gzip", head_of(h[2], sizeof h[2], "gzip", gz.n), &gz);
    snprintf(h[3], sizeof h[3], "HTTP/1.1 200 OK\r\nContent-Length: %zu", text.n);
    can("/plain", h[3], &text);
    can("/tail", head_of(h[4], sizeof h[4], "gzip", gz_tail.n), &gz_tail);
    raw_srv_t s;
    raw_start(&s, canned_answer);
    async_http_opts_t o = {.accept_encoding = ""};
    expect_body(&s, &o, "/r-gzip", text.p, text.n);
    expect_body(&s, &o, "/r-plain", text.p, text.n);
    async_http_request_t req = {.url = raw_url(&s, "/tail")};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "after the end"), "%s", w.resp->errmsg);
    async_http_response_free(w.resp);
    raw_stop(&s);
    blob_free(&text);
    blob_free(&gz);
    blob_free(&gz_tail);
    blob_free(&moved);
}

/* Over HTTP/2 the same: a gzip body in DATA frames decodes whole, and one
 * cut short before the stream's END_STREAM is an error. */
Test(round13_http, over_http2_a_cut_gzip_stream_is_an_error_too)
{
    pki_t p;
    pki_make(&p);
    blob_t text = text_blob("0123456789abcdef\n", 20000);
    blob_t gz = z_pack(31, &text, 0);
    blob_t half = {0};
    blob_add(&half, gz.p, gz.n / 2);
    peer.alpn = "h2";
    const blob_t *bodies[] = {&gz, &half};
    for (int i = 0; i < 2; i++) {
        peer.h2_body = bodies[i];
        raw_srv_t s;
        peer_start(&s, PEER_H2, p.leaf, NULL, p.leaf_key);
        async_http_opts_t o = {.ca_file = p.root_pem, .accept_encoding = ""};
        async_http_request_t req = {.url = tls_url(&s)};
        waited_t w = run_one(&o, &req);
        cr_expect_str_eq(w.resp->http_version, "HTTP/2");
        if (i == 0) {
            cr_expect_eq(w.resp->error, 0, "%s", w.resp->errmsg);
            cr_expect(w.resp->body_len == text.n && !memcmp(w.resp->body, text.p, text.n),
                      "%zu bytes, want %zu", w.resp->body_len, text.n);
        } else {
            cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
            cr_expect(strstr(w.resp->errmsg, "the gzip stream is cut short"), "%s",
                      w.resp->errmsg);
        }
        async_http_response_free(w.resp);
        peer_stop(&s);
    }
    peer.h2_body = NULL;
    peer.alpn = NULL;
    blob_free(&text);
    blob_free(&gz);
    blob_free(&half);
    pki_free(&p);
}
