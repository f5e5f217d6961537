/* Spins forever without making a system call (tests kill of a busy guest). */
#include <stdio.h>

volatile unsigned long counter;

int main(void) {
    printf("looping\n");
    fflush(stdout);
    for (;;) {
        counter++;
    }
}
