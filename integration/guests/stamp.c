/* Prints the wall clock (CLOCK_REALTIME, ns) as the guest's main() begins: "stamp <ns>".
 * The benchmark's start-latency breakdown uses it to see when the guest itself starts. */
#include <stdio.h>
#include <time.h>

int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    printf("stamp %lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
}
