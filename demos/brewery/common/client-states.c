/* See client-states.h. */
#include "client-states.h"

const char *const client_lab_states[CLIENT_NLAB_STATES] = {"district_of_columbia", "maryland",
                                                           "new_york", "virginia"};

const char *const client_all_states[CLIENT_NALL_STATES] = {
    "alabama", "alaska", "arizona", "arkansas", "california", "colorado", "connecticut",
    "delaware", "district_of_columbia", "florida", "georgia", "hawaii", "idaho", "illinois",
    "indiana", "iowa", "kansas", "kentucky", "louisiana", "maine", "maryland",
    "massachusetts", "michigan", "minnesota", "mississippi", "missouri", "montana",
    "nebraska", "nevada", "new_hampshire", "new_jersey", "new_mexico", "new_york",
    "north_carolina", "north_dakota", "ohio", "oklahoma", "oregon", "pennsylvania",
    "rhode_island", "south_carolina", "south_dakota", "tennessee", "texas", "utah", "vermont",
    "virginia", "washington", "west_virginia", "wisconsin", "wyoming"};

bool client_known_state(const char *name) { return client_state_index(name) >= 0; }

int client_state_index(const char *name)
{
    for (size_t i = 0; i < CLIENT_NALL_STATES; i++) {
        const char *a = client_all_states[i], *b = name;
        for (; *a && *b; a++, b++) {
            char c = (char)(*b >= 'A' && *b <= 'Z' ? *b - 'A' + 'a' : *b);
            if (c == ' ' || c == '-') c = '_';
            if (c != *a) break;
        }
        if (!*a && !*b) return (int)i;
    }
    return -1;
}
