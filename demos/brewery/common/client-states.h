/* The states the brewery demo asks the API about: the lab's four, and every
 * state the API knows (the fifty and district_of_columbia), as by_state
 * takes them.  Shared with tests/test-brewery-client-peer.c, which checks
 * the demo's and the lab's Python client's counts for each. */
#ifndef BREWERY_CLIENT_STATES_H
#define BREWERY_CLIENT_STATES_H

#include <stdbool.h>
#include <stddef.h>

#define CLIENT_NLAB_STATES 4
#define CLIENT_NALL_STATES 51

extern const char *const client_lab_states[CLIENT_NLAB_STATES];
extern const char *const client_all_states[CLIENT_NALL_STATES];

/* Whether name is one of client_all_states, compared without case and with
 * ' ' or '-' for '_' (as the API reads it).  Any thread may call it. */
bool client_known_state(const char *name);

/* name's index in client_all_states under the same comparison, or -1. */
int client_state_index(const char *name);

#endif
