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

/* The bundle a client's TLS connections share a parsed store of: ca_file,
 * or curl's own bundle when ca_file is NULL; decided once per client.  NULL
 * when they cannot: curl built with a CA directory only, a TLS library other
 * than OpenSSL under curl, or an https:// proxy in the environment (curl
 * hands the proxy's handshake to the same callback, and that one must be
 * checked against the system's CAs, not against ca_file). */
const char *async__http_ca_shared(const char *ca_file);

/* Sets up easy handle e to trust the CAs of ca_file (NULL: the system's):
 * with shared (async__http_ca_shared's answer, not NULL) from the store of
 * that bundle; without, curl loads ca_file itself for each connection, with
 * CURLOPT_CAPATH NULL (those CAs only).  ca_file and shared must stay valid
 * while e is used.  Returns a curl setopt error, or CURLE_OK.  A bundle
 * that cannot be read fails each TLS connection with
 * CURLE_SSL_CACERT_BADFILE, as curl's own loading does. */
CURLcode async__http_ca_setup(CURL *e, const char *ca_file, const char *shared);

/* Why this thread's last TLS connection that shares the store of bundle
 * shared could not get its CAs ("CA file PATH: reason"), or NULL when it did
 * (or shared is NULL: curl's own message says it then); curl itself only
 * says that the callback failed. */
const char *async__http_ca_error(const char *shared);

/* How many times a bundle was parsed so far in this process (tests). */
unsigned long async__http_ca_parses(void);

#endif
