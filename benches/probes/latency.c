/* Where a random line comes from, by the size of the region it is in: a dependent random walk
 * (one 64-byte line per step, a random cyclic permutation of the region's lines) over regions
 * of 1 MiB to 512 MiB, each advised for transparent huge pages; ns a load, the second of two
 * passes of 4,000,000 steps. The step where the time jumps is the cache this VM really gives
 * one core (its L3 is shared with the host's other guests), and the plateau after it is DRAM.
 *
 *   gcc -O2 benches/probes/latency.c -o /tmp/latency && /tmp/latency
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define STEPS 4000000L

static double walk(size_t mib) {
    size_t bytes = mib << 20, n = bytes / 64;
    char *p = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    madvise(p, bytes, MADV_HUGEPAGE);
    memset(p, 0, bytes);
    uint32_t *perm = malloc(n * sizeof *perm);
    for (size_t i = 0; i < n; i++) perm[i] = i;
    uint64_t s = 12345;
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates with xorshift */
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        size_t j = s % (i + 1);
        uint32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        *(char **)(p + 64 * (size_t)perm[i]) = p + 64 * (size_t)perm[(i + 1) % n];
    double ns = 0;
    char *q = p + 64 * (size_t)perm[0];
    for (int pass = 0; pass < 2; pass++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < STEPS; i++) q = *(char **)q;
        clock_gettime(CLOCK_MONOTONIC, &b);
        ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / STEPS;
    }
    if (q == 0) puts(""); /* keeps the walk */
    free(perm);
    munmap(p, bytes);
    return ns;
}

int main(void) {
    size_t sizes[] = {1, 2, 4, 6, 8, 12, 16, 32, 64, 128, 512};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        printf("%4zu MiB: %6.1f ns a load\n", sizes[i], walk(sizes[i]));
    return 0;
}
