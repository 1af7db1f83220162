/* The HTTP client's TLS against peers the test plays itself (certificates
 * made here with libcrypto, servers forked with support/http_fixture.h's
 * raw_start_conn): the wrong host name, expired and not-yet-valid
 * certificates, self-signed ones, chains with and without their
 * intermediate, CA files that are missing, empty, garbage, a directory or a
 * key; a peer that stalls mid-handshake, sends garbage or a plain HTTP
 * answer instead of a ServerHello, or closes half-way through its flight;
 * ALPN that picks http/1.1 when the client prefers HTTP/2; an HTTP/2 server
 * that resets streams, and one that sends a gzip body cut short. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <async.h>
#include <async/http.h>
#include "support/http_fixture.h"
#include "support/http_expect.h"
#include "support/answer.h"
#include "support/blob.h"

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
    if (!p->dir[0]) return; /* never made */
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

/* The test's certificates (made by the suite's setup). */
static pki_t pki;

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

/* The process group of the peer that runs, if any: the teardown ends it
 * when a failed check left the test before its peer_stop. */
static pid_t peer_group;

/* Starts a TLS peer in the given mode with leaf (and chain, which may be
 * NULL) as its certificate, for the key of every leaf, pki.leaf_key. */
static void peer_start(raw_srv_t *s, int mode, X509 *leaf, X509 *chain)
{
    SSL_CTX_free(peer.ctx);
    peer.ctx = peer_ctx(leaf, chain, pki.leaf_key);
    peer.mode = mode;
    raw_start_conn(s, tls_conn);
    peer_group = s->pid;
}

static void peer_stop(raw_srv_t *s)
{
    /* A pid of 0 or below (the peer never started) would make raw_stop's
     * kill(-pid) signal this process's group, or every process. */
    if (s->pid > 0) raw_stop(s);
    peer_group = 0;
    SSL_CTX_free(peer.ctx);
    peer.ctx = NULL;
}

/* One request of the peer (req gives all but the URL) by a new client with
 * options o, measured by run_one; the caller frees the response. */
static waited_t tls_ask(raw_srv_t *s, const async_http_opts_t *o, async_http_request_t req)
{
    req.url = tls_url(s);
    return run_one(o, &req);
}

/* --- the suite: the certificates made before each test, the peer's settings
 * cleared after it ----------------------------------------------------------------- */

static void setup(void)
{
    http_fixture_setup();
    pki_make(&pki);
}

static void teardown(void)
{
    if (peer_group > 0) { /* 0 or below would signal this group, or every process */
        kill(-peer_group, SIGKILL);
        waitpid(peer_group, NULL, 0);
    }
    SSL_CTX_free(peer.ctx);
    memset(&peer, 0, sizeof peer);
    pki_free(&pki);
    http_fixture_teardown();
}

