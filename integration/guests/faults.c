/* Misbehaving guest for the fault campaign (integration/test_faults.py).
 *   faults unreachable     prints "fault unreachable" then executes `unreachable`
 *   faults recurse         recurses without end (exhausts the engine's call stack)
 *   faults oob             loads from an address beyond linear memory
 *   faults div0            divides an integer by zero
 *   faults closedout       closes its own stdout, writes to it, reports errno on stderr, exits 0
 *   faults flood N         writes N bytes to stdout; on a failed write prints the errno on
 *                          stderr and exits 3
 * Each trap mode prints "fault MODE" on stdout first, so a test can tell the guest ran. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int (*volatile next_call)(int);
volatile int zero;

static int recurse(int depth) {
    /* Through a volatile function pointer: the compiler can neither inline nor loop it. */
    return next_call(depth + 1) + depth;
}

static int flood(long n) {
    static char buf[65536];
    memset(buf, 'x', sizeof buf);
    long done = 0;
    while (done < n) {
        long chunk = n - done < (long)sizeof buf ? n - done : (long)sizeof buf;
        ssize_t w = write(1, buf, (size_t)chunk);
        if (w < 0) {
            fprintf(stderr, "flood: write failed after %ld bytes: %s\n", done, strerror(errno));
            return 3;
        }
        done += w;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "flood") == 0) {
        return flood(argc > 2 ? atol(argv[2]) : 0);
    }
    if (strcmp(mode, "closedout") == 0) {
        close(1);
        ssize_t w = write(1, "lost\n", 5);
        fprintf(stderr, "closedout: write returned %ld: %s\n", (long)w,
                w < 0 ? strerror(errno) : "ok");
        return 0;
    }
    printf("fault %s\n", mode);
    fflush(stdout);
    if (strcmp(mode, "unreachable") == 0) {
        __builtin_trap(); /* the `unreachable` instruction */
    }
    if (strcmp(mode, "recurse") == 0) {
        next_call = recurse;
        return recurse(0);
    }
    if (strcmp(mode, "oob") == 0) {
        volatile int *far = (volatile int *)(uintptr_t)0xFFFFFFF0u;
        return *far;
    }
    if (strcmp(mode, "div0") == 0) {
        volatile int n = 7;
        return n / zero;
    }
    fprintf(stderr, "usage: faults unreachable|recurse|oob|div0|closedout|flood N\n");
    return 2;
}
