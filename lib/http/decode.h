/* Content decoding of the HTTP client's responses.  PRIVATE to lib/http.
 *
 * libcurl 7.88 decodes a Content-Encoding itself, but never checks that the
 * decoder reached the end of its stream: a gzip, deflate, br or zstd body cut
 * short inside complete HTTP framing (a Content-Length of the bytes sent, a
 * chunked body with its last chunk, a body that the close ends) was a 200
 * with the bytes decoded so far.  The client therefore takes the raw body
 * (CURLOPT_HTTP_CONTENT_DECODING 0; curl still sends the Accept-Encoding)
 * and decodes it here, with the libraries libcurl decodes with (zlib,
 * brotli, zstd); a response ends with an error when a stream is corrupt or
 * cut short. */
#ifndef ASYNC_HTTP_DECODE_H
#define ASYNC_HTTP_DECODE_H

#include <stdbool.h>
#include <stddef.h>

/* Layers of encoding a response may carry, at most: libcurl 7.88's limit
 * (CVE-2023-23916). */
#define HTTP_DECODE_MAX 5

typedef struct http_decoder http_decoder_t;

/* Takes the decoded bytes: 0, or nonzero to stop (the body is full, or
 * memory ran out), which ends the decoding with that value. */
typedef int (*http_decode_sink)(void *ud, const char *p, size_t n);

/* A decoder for a Content-Encoding value (the values of every
 * Content-Encoding header, joined with commas, in the order sent; the last
 * coding applied is decoded first).  *out is NULL when the value names only
 * identity.  Errors: ASYNC_ENOMEM, ASYNC_ENOTSUP (a coding it does not
 * know, or more than HTTP_DECODE_MAX of them), with why in err. */
int async__http_decoder_new(http_decoder_t **out, const char *codings, size_t len,
                            http_decode_sink sink, void *ud, char *err, size_t cap);

/* Decodes n raw bytes of the body into the sink.  Returns 0; the sink's
 * nonzero value; ASYNC_ENOMEM; or -1 for a corrupt stream, with why in err. */
int async__http_decoder_write(http_decoder_t *d, const char *p, size_t n, char *err, size_t cap);

/* At the end of the body: 0 when every layer that was given bytes reached
 * the end of its stream, or -1 with why in err (a stream cut short). */
int async__http_decoder_end(http_decoder_t *d, char *err, size_t cap);

/* The codings as the decoder names them ("gzip, gzip"). */
const char *async__http_decoder_name(const http_decoder_t *d);

void async__http_decoder_free(http_decoder_t *d);

#endif
