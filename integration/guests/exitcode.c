/* Exits with the integer given as argv[1] (0 without an argument). */
#include <stdlib.h>

int main(int argc, char **argv) {
    return argc > 1 ? atoi(argv[1]) : 0;
}
