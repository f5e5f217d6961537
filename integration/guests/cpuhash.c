/* CPU-bound benchmark guest: hashing and integer work, the same source built to Wasm and native.
 *
 *   cpuhash [ROUNDS]     (default 120)
 *
 * Each round runs SHA-256 over a 1 MiB buffer (32-bit rotates and adds, sequential memory) and
 * 256 Ki probes into a 4 MiB table (64-bit multiply/xorshift, random memory access), then feeds
 * the results back into the buffer so no round can be skipped. It prints the final digest (both
 * builds must agree) and its own compute time, measured with CLOCK_MONOTONIC around the work
 * only, so container start-up is not part of the figure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUF_BYTES (1u << 20)
#define TABLE_WORDS (1u << 19) /* 4 MiB of uint64_t */
#define PROBES (1u << 18)

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] +
                      w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

/* SHA-256 of a whole number of 64-byte blocks (the buffer size is one), padding included. */
static void sha256(uint32_t h[8], const uint8_t *data, size_t len) {
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(h, init, sizeof init);
    for (size_t off = 0; off < len; off += 64) {
        sha256_block(h, data + off);
    }
    uint8_t pad[64] = {0x80};
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) {
        pad[63 - i] = (uint8_t)(bits >> (8 * i));
    }
    sha256_block(h, pad);
}

static uint64_t splitmix(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 120;
    uint8_t *buf = malloc(BUF_BYTES);
    uint64_t *table = malloc(TABLE_WORDS * sizeof *table);
    if (buf == NULL || table == NULL) {
        fprintf(stderr, "cpuhash: out of memory\n");
        return 1;
    }
    uint64_t seed = 0x243f6a8885a308d3ull;
    for (size_t i = 0; i < BUF_BYTES; i += 8) {
        uint64_t v = splitmix(&seed);
        memcpy(buf + i, &v, 8);
    }
    for (size_t i = 0; i < TABLE_WORDS; i++) {
        table[i] = splitmix(&seed);
    }
    double t0 = now();
    uint32_t h[8] = {0};
    uint64_t acc = seed;
    for (long r = 0; r < rounds; r++) {
        sha256(h, buf, BUF_BYTES);
        uint64_t x = ((uint64_t)h[0] << 32 | h[1]) ^ acc;
        for (uint32_t i = 0; i < PROBES; i++) {
            x ^= x >> 33;
            x *= 0xff51afd7ed558ccdull;
            x ^= x >> 29;
            uint64_t *slot = &table[x & (TABLE_WORDS - 1)];
            *slot += x | 1;
            x += *slot;
        }
        acc = x;
        size_t at = (size_t)(acc % (BUF_BYTES / 32)) * 32;
        memcpy(buf + at, h, 32);
    }
    double elapsed = now() - t0;
    printf("cpuhash rounds=%ld digest=%08x%08x%08x%08x acc=%016llx seconds=%.3f\n", rounds, h[0],
           h[1], h[2], h[3], (unsigned long long)acc, elapsed);
    free(table);
    free(buf);
    return 0;
}
