/* Content decoding of the HTTP client's responses (decode.h says why the
 * client does it rather than libcurl): a stack of up to HTTP_DECODE_MAX
 * layers, each gzip, deflate (zlib-wrapped or, as some servers send it,
 * raw), br or zstd, the raw body going into the last coding applied and each
 * layer's output into the one under it, the innermost into the sink in
 * pieces of at most OUT_CHUNK bytes.  A stream must end where its body
 * ends: bytes after its end are an error, as for curl, and so is a body that
 * ends before the stream (async__http_decoder_end); zstd alone may carry
 * several frames.  Nothing is decoded ahead of the sink:
 * once it says stop (the body reached max_body), no layer produces another
 * byte, so a body of a few kilobytes that would decode to gigabytes costs
 * max_body and the decoders' windows, never more.
 *
 * The libraries are the ones libcurl decodes with: zlib, brotli and zstd,
 * linked directly.  zlib's and brotli's allocations go through the
 * allocator seam; zstd's go to malloc (its custom allocator is not in its
 * stable API). */
#include "decode.h"
#include "ascii.h"
#include <brotli/decode.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include "core/core_internal.h"

#define OUT_CHUNK ((size_t)16 << 10)

/* --- the layers ------------------------------------------------------------ */

enum coding { GZIP, DEFLATE, BR, ZSTD };
static const char *const coding_names[] = {"gzip", "deflate", "br", "zstd"};

typedef struct layer {
    enum coding kind;
    bool started;   /* the codec's state is set up */
    bool fed;       /* it was given at least one byte */
    bool done;      /* its stream reached its end */
    bool raw;       /* deflate sent without its zlib wrapper */
    union {
        z_stream z;
        BrotliDecoderState *br;
        void *zstd;
    } u;
    unsigned char *out; /* OUT_CHUNK bytes */
} layer_t;

struct http_decoder {
    int n;
    layer_t l[HTTP_DECODE_MAX]; /* l[0] takes the raw body: the last coding applied */
    http_decode_sink sink;
    void *ud;
    char name[64];
};

static void *z_alloc(void *opaque, uInt items, uInt size)
{
    (void)opaque;
    return size && items > SIZE_MAX / size ? NULL : async__malloc((size_t)items * size);
}

static void z_free(void *opaque, void *p)
{
    (void)opaque;
    async__free(p);
}

static void *br_alloc(void *opaque, size_t size)
{
    (void)opaque;
    return async__malloc(size);
}

static void br_free(void *opaque, void *p)
{
    (void)opaque;
    async__free(p);
}

/* Sets up layer L's codec; false without memory.  gzip accepts a zlib
 * stream too, as curl's does (windowBits + 32). */
static bool layer_start(layer_t *L)
{
    switch (L->kind) {
    case GZIP:
    case DEFLATE:
        memset(&L->u.z, 0, sizeof L->u.z);
        L->u.z.zalloc = z_alloc;
        L->u.z.zfree = z_free;
        L->started = inflateInit2(&L->u.z, L->kind == GZIP ? MAX_WBITS + 32 : MAX_WBITS) == Z_OK;
        break;
    case BR:
        L->started = (L->u.br = BrotliDecoderCreateInstance(br_alloc, br_free, NULL)) != NULL;
        break;
    case ZSTD:
        L->started = (L->u.zstd = ZSTD_createDStream()) != NULL;
        break;
    }
    return L->started;
}

static void layer_stop(layer_t *L)
{
    if (!L->started) return;
    switch (L->kind) {
    case GZIP:
    case DEFLATE: inflateEnd(&L->u.z); break;
    case BR: BrotliDecoderDestroyInstance(L->u.br); break;
    case ZSTD: ZSTD_freeDStream(L->u.zstd); break;
    }
    L->started = false;
}

static int feed(http_decoder_t *d, int i, const unsigned char *p, size_t n, char *err, size_t cap);

/* Hands layer i's output on: to the layer under it, or to the sink. */
static int emit(http_decoder_t *d, int i, const unsigned char *p, size_t n, char *err, size_t cap)
{
    if (i + 1 < d->n) return feed(d, i + 1, p, n, err, cap);
    return d->sink(d->ud, (const char *)p, n);
}

