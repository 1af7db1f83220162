/* Blobs of bytes and the compressors that make them, for the HTTP client's
 * decoding tests (test-http-decoding.c, test-http-tls-peers.c): a growing
 * buffer, and gzip/zlib/raw deflate, brotli and zstd streams of given bytes
 * or of many zeros, made with the libraries curl itself loads (libz,
 * libbrotlienc, libzstd) opened with dlopen, since the tests link none of
 * them; a test whose library is missing is skipped by name. */
#ifndef TEST_SUPPORT_BLOB_H
#define TEST_SUPPORT_BLOB_H
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct blob {
    unsigned char *p;
    size_t n, cap;
} blob_t;

static inline void blob_add(blob_t *b, const void *p, size_t n)
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

static inline void blob_free(blob_t *b)
{
    free(b->p);
    *b = (blob_t){0};
}

/* A library curl loads, or the test is skipped (it names the library). */
static inline void *lib_open(const char *soname)
{
    void *h = dlopen(soname, RTLD_NOW);
    if (!h) cr_skip_test("%s is missing: %s", soname, dlerror());
    return h;
}

static inline void *sym(void *lib, const char *name)
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

static inline size_t feed_next(feed_t *f, const unsigned char **p)
{
    static const unsigned char zero[1 << 20];
    size_t total = f->in ? f->in->n : f->zeros;
    size_t n = total - f->at < sizeof zero ? total - f->at : sizeof zero;
    *p = f->in ? f->in->p + f->at : zero;
    f->at += n;
    return n;
}

/* zlib: wbits 31 gzip, 15 zlib (HTTP's "deflate"), -15 raw deflate. */
static inline blob_t z_pack(int wbits, const blob_t *in, size_t zeros)
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
static inline blob_t br_pack(size_t zeros)
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

static inline blob_t zstd_pack(size_t zeros)
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

static inline blob_t text_blob(const char *line, int times)
{
    blob_t b = {0};
    for (int i = 0; i < times; i++) blob_add(&b, line, strlen(line));
    return b;
}
#endif
