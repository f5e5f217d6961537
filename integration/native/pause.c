/* The pod sandbox ("pause") program of the CRI tests: holds the pod's namespaces open by
 * blocking in pause() (sigsuspend, so a signal that lands between the check and the wait is
 * not lost), reaps any child it inherits (it may be PID 1 of a pid namespace), and
 * exits 0 on SIGTERM or SIGINT so that StopPodSandbox ends it cleanly.
 *
 * Built static for x86_64-linux-musl by integration/cri_images.py and packed as a linux/amd64
 * image whose entrypoint is /pause. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_stop(int sig) {
    (void)sig;
    stop = 1;
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static int handle(int sig, void (*fn)(int)) {
    struct sigaction sa = {0};
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = sig == SIGCHLD ? SA_NOCLDSTOP | SA_RESTART : 0;
    return sigaction(sig, &sa, NULL);
}

int main(void) {
    if (handle(SIGTERM, on_stop) != 0 || handle(SIGINT, on_stop) != 0 ||
        handle(SIGCHLD, on_child) != 0) {
        static const char msg[] = "pause: sigaction failed\n";
        (void)write(2, msg, sizeof msg - 1);
        return 1;
    }
    sigset_t waited, during;
    sigemptyset(&waited);
    sigaddset(&waited, SIGTERM);
    sigaddset(&waited, SIGINT);
    sigaddset(&waited, SIGCHLD);
    sigprocmask(SIG_BLOCK, &waited, &during);
    sigdelset(&during, SIGTERM);
    sigdelset(&during, SIGINT);
    sigdelset(&during, SIGCHLD);
    while (!stop) {
        sigsuspend(&during); /* pause() with the signals above let through only here */
    }
    return 0;
}