static int corrupt(const layer_t *L, const char *why, char *err, size_t cap)
{
    snprintf(err, cap, "Error while processing content unencoding: %s (%s)", why,
             coding_names[L->kind]);
    return -1;
}

/* Bytes after the end of a gzip, deflate or br stream: an error, as for
 * curl (a second gzip member included, which curl rejects too). */
static int trailing(const layer_t *L, char *err, size_t cap)
{
    return corrupt(L, "data after the end of the stream", err, cap);
}

static int feed_zlib(http_decoder_t *d, int i, const unsigned char *p, size_t n, char *err,
                     size_t cap)
{
    layer_t *L = &d->l[i];
    z_stream *z = &L->u.z;
    bool first = z->total_in == 0 && z->total_out == 0;
    z->next_in = (unsigned char *)p;
    z->avail_in = (uInt)n;
    for (;;) {
        z->next_out = L->out;
        z->avail_out = (uInt)OUT_CHUNK;
        int rc = inflate(z, Z_NO_FLUSH);
        size_t got = OUT_CHUNK - z->avail_out;
        if (rc == Z_DATA_ERROR && L->kind == DEFLATE && !L->raw && first && !got) {
            /* "deflate" without its zlib wrapper, as some servers send it
             * (and curl takes it): start again as a raw stream. */
            inflateEnd(z);
            memset(z, 0, sizeof *z);
            z->zalloc = z_alloc;
            z->zfree = z_free;
            L->raw = true;
            if (inflateInit2(z, -MAX_WBITS) != Z_OK) {
                L->started = false;
                return ASYNC_ENOMEM;
            }
            z->next_in = (unsigned char *)p;
            z->avail_in = (uInt)n;
            continue;
        }
        if (got) {
            int e = emit(d, i, L->out, got, err, cap);
            if (e) return e;
        }
        if (rc == Z_STREAM_END) {
            L->done = true;
            return z->avail_in ? trailing(L, err, cap) : 0;
        }
        if (rc == Z_BUF_ERROR || (rc == Z_OK && !z->avail_in && z->avail_out)) return 0;
        if (rc == Z_MEM_ERROR) return ASYNC_ENOMEM;
        if (rc != Z_OK) return corrupt(L, z->msg ? z->msg : "zlib error", err, cap);
    }
}

static int feed_br(http_decoder_t *d, int i, const unsigned char *p, size_t n, char *err,
                   size_t cap)
{
    layer_t *L = &d->l[i];
    const uint8_t *in = p;
    for (;;) {
        uint8_t *out = L->out;
        size_t room = OUT_CHUNK;
        BrotliDecoderResult r = BrotliDecoderDecompressStream(L->u.br, &n, &in, &room, &out, NULL);
        size_t got = OUT_CHUNK - room;
        if (got) {
            int e = emit(d, i, L->out, got, err, cap);
            if (e) return e;
        }
        if (r == BROTLI_DECODER_RESULT_SUCCESS) {
            L->done = true;
            return n ? trailing(L, err, cap) : 0;
        }
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) return 0;
        if (r != BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT)
            return corrupt(L, BrotliDecoderErrorString(BrotliDecoderGetErrorCode(L->u.br)), err, cap);
    }
}

static int feed_zstd(http_decoder_t *d, int i, const unsigned char *p, size_t n, char *err,
                     size_t cap)
{
    layer_t *L = &d->l[i];
    ZSTD_inBuffer in = {p, n, 0};
    for (;;) {
        ZSTD_outBuffer out = {L->out, OUT_CHUNK, 0};
        size_t before = in.pos;
        size_t r = ZSTD_decompressStream(L->u.zstd, &out, &in);
        if (ZSTD_isError(r)) return corrupt(L, ZSTD_getErrorName(r), err, cap);
        /* 0: a frame ended and is flushed.  Another may follow, as curl
         * allows: the stream is open again once its bytes are taken. */
        if (r == 0) L->done = true;
        else if (in.pos > before) L->done = false;
        if (out.pos) {
            int e = emit(d, i, L->out, out.pos, err, cap);
            if (e) return e;
        }
        if (in.pos == in.size && out.pos < out.size) return 0;
    }
}

