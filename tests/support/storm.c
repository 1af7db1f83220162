/* See storm.h. */
#include <criterion/criterion.h>
#include "storm.h"

test_tally_t test_storm_tally(const unsigned char *seen, const uint32_t *put_done, uint32_t ids,
                              uint32_t per_id)
{
    test_tally_t t = {0};
    for (uint32_t id = 0; id < ids; id++) {
        uint32_t pd = put_done[id];
        for (uint32_t k = 0; k < per_id; k++) {
            unsigned char n = seen[(size_t)id * per_id + k];
            cr_assert_leq(n, 1, "item %u/%u got %u times", id, k, n);
            if (k < pd) {
                if (n) t.delivered++;
                else t.lost++;
            } else if (k == pd) {
                t.in_hand += n;
            } else {
                cr_assert_eq(n, 0, "item %u/%u got but never put", id, k);
            }
        }
    }
    return t;
}
