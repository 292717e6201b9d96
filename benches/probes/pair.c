/* Do the two vCPUs slow each other when both run wide integer work on their own data (no line
 * in common)? The same loop (four chains a step, two L1 loads and two stores, a 16 KiB buffer of
 * its own) timed on CPU 0 and on CPU 1 alone, then on both at once.
 *
 *   gcc -O2 -pthread benches/probes/pair.c -o /tmp/pair && /tmp/pair
 */
#include "probe.h"
#include <pthread.h>
#include <sched.h>

#define STEPS 200000000L

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static void *run(void *arg) {
    int cpu = (int)(long)arg;
    pin(cpu);
    static __thread uint64_t buf[2048];
    uint64_t x = cpu + 1, y = x + 1, z = x + 2, w = x + 3;
    double t0 = now();
    for (long i = 0; i < STEPS; i++) {
        buf[i & 2047] += x ^ y;
        x += (x >> 3) ^ buf[(i + 7) & 2047];
        y ^= y << 1 ^ x;
        z += z >> 2 ^ y;
        w ^= w + z;
        buf[(i + 100) & 2047] ^= w;
    }
    double ns = (now() - t0) / STEPS;
    printf("  cpu %d: %.2f ns a step%s\n", cpu, ns, (x ^ y ^ z ^ w) == 42 ? " " : "");
    return 0;
}

int main(void) {
    puts("alone:");
    run((void *)0);
    run((void *)1);
    puts("together:");
    pthread_t a, b;
    pthread_create(&a, 0, run, (void *)0);
    pthread_create(&b, 0, run, (void *)1);
    pthread_join(a, 0);
    pthread_join(b, 0);
    return 0;
}
