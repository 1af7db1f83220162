/* The trusted CAs of the HTTP client's TLS connections, parsed once per CA
 * file for the whole process.  PRIVATE to lib/http.
 *
 * libcurl 7.88 parses the CA bundle again for every new TLS connection
 * whenever a CA directory is configured beside it, which Debian's build is
 * (/etc/ssl/certs beside ca-certificates.crt): about 16 ms of CPU for its
 * 145 certificates, a connection.  With OpenSSL under curl, the connection's
 * SSL_CTX instead gets the one store this file keeps for that bundle. */
#ifndef ASYNC_HTTP_CA_STORE_H
#define ASYNC_HTTP_CA_STORE_H

#include <curl/curl.h>

/* Sets up easy handle e to trust the CAs of ca_file (NULL: the bundle curl
 * was built with) from the shared store.  With no bundle to name (curl built
 * with a directory only) or a TLS library other than OpenSSL under curl, it
 * sets CURLOPT_CAINFO to ca_file and CURLOPT_CAPATH to NULL (those CAs
 * only), and curl loads them for each connection; likewise when the
 * environment names an https:// proxy, whose own handshake the shared store
 * must not check.
 * ca_file must stay valid while e is used.  Returns a curl setopt error, or
 * CURLE_OK.  A bundle that cannot be read fails each TLS connection with
 * CURLE_SSL_CACERT_BADFILE, as curl's own loading does. */
CURLcode async__http_ca_setup(CURL *e, const char *ca_file);

/* Why this thread's last TLS connection that trusts ca_file (NULL: curl's
 * bundle) could not get its CAs ("CA file PATH: reason"), or NULL when it
 * did; curl itself only says that the callback failed. */
const char *async__http_ca_error(const char *ca_file);

/* How many times a bundle was parsed so far in this process (tests). */
unsigned long async__http_ca_parses(void);

#endif
