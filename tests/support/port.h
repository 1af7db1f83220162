/* Loopback TCP ports for tests. */
#ifndef TEST_SUPPORT_PORT_H
#define TEST_SUPPORT_PORT_H
#include <stdbool.h>

/* A loopback TCP port free at the time of the call: bound, then closed, so
 * nothing listens there (0 if none could be bound). */
unsigned test_free_port(void);
/* Whether something accepts connections on 127.0.0.1:port. */
bool test_port_open(unsigned port);
#endif
