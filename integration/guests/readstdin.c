/* Blocks reading stdin; keeps reading until end of file, then exits 0. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    char buf[4096];
    printf("reading\n");
    fflush(stdout);
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
