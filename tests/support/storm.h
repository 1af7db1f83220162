/* The ledger of a kill storm on a process-shared queue (test-ipc-hostile.c,
 * test-ipc-queue-faults.c): producers, each with an id, put items (id, k)
 * for k = 0, 1, ... and record in put_done[id] how many puts returned 0;
 * consumers count each item they get in seen[id * per_id + k].  Producers
 * and consumers are killed at random while items flow. */
#ifndef TEST_SUPPORT_STORM_H
#define TEST_SUPPORT_STORM_H
#include <stdint.h>

typedef struct test_tally {
    uint64_t delivered; /* items put and got */
    uint64_t lost;      /* items put and never got: taken by a dead consumer */
    uint64_t in_hand;   /* items got that a producer died before recording */
} test_tally_t;

/* Reads the ledger of producers 0 to ids - 1, once every process of the
 * storm has ended.  The item at put_done[id] may have been committed by a
 * producer killed before it could record it: got, it counts in in_hand.
 * Fails the test if an item was got twice, or got beyond that and never
 * put. */
test_tally_t test_storm_tally(const unsigned char *seen, const uint32_t *put_done, uint32_t ids,
                              uint32_t per_id);
#endif
