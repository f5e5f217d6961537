/* Sleeps argv[1] seconds (default 3600) in nanosleep, i.e. blocked in poll_oneoff. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    long secs = argc > 1 ? atol(argv[1]) : 3600;
    printf("sleeping %ld\n", secs);
    fflush(stdout);
    struct timespec ts = {.tv_sec = secs, .tv_nsec = 0};
    while (nanosleep(&ts, &ts) != 0) {
    }
    printf("slept\n");
    return 0;
}