TestSuite(http_tls_peers, .init = setup, .fini = teardown, .timeout = 90);

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
    waited_t w = tls_ask(s, &o, (async_http_request_t){.timeout_ns = ASYNC_SEC(20)});
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
Test(http_tls_peers, certificates_are_judged_as_curl_judges_them)
{
    const struct {
        const char *what;
        X509 *leaf, *chain;
        const char *ca;
        int want;          /* curl's error, 0 for success */
        const char *why;   /* in the message */
    } cases[] = {
        {"a leaf of the root", pki.leaf, NULL, pki.root_pem, 0, ""},
        {"a chain through the intermediate", pki.leaf_of_mid, pki.mid, pki.root_pem, 0, ""},
        {"the intermediate trusted alone", pki.leaf_of_mid, pki.mid, pki.mid_pem, 0, ""},
        {"the intermediate trusted, not sent", pki.leaf_of_mid, NULL, pki.mid_pem, 0, ""},
        {"the intermediate not sent", pki.leaf_of_mid, NULL, pki.root_pem, 60,
         "unable to get local issuer certificate"},
        {"the wrong host name", pki.wrong_name, NULL, pki.root_pem, 60,
         "no alternative certificate subject name matches target host name '127.0.0.1'"},
        {"an expired certificate", pki.expired, NULL, pki.root_pem, 60, "certificate has expired"},
        {"a certificate not yet valid", pki.not_yet, NULL, pki.root_pem, 60,
         "certificate is not yet valid"},
        {"a self-signed one, the system's CAs", pki.self, NULL, NULL, 60,
         "self-signed certificate"},
        {"a self-signed one, another CA", pki.self, NULL, pki.root_pem, 60,
         "self-signed certificate"},
        {"a self-signed one, trusted", pki.self, NULL, pki.self_pem, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        raw_srv_t s;
        peer_start(&s, PEER_HTTP1, cases[i].leaf, cases[i].chain);
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
}

/* A CA file that cannot serve fails the request, not async_http_new (the
 * file is read when a connection needs it, and may appear or be mended
 * meanwhile), with curl's error 77 and, from the shared store, the path and
 * the reason. */
Test(http_tls_peers, a_ca_file_that_cannot_serve_fails_the_request_and_names_itself)
{
    raw_srv_t s;
    peer_start(&s, PEER_HTTP1, pki.leaf, NULL);
    const struct {
        const char *what, *ca, *why;
    } cases[] = {
        {"missing", pki.missing_pem, "No such file or directory"},
        {"empty", pki.empty_pem, ""},
        {"garbage", pki.garbage_pem, ""},
        {"a private key", pki.key_pem, ""},
        {"a directory", pki.dir, "Is a directory"},
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
}

/* --- TLS: peers that break the handshake --------------------------------------------------- */

/* A peer that takes the ClientHello and says nothing: the request's timeout
 * ends it (or its connect timeout, which covers the handshake), on time,
 * and the wait blocks in the poll. */
Test(http_tls_peers, a_peer_stalling_mid_handshake_times_out_without_spinning)
{
    raw_srv_t s;
    peer_start(&s, PEER_STALL, pki.leaf, NULL);
    async_http_opts_t o = {.ca_file = pki.root_pem};
    waited_t w = tls_ask(&s, &o, (async_http_request_t){.timeout_ns = ASYNC_MSEC(1200)});
    EXPECT_FAILED(w.resp, ASYNC_ETIMEDOUT, NULL, "");
    cr_expect_geq(w.wall, 1.15);
    cr_expect_lt(w.wall, 10.0, "a 1.2 s timeout ended after %.1f s", w.wall);
    expect_no_spin(&w, 0);
    async_http_response_free(w.resp);

    w = tls_ask(&s, &o, (async_http_request_t){.timeout_ns = ASYNC_SEC(20),
                                               .connect_timeout_ns = ASYNC_MSEC(800)});
    EXPECT_FAILED(w.resp, ASYNC_ETIMEDOUT, NULL, "");
    cr_expect_geq(w.wall, 0.75);
    cr_expect_lt(w.wall, 10.0, "a 0.8 s connect timeout ended after %.1f s", w.wall);
    expect_no_spin(&w, 0);
    async_http_response_free(w.resp);
    cr_expect_eq(atomic_load(&s.st->connections), 2, "a handshake failure was retried");
    peer_stop(&s);
}

/* A plain HTTP answer, bytes that are no TLS record, half a flight then a
 * close or a reset: each fails at once with curl's TLS connect error and
 * OpenSSL's reason, long before the timeout, without a retry. */
Test(http_tls_peers, a_peer_breaking_the_handshake_is_a_tls_error_at_once)
{
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
        peer_start(&s, cases[i].mode, pki.leaf, NULL);
        async_http_opts_t o = {.ca_file = pki.root_pem, .max_retries = 2,
                               .retry_base_ns = ASYNC_MSEC(1)};
        waited_t w = tls_ask(&s, &o, (async_http_request_t){.timeout_ns = ASYNC_SEC(10)});
        EXPECT_FAILED(w.resp, ASYNC_ECURL, "curl error 35", cases[i].what);
        cr_expect_lt(w.wall, 5.0, "%s: %.1f s", cases[i].what, w.wall);
        cr_expect_eq(w.resp->attempts, 1, "%s", cases[i].what);
        expect_no_spin(&w, 2);
        async_http_response_free(w.resp);
        peer_stop(&s);
    }
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
Test(http_tls_peers, alpn_choosing_http1_serves_every_request_over_http1)
{
    const char *alpns[] = {"http/1.1", NULL};
    for (int k = 0; k < 2; k++) {
        for (long limit = 0; limit <= 2; limit += 2) {
            peer.alpn = alpns[k];
            peer.answer_ms = 200;
            raw_srv_t s;
            peer_start(&s, PEER_HTTP1, pki.leaf, NULL);
            async_http_opts_t o = {.ca_file = pki.root_pem, .max_host_connections = limit};
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
}

/* An HTTP/2 server that resets streams.  Every other stream of the first
 * ten reset with INTERNAL_ERROR: those requests fail with curl's HTTP/2
 * stream error, the others succeed on the same connection; with retries
 * (later streams are answered), all succeed.  Every
 * stream refused (REFUSED_STREAM, which tells the client it may send the
 * request again): the request fails after its retries, each of which curl
 * itself repeats a bounded number of times, and the wait does not spin. */
Test(http_tls_peers, an_http2_server_resetting_streams)
{
    peer.alpn = "h2";
    peer.reset_every = 2;
    peer.reset_until = 10;
    peer.reset_code = 2; /* INTERNAL_ERROR */
    for (int retries = 0; retries <= 3; retries += 3) {
        raw_srv_t s;
        peer_start(&s, PEER_H2, pki.leaf, NULL);
        async_http_opts_t o = {.ca_file = pki.root_pem, .max_retries = retries,
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
                EXPECT_FAILED(r, ASYNC_ECURL, "curl error 92", "");
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
    peer_start(&s, PEER_H2, pki.leaf, NULL);
    async_http_opts_t o = {.ca_file = pki.root_pem, .max_retries = 1,
                           .retry_base_ns = ASYNC_MSEC(1)};
    waited_t w = tls_ask(&s, &o, (async_http_request_t){.timeout_ns = ASYNC_SEC(20)});
    EXPECT_FAILED(w.resp, ASYNC_ECURL, NULL, "");
    cr_expect_eq(w.resp->attempts, 2);
    cr_expect_lt(w.wall, 10.0);
    long streams = atomic_load(&s.st->requests);
    cr_log_info("every stream refused: %s after %ld streams on %ld connections", w.resp->errmsg,
                streams, atomic_load(&s.st->connections));
    cr_expect_leq(streams, 2 * 6, "curl repeats a refused stream five times at most");
    expect_no_spin(&w, 12);
    async_http_response_free(w.resp);
    peer_stop(&s);
}

Test(http_tls_peers, over_http2_a_cut_gzip_stream_is_an_error_too)
{
    blob_t text = text_blob("0123456789abcdef\n", 20000);
    blob_t gz = z_pack(31, &text, 0);
    blob_t half = {0};
    blob_add(&half, gz.p, gz.n / 2);
    peer.alpn = "h2";
    const blob_t *bodies[] = {&gz, &half};
    for (int i = 0; i < 2; i++) {
        peer.h2_body = bodies[i];
        raw_srv_t s;
        peer_start(&s, PEER_H2, pki.leaf, NULL);
        async_http_opts_t o = {.ca_file = pki.root_pem, .accept_encoding = ""};
        waited_t w = tls_ask(&s, &o, (async_http_request_t){0});
        cr_expect_str_eq(w.resp->http_version, "HTTP/2");
        if (i == 0) {
            cr_expect_eq(w.resp->error, 0, "%s", w.resp->errmsg);
            cr_expect(w.resp->body_len == text.n && !memcmp(w.resp->body, text.p, text.n),
                      "%zu bytes, want %zu", w.resp->body_len, text.n);
        } else {
            EXPECT_FAILED(w.resp, ASYNC_ECURL, "the gzip stream is cut short", "");
        }
        async_http_response_free(w.resp);
        peer_stop(&s);
    }
    blob_free(&text);
    blob_free(&gz);
    blob_free(&half);
}
