/* Where a random line comes from, by the size of the region it is in: a dependent random walk
 * (one 64-byte line per step, a random cyclic permutation of the region's lines) over regions
 * of 1 MiB to 512 MiB, each advised for transparent huge pages; ns a load, the second of two
 * passes of 4,000,000 steps. The step where the time jumps is the cache this VM really gives
 * one core (its L3 is shared with the host's other guests), and the plateau after it is DRAM.
 * With `load`, a thread on CPU 1 meanwhile writes random lines of another 256 MiB as fast as it
 * can (prefetched 16 at a time): whether DRAM's latency grows under the other core's traffic.
 *
 *   gcc -O2 -pthread benches/probes/latency.c -o /tmp/latency && /tmp/latency [load]
 */
#include "probe.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

static _Atomic int stop;

/* The other core's traffic: random lines of its own 256 MiB, prefetched for writing 16 at a
 * time, then written, until `stop`. */
static void *load(void *arg) {
    (void)arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(1, &set);
    sched_setaffinity(0, sizeof set, &set);
    size_t n = (256ul << 20) / 64;
    char *p = region(256ul << 20);
    uint64_t s = 99, at[16]; /* its own generator: rnd() is the main thread's */
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int i = 0; i < 16; i++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            at[i] = 64 * (s % n);
            __builtin_prefetch(p + at[i], 1);
        }
        for (int i = 0; i < 16; i++) p[at[i]]++;
    }
    return 0;
}

static size_t packed(size_t i) { return i * 64; }

static double walk(size_t mib) {
    size_t bytes = mib << 20;
    char *p = region(bytes);
    double ns = walk_ns(p, bytes / 64, packed);
    munmap(p, bytes);
    return ns;
}

int main(int argc, char **argv) {
    size_t sizes[] = {1, 2, 4, 6, 8, 12, 16, 32, 64, 128, 512};
    pthread_t other;
    int loaded = argc > 1 && strcmp(argv[1], "load") == 0;
    if (loaded) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        sched_setaffinity(0, sizeof set, &set);
        pthread_create(&other, 0, load, 0);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        printf("%4zu MiB: %6.1f ns a load%s\n", sizes[i], walk(sizes[i]),
               loaded ? " (CPU 1 writing random lines)" : "");
    if (loaded) {
        atomic_store(&stop, 1);
        pthread_join(other, 0);
    }
    return 0;
}
