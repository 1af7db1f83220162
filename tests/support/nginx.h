/* A throwaway Debian nginx for the TLS and HTTP/2 tests: a temporary
 * prefix with a self-signed certificate for 127.0.0.1 (cert.pem and
 * key.pem in it), the caller's configuration, nginx in the foreground, and
 * everything removed at stop.  Skips the calling test by name (counted by
 * scripts/run-tests) when openssl or nginx is missing. */
#ifndef TEST_SUPPORT_NGINX_H
#define TEST_SUPPORT_NGINX_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct test_nginx {
    char dir[64];   /* the prefix */
    char cert[128]; /* dir/cert.pem: the CA file a client trusts */
    pid_t pid;      /* -1 when not running */
} test_nginx_t;

/* Makes the prefix /tmp/<name>-XXXXXX and its certificate. */
void test_nginx_prepare(test_nginx_t *n, const char *name);
/* Writes dir/nginx.conf: the main-context lines nginx needs (pid, error
 * log, no daemon, one worker), then conf, the caller's events and http
 * blocks (and any load_module line first).  Starts nginx and waits until
 * each of the n ports accepts connections. */
void test_nginx_start(test_nginx_t *n, const char *conf, const unsigned *ports, size_t nports);
/* After test_nginx_prepare: serves one file, www/<file> holding body, over
 * TLS and HTTP/2 on a free loopback port (nginx's worker_connections as
 * given), and writes its https URL into url. */
void test_nginx_serve_file(test_nginx_t *n, unsigned worker_connections, const char *file,
                           const char *body, char *url, size_t url_size);
/* Stops nginx and removes the prefix; harmless when never started. */
void test_nginx_stop(test_nginx_t *n);
#endif