static int feed(http_decoder_t *d, int i, const unsigned char *p, size_t n, char *err, size_t cap)
{
    layer_t *L = &d->l[i];
    if (!n) return 0;
    if (L->done && L->kind != ZSTD) return trailing(L, err, cap);
    if (!L->started && !layer_start(L)) return ASYNC_ENOMEM;
    L->fed = true;
    switch (L->kind) {
    case GZIP:
    case DEFLATE: return feed_zlib(d, i, p, n, err, cap);
    case BR: return feed_br(d, i, p, n, err, cap);
    case ZSTD: return feed_zstd(d, i, p, n, err, cap);
    }
    return -1;
}

/* --- the decoder ----------------------------------------------------------- */

int async__http_decoder_new(http_decoder_t **out, const char *codings, size_t len,
                            http_decode_sink sink, void *ud, char *err, size_t cap)
{
    *out = NULL;
    enum coding kinds[HTTP_DECODE_MAX];
    int n = 0;
    const char *p = codings, *end = codings + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
        const char *t = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t') p++;
        size_t tl = (size_t)(p - t);
        if (!tl) continue;
#define IS(s) (tl == strlen(s) && !async__ascii_ncasecmp(t, s, tl))
        if (IS("identity")) continue;
        enum coding k;
        bool have = true;
        if (IS("gzip") || IS("x-gzip")) k = GZIP;
        else if (IS("deflate")) k = DEFLATE;
        else if (IS("br")) k = BR;
        else if (IS("zstd")) k = ZSTD;
        else have = false, k = GZIP;
#undef IS
        if (!have) {
            snprintf(err, cap, "Unrecognized content encoding type: %.*s", (int)(tl < 40 ? tl : 40),
                     t);
            return ASYNC_ENOTSUP;
        }
        if (n == HTTP_DECODE_MAX) {
            snprintf(err, cap, "Reject response due to more than %d content encodings",
                     HTTP_DECODE_MAX);
            return ASYNC_ENOTSUP;
        }
        kinds[n++] = k;
    }
    if (!n) return 0;
    /* The output buffers are written before they are read: not zeroed. */
    http_decoder_t *d = async__malloc(sizeof *d + (size_t)n * OUT_CHUNK);
    if (!d) return ASYNC_ENOMEM;
    memset(d, 0, sizeof *d);
    d->n = n;
    d->sink = sink;
    d->ud = ud;
    unsigned char *buf = (unsigned char *)(d + 1);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        /* The header lists codings in the order applied: the last first. */
        d->l[i].kind = kinds[n - 1 - i];
        d->l[i].out = buf + (size_t)i * OUT_CHUNK;
        at += (size_t)snprintf(d->name + at, sizeof d->name - at, "%s%s", i ? ", " : "",
                               coding_names[kinds[i]]);
        if (at >= sizeof d->name) at = sizeof d->name - 1;
    }
    *out = d;
    return 0;
}

int async__http_decoder_write(http_decoder_t *d, const char *p, size_t n, char *err, size_t cap)
{
    return feed(d, 0, (const unsigned char *)p, n, err, cap);
}

int async__http_decoder_end(http_decoder_t *d, char *err, size_t cap)
{
    for (int i = 0; i < d->n; i++) {
        const layer_t *L = &d->l[i];
        if (L->fed && !L->done) {
            snprintf(err, cap, "Error while processing content unencoding: the %s stream is cut "
                               "short",
                     coding_names[L->kind]);
            return -1;
        }
    }
    return 0;
}

const char *async__http_decoder_name(const http_decoder_t *d) { return d->name; }

void async__http_decoder_free(http_decoder_t *d)
{
    if (!d) return;
    for (int i = 0; i < d->n; i++) layer_stop(&d->l[i]);
    async__free(d);
}
