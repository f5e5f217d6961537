/* Prints a greeting, each argv element (after argv[0]) on its own line, and $GREETING if set. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("hello from wasm\n");
    for (int i = 1; i < argc; i++) {
        printf("%s\n", argv[i]);
    }
    const char *greeting = getenv("GREETING");
    if (greeting != NULL) {
        printf("GREETING=%s\n", greeting);
    }
    return 0;
}
