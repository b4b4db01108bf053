#include "pvbackup/common.h"

#include "pvbackup/interrupt.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    if (stop_requested) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_requested = 1;
    static const char msg[] = "\npvbackup: stopping at the next safe point (signal again to "
                              "stop at once)\n";
    ssize_t ignored = write(2, msg, sizeof(msg) - 1);
    (void)ignored;
}

void pvb_interrupt_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

bool pvb_interrupted(void)
{
    return stop_requested != 0;
}

void pvb_interrupt_request(void)
{
    stop_requested = 1;
}
