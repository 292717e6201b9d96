/* The round trip of a cache line between CPU 0 and CPU 1 (one store and one load each way),
 * averaged over each of 60 rounds of 200,000 round trips, in ns. On a VM the two vCPUs can be
 * moved between host cores: a series that changes level mid-run shows it (what a lookup stage
 * on the other core pays for each hand-over).
 *
 *   gcc -O2 -pthread benches/probes/crosscore.c -o /tmp/crosscore && /tmp/crosscore
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#define ROUNDS 60
#define PER 200000L

static _Alignas(128) _Atomic long ping;
static _Alignas(128) _Atomic long pong;

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static void *other(void *arg) {
    (void)arg;
    pin(1);
    for (long i = 1; i <= ROUNDS * PER; i++) {
        while (atomic_load_explicit(&ping, memory_order_acquire) != i) {}
        atomic_store_explicit(&pong, i, memory_order_release);
    }
    return 0;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, 0, other, 0);
    pin(0);
    for (long r = 0; r < ROUNDS; r++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long k = 1; k <= PER; k++) {
            long i = r * PER + k;
            atomic_store_explicit(&ping, i, memory_order_release);
            while (atomic_load_explicit(&pong, memory_order_acquire) != i) {}
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
        printf("%.0f%c", ns / PER, r + 1 == ROUNDS ? '\n' : ' ');
    }
    pthread_join(t, 0);
    return 0;
}
