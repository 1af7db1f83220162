/* The DNS wire format as the tests' fake servers read and answer it
 * (test-net-dns.c, test-net-dns-hostile.c): the question of a query, and
 * the head of its reply. */
#ifndef TEST_SUPPORT_DNS_WIRE_H
#define TEST_SUPPORT_DNS_WIRE_H
#include <stddef.h>

/* Reads the question of query q (n bytes): its name, dotted, into name (cap
 * bytes, at least 65; a longer name is cut), and its type into *qtype (OUT).
 * Returns the offset just past the question (its name, type and class), or
 * 0 if the query ends before that. */
size_t test_dns_question(const unsigned char *q, size_t n, char *name, size_t cap, unsigned *qtype);

/* Starts the reply r to query q whose question ends at qend: the header and
 * the question copied, the flags of a response with recursion desired and
 * available and no error (NOERROR), every count 0.  r holds at least qend
 * bytes. */
void test_dns_reply_head(const unsigned char *q, size_t qend, unsigned char *r);
#endif
