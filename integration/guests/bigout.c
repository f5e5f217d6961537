/* Writes N bytes to stdout and M bytes to stderr (argv[1], argv[2]) of a deterministic pattern:
 * byte i of each stream is "0123456789abcdefghijklmnopqrstuvwxyz\n"[i % 37]. */
#include <stdlib.h>
#include <unistd.h>

static const char PATTERN[] = "0123456789abcdefghijklmnopqrstuvwxyz\n";
#define PLEN 37

static int emit(int fd, long n) {
    char buf[PLEN * 1024];
    for (long i = 0; i < (long)sizeof buf; i++) {
        buf[i] = PATTERN[i % PLEN];
    }
    long done = 0;
    while (done < n) {
        long off = done % PLEN;
        long chunk = (long)sizeof buf - off;
        if (chunk > n - done) {
            chunk = n - done;
        }
        ssize_t w = write(fd, buf + off, (size_t)chunk);
        if (w < 0) {
            return 1;
        }
        done += w;
    }
    return 0;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    long m = argc > 2 ? atol(argv[2]) : 0;
    if (emit(1, n) != 0 || emit(2, m) != 0) {
        return 1;
    }
    return 0;
}
