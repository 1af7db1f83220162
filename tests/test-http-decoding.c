/* The HTTP client's decoding (lib/http/decode.c) against hostile bodies:
 * bodies of a few kilobytes that decode to hundreds of megabytes (gzip,
 * deflate, gzip twice, br, zstd), sent at once or trickled; an encoding the
 * client did not ask for; corrupt, cut short and doubly encoded streams; and
 * every coding the client decodes itself, whole and cut short.  The decoded
 * size must stop at max_body with an error that says so, the peak RSS
 * (getrusage in a forked child) must stay near max_body, and a wait must
 * block in the poll.  The compressed bodies come from tests/support/blob.h. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <async.h>
#include <async/http.h>
#include "support/http_fixture.h"
#include "support/answer.h"
#include "support/blob.h"

/* The scripted server of canned answers (below): a test adds its answers,
 * then starts it (canned_start), and the suite's teardown stops it whatever
 * the test's outcome, so that a failed check leaves no server running. */
static raw_srv_t canned_srv;

static void teardown(void)
{
    raw_stop(&canned_srv); /* signals nothing unless it started (pid > 0) */
    http_fixture_teardown();
}

TestSuite(http_decoding, .init = http_fixture_setup, .fini = teardown, .timeout = 90);


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

/* Starts the file's scripted server on the answers added so far (its
 * processes see those, forked after them); the teardown stops it. */
static raw_srv_t *canned_start(void)
{
    raw_start(&canned_srv, canned_answer);
    return &canned_srv;
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
    pid_t test = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        raw_die_with(test);
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
    raw_srv_t *s = canned_start();
    const size_t max_body = 8 * MIB;
    char want[96];
    snprintf(want, sizeof want, "response body larger than %zu bytes", max_body);
    for (size_t i = 0; i < n; i++) {
        bomb_t *b = &bombs[i];
        bomb_seen_t w = bomb_in_child(s, b->path, max_body);
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
}

Test(http_decoding, zlib_bombs_stop_at_max_body_in_bounded_memory)
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

Test(http_decoding, brotli_and_zstd_bombs_stop_at_max_body_in_bounded_memory)
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
Test(http_decoding, a_trickled_bomb_stops_at_max_body_without_spinning)
{
    blob_t bomb = z_pack(31, NULL, 256 * MIB);
    char head[160];
    canned_t *c = can("/trickle", head_of(head, sizeof head, "gzip", bomb.n), &bomb);
    c->piece = 256;
    c->every_ms = 50;
    raw_srv_t *s = canned_start();
    async_http_opts_t o = {.accept_encoding = "gzip", .max_body = 4 * MIB};
    async_http_request_t req = {.url = raw_url(s, "/trickle")};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "response body larger than 4194304 bytes"), "%s",
              w.resp->errmsg);
    cr_expect_leq(w.resp->body_len, 4 * MIB);
    cr_expect(all_zero(w.resp->body, w.resp->body_len));
    expect_no_spin(&w, 20);
    async_http_response_free(w.resp);
    blob_free(&bomb);
}

/* --- encodings asked for and not ----------------------------------------------------- */


/* A client that asked for no encoding gets the bytes as they came, bomb or
 * not, and the header that says what they are.  One that asked for gzip
 * only still has curl decode what curl knows (br here), held to max_body
 * the same; what curl does not know is a precise error. */
Test(http_decoding, encodings_not_asked_for)
{
    blob_t bomb = z_pack(31, NULL, 64 * MIB);
    blob_t text = text_blob("brewery,city,state\n", 2000);
    blob_t gz = z_pack(31, &text, 0);
    char h1[160], h2[160], h3[160];
    can("/bomb", head_of(h1, sizeof h1, "gzip", bomb.n), &bomb);
    can("/gzip-text", head_of(h2, sizeof h2, "gzip", gz.n), &gz);
    can("/xz", head_of(h3, sizeof h3, "xz", text.n), &text);
    raw_srv_t *s = canned_start();

    async_http_opts_t plain = {.max_body = 4 * MIB};
    expect_body(s, &plain, "/bomb", bomb.p, bomb.n); /* the bytes as sent, not decoded */
    async_http_request_t req = {.url = raw_url(s, "/bomb")};
    waited_t w = run_one(&plain, &req);
    cr_expect_str_eq(async_http_response_header(w.resp, "Content-Encoding") ?: "(none)", "gzip");
    async_http_response_free(w.resp);

    async_http_opts_t gzip_only = {.accept_encoding = "gzip", .max_body = 4 * MIB};
    expect_body(s, &gzip_only, "/gzip-text", text.p, text.n);

    req.url = raw_url(s, "/xz");
    w = run_one(&gzip_only, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "curl error 61"), "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "content encoding"), "%s", w.resp->errmsg);
    async_http_response_free(w.resp);
    blob_free(&bomb);
    blob_free(&text);
    blob_free(&gz);
}

