/* numpy's legacy generator, bit for bit, so that the lab's data are the
 * notebooks' data: MT19937 seeded by init_genrand (np.random.seed(s) and
 * RandomState(s) with an integer s < 2^32), randint as legacy numpy draws it
 * and random_sample's 53-bit doubles.
 *
 * randint(low, high) with numpy's default dtype (int64 on 64-bit Linux) goes
 * through random_bounded_uint64_fill with use_masked set: for a range
 * rng = high - low - 1 that fits in 32 bits it takes one 32-bit output per
 * try, masks it to the smallest power of two minus one covering rng, and
 * draws again while the result is above rng; wider ranges take 64-bit
 * outputs (high word first) the same way.  A 32-bit draw keeps no buffered
 * bits between calls, so drawing an array in pieces gives the same stream as
 * drawing it at once, which is what lets the lab generate rows on demand. */
#include "lab.h"

#define MT_N 624
#define MT_M 397

void lab_mt_seed(lab_mt_t *mt, uint32_t seed)
{
    mt->key[0] = seed;
    for (int i = 1; i < MT_N; i++)
        mt->key[i] = 1812433253U * (mt->key[i - 1] ^ (mt->key[i - 1] >> 30)) + (uint32_t)i;
    mt->pos = MT_N;
}

/* Regenerates the whole block, as numpy's mt19937_gen does. */
static void generate(lab_mt_t *mt)
{
    uint32_t *k = mt->key, y;
    int i;
    for (i = 0; i < MT_N - MT_M; i++) {
        y = (k[i] & 0x80000000U) | (k[i + 1] & 0x7fffffffU);
        k[i] = k[i + MT_M] ^ (y >> 1) ^ (-(y & 1U) & 0x9908b0dfU);
    }
    for (; i < MT_N - 1; i++) {
        y = (k[i] & 0x80000000U) | (k[i + 1] & 0x7fffffffU);
        k[i] = k[i + (MT_M - MT_N)] ^ (y >> 1) ^ (-(y & 1U) & 0x9908b0dfU);
    }
    y = (k[MT_N - 1] & 0x80000000U) | (k[0] & 0x7fffffffU);
    k[MT_N - 1] = k[MT_M - 1] ^ (y >> 1) ^ (-(y & 1U) & 0x9908b0dfU);
    mt->pos = 0;
}

uint32_t lab_mt_next32(lab_mt_t *mt)
{
    if (mt->pos >= MT_N) generate(mt);
    uint32_t y = mt->key[mt->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    return y ^ (y >> 18);
}

double lab_mt_double(lab_mt_t *mt)
{
    uint32_t a = lab_mt_next32(mt) >> 5, b = lab_mt_next32(mt) >> 6;
    return ((double)a * 67108864.0 + (double)b) / 9007199254740992.0;
}

int64_t lab_mt_randint(lab_mt_t *mt, int64_t low, int64_t high)
{
    uint64_t rng = (uint64_t)high - (uint64_t)low - 1, mask = rng, v;
    if (high <= low + 1) return low;
    for (int s = 1; s < 64; s <<= 1) mask |= mask >> s;
    if (rng <= 0xffffffffU) {
        if (rng == 0xffffffffU) return low + (int64_t)lab_mt_next32(mt);
        while ((v = lab_mt_next32(mt) & mask) > rng) {}
    } else {
        do {
            v = (uint64_t)lab_mt_next32(mt) << 32;
            v |= lab_mt_next32(mt);
            v &= mask;
        } while (v > rng);
    }
    return (int64_t)((uint64_t)low + v);
}
