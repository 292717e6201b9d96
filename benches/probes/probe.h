/* What the newer probes share (latency.c, pages.c, wide.c): a clock, a random stream,
 * 2 MiB-aligned regions advised for transparent huge pages, a dependent random walk and narrow
 * work. Included, so each probe stays one gcc command. */
#ifndef NOVATE_PROBE_H
#define NOVATE_PROBE_H
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define HUGE (2ul << 20)

static uint64_t probe_rng = 88172645463325252ULL;

/* xorshift64 */
static inline uint64_t rnd(void) {
    probe_rng ^= probe_rng << 13;
    probe_rng ^= probe_rng >> 7;
    probe_rng ^= probe_rng << 17;
    return probe_rng;
}

static inline double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* A 2 MiB-aligned region of at least `bytes`, advised for huge pages, touched (so committed
 * before it is timed). Hand it back with `munmap(p, bytes)` (what is left of the mapping below
 * it, under 2 MiB, stays mapped: the probes are short-lived). */
static inline char *region(size_t bytes) {
    bytes = (bytes + HUGE - 1) & ~(HUGE - 1);
    char *r = mmap(0, bytes + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) { perror("mmap"); exit(1); }
    char *p = (char *)(((uintptr_t)r + HUGE - 1) & ~(HUGE - 1));
    madvise(p, bytes, MADV_HUGEPAGE);
    memset(p, 1, bytes);
    return p;
}
/* ns a load of a dependent random walk over the `k` lines of `p` at the byte offsets
 * `at(i)`, in a random cyclic order: the second (warm) of two passes of 4,000,000 steps. */
static inline double walk_ns(char *p, size_t k, size_t (*at)(size_t)) {
    size_t *perm = malloc(k * sizeof *perm);
    for (size_t i = 0; i < k; i++) perm[i] = i;
    for (size_t i = k - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = rnd() % (i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t i = 0; i < k; i++) *(char **)(p + at(perm[i])) = p + at(perm[(i + 1) % k]);
    char *q = p + at(perm[0]);
    double ns = 0;
    for (int pass = 0; pass < 2; pass++) {
        double t0 = now();
        for (long n = 0; n < 4000000; n++) q = *(char **)q;
        ns = (now() - t0) / 4e6;
    }
    if (q == 0) puts(""); /* keeps the walk */
    free(perm);
    return ns;
}

/* Narrow work: `work` dependent multiplies on `x` (one chain; ~1.1 ns each on the Zen 4 VM);
 * its low bit, to fold into a result that is printed. */
static inline uint64_t narrow_work(uint64_t x, int work) {
    for (int k = 0; k < work; k++) x = x * 6364136223846793005ULL + k;
    return x & 1;
}
#endif