/* --- corrupt, cut short, encoded twice ------------------------------------------------ */

/* A gzip stream with one byte changed: in its compressed data, in the CRC
 * of its trailer, in the length of its trailer.  zlib finds each, and the
 * request fails with curl's decoding error and zlib's reason. */
Test(http_decoding, a_corrupt_gzip_stream_is_a_decoding_error)
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
    raw_srv_t *s = canned_start();
    async_http_opts_t o = {.accept_encoding = ""};
    for (int i = 0; i < 3; i++) {
        async_http_request_t req = {.url = raw_url(s, paths[i])};
        waited_t w = run_one(&o, &req);
        cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s: %s", paths[i], w.resp->errmsg);
        cr_expect(strstr(w.resp->errmsg, "curl error 61"), "%s: %s", paths[i], w.resp->errmsg);
        async_http_response_free(w.resp);
        blob_free(&gz[i]);
    }
    blob_free(&text);
}

/* A gzip stream cut off half-way, its HTTP framing whole or not: the
 * Content-Length promises the whole stream and the connection closes
 * early; or the framing itself is complete (a Content-Length of the bytes
 * sent, a chunked body with its last chunk, a body that the close ends)
 * while the gzip stream inside it is not.  Each is an error: the body is
 * not all there. */
Test(http_decoding, a_gzip_stream_cut_short_is_an_error)
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
    raw_srv_t *s = canned_start();
    async_http_opts_t o = {.accept_encoding = ""};
    const char *paths[] = {"/promised", "/framed", "/chunked", "/close-delimited"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        async_http_request_t req = {.url = raw_url(s, paths[i])};
        waited_t w = run_one(&o, &req);
        cr_expect_neq(w.resp->error, 0, "%s: a cut gzip stream succeeded with %zu of %zu bytes",
                      paths[i], w.resp->body_len, text.n);
        cr_expect_lt(w.resp->body_len, text.n, "%s", paths[i]);
        async_http_response_free(w.resp);
    }
    blob_free(&text);
    blob_free(&gz);
    blob_free(&chunked);
}

/* A body encoded twice is decoded as often as its Content-Encoding says,
 * in one header or two, and no more: "gzip" on a body gzipped twice gives
 * the inner gzip stream, untouched. */
Test(http_decoding, a_body_gzipped_twice_is_decoded_as_often_as_it_says)
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
    raw_srv_t *s = canned_start();
    async_http_opts_t o = {.accept_encoding = ""};
    expect_body(s, &o, "/both", text.p, text.n);
    expect_body(s, &o, "/two-headers", text.p, text.n);
    expect_body(s, &o, "/said-once", once.p, once.n); /* the inner stream */
    blob_free(&text);
    blob_free(&once);
    blob_free(&twice);
}

/* --- the client's own decoder ------------------------------------------------------------ */

/* What the client decodes itself since round 13, whole and cut short, for
 * every coding: raw deflate as some servers send it, br and zstd, a chain
 * of six (one more than libcurl's limit of five), identity; a HEAD answer
 * that names an encoding but has no body; and one client's handle going
 * from an encoded answer to a plain one and back (nothing of the first
 * decoder is left for the second). */
Test(http_decoding, every_coding_decodes_whole_and_fails_cut_short)
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
    raw_srv_t *s = canned_start();
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
        async_http_request_t req = {.url = raw_url(s, cases[i].path)};
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
        async_http_request_t req = {.url = raw_url(s, seq[i]),
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
Test(http_decoding, each_response_is_decoded_by_its_own_encoding)
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
    raw_srv_t *s = canned_start();
    async_http_opts_t o = {.accept_encoding = ""};
    expect_body(s, &o, "/r-gzip", text.p, text.n);
    expect_body(s, &o, "/r-plain", text.p, text.n);
    async_http_request_t req = {.url = raw_url(s, "/tail")};
    waited_t w = run_one(&o, &req);
    cr_expect_eq(w.resp->error, ASYNC_ECURL, "%s", w.resp->errmsg);
    cr_expect(strstr(w.resp->errmsg, "after the end"), "%s", w.resp->errmsg);
    async_http_response_free(w.resp);
    blob_free(&text);
    blob_free(&gz);
    blob_free(&gz_tail);
    blob_free(&moved);
}

/* Over HTTP/2 the same (a gzip body in DATA frames decodes whole, and one
 * cut short before the stream's END_STREAM is an error) needs a TLS peer:
 * tests/test-http-tls-peers.c, over_http2_a_cut_gzip_stream_is_an_error_too. */
