/* Traps (unreachable) after printing a line: the engine reports a trap, not an exit. */
#include <stdio.h>

int main(void) {
    printf("about to trap\n");
    fflush(stdout);
    __builtin_trap();
}
