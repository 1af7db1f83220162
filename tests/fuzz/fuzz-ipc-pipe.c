/* Fuzz target ipc-pipe: the receiving side of a message pipe's framing
 * (a 4-byte length, then the bytes).  The input's first byte picks how the
 * harness receives (async_ipc_pipe_recv_dl, or async_ipc_pipe_tryrecv, with a
 * small buffer, falling back to async_ipc_pipe_recv_alloc_dl when the message
 * is longer; recv_alloc_dl alone; each after async_ipc_pipe_poll_dl; with or
 * without a deadline); the
 * rest is written raw into the peer's descriptor, as a hostile or broken
 * peer process would, and the peer end is closed.  Every message received
 * must equal the one a reference parse of the same bytes finds, and the end
 * must be ASYNC_EEOF after whole messages, ASYNC_EIO inside one, and an error
 * at a length over ASYNC_IPC_PIPE_MAX_MSG, which no sender can produce.
 * The allocator seam checks that no single allocation exceeds what a
 * message of ASYNC_IPC_PIPE_MAX_MSG needs: a peer must not make the receiver
 * allocate gigabytes by announcing them. */
#include "fuzz.h"
#include "async.h"
#include "async/ipc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char fuzz_target_name[] = "ipc-pipe";

#define HDR 4
/* The buffer grows by doubling from 4096, so a message of MAX_MSG may take
 * twice its size. */
#define ALLOC_LIMIT (2 * (ASYNC_IPC_PIPE_MAX_MSG + HDR))

static size_t stream_len;

static void check_size(size_t size)
{
    if (size > ALLOC_LIMIT)
        fuzz_fail("a peer that sent %zu bytes made the receiver allocate %zu bytes", stream_len,
                  size);
}

static void *a_malloc(size_t size, void *ud)
{
    (void)ud;
    check_size(size);
    return malloc(size);
}

static void *a_realloc(void *p, size_t size, void *ud)
{
    (void)ud;
    check_size(size);
    return realloc(p, size);
}

static void a_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

static const async_allocator_t checked = {a_malloc, a_realloc, a_free, NULL};

static int64_t deadline(unsigned mode)
{
    return mode & 4 ? async_deadline_after(ASYNC_SEC(5)) : ASYNC_FOREVER;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool installed;
    if (!installed) {
        async_set_allocator(&checked);
        installed = true;
    }
    if (size < 2) return 0;
    unsigned mode = data[0], cap = data[1];
    const uint8_t *s = data + 2;
    size_t len = size - 2;
    stream_len = len;
    async_ipc_pipe_t *a, *b;
    int err = async_ipc_pipe_new(&a, &b, 0);
    if (err) fuzz_fail("async_ipc_pipe_new: %s", async_strerror(err));
    /* The socketpair's buffer (over 200 KiB) holds any input libFuzzer makes
     * (-max_len), so this write does not block. */
    if (len && write(async_ipc_pipe_fd(b), s, len) != (ssize_t)len) fuzz_fail("short write");
    async_ipc_pipe_free(b);

    size_t pos = 0;
    unsigned char *buf = malloc(cap ? cap : 1);
    for (;;) {
        /* The reference: what the next receive must give. */
        size_t left = len - pos;
        int want = 0;
        uint32_t n = 0;
        if (left == 0) {
            want = ASYNC_EEOF;
        } else if (left < HDR) {
            want = ASYNC_EIO;
        } else {
            memcpy(&n, s + pos, HDR);
            if (n > ASYNC_IPC_PIPE_MAX_MSG) want = 1; /* some error */
            else if (n > left - HDR) want = ASYNC_EIO;
        }

        if (mode & 2) {
            /* A length over the maximum may be reported by poll already. */
            err = async_ipc_pipe_poll_dl(a, 0);
            if (err && want != 1) fuzz_fail("poll with everything buffered: %s", async_strerror(err));
        }
        void *msg = NULL;
        size_t got = (size_t)-1;
        if (mode & 1) {
            err = async_ipc_pipe_recv_alloc_dl(&msg, &got, a, deadline(mode));
        } else {
            /* Everything is buffered and the peer closed, so the try form
             * never has to wait: it must give what recv_dl gives. */
            err = mode & 8 ? async_ipc_pipe_tryrecv(a, buf, cap, &got)
                           : async_ipc_pipe_recv_dl(a, buf, cap, &got, deadline(mode));
            if (err == ASYNC_EINVAL && want == 0 && n > cap) {
                if (got != n) fuzz_fail("too small a buffer reported %zu for %u", got, n);
                got = (size_t)-1;
                err = async_ipc_pipe_recv_alloc_dl(&msg, &got, a, deadline(mode));
            } else if (err == 0) {
                msg = buf;
            }
        }
        if (want == 1) {
            if (err == 0 || err == ASYNC_EEOF)
                fuzz_fail("a length of %u over the maximum gave %s", n, async_strerror(err));
            break;
        }
        if (err != want)
            fuzz_fail("at offset %zu of %zu: got \"%s\", want \"%s\"", pos, len,
                      async_strerror(err), want ? async_strerror(want) : "a message");
        if (want) break;
        if (got != n || (n && memcmp(msg, s + pos + HDR, n) != 0))
            fuzz_fail("message at offset %zu differs (length %zu, want %u)", pos, got, n);
        if (msg != buf) async_ipc_msg_free(msg);
        pos += HDR + n;
    }
    free(buf);
    async_ipc_pipe_free(a);
    return 0;
}
