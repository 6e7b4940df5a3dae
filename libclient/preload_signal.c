/* SA_RESTART for shmnet sockets. The kernel restarts a blocking socket call interrupted by
 * a handler installed with SA_RESTART (signal(7)); shmnet's calls wait in the library,
 * where only the handler that ran can tell. So the program's handlers are installed
 * behind a trampoline that notes, per thread, which signal was handled; after an EINTR
 * the library asks (shmnet__set_restart_hook) and waits on if that handler wants restarts.
 * sigaction answers with what the program installed, never the trampoline. Handlers set
 * by raw system calls are not seen: their signals interrupt with EINTR, as before. */
#include "libclient/preload_int.h"

static struct sigaction user_act[NSIG]; /* the program's, for each wrapped signal */
static bool wrapped[NSIG];
static int act_lock; /* atomic: a spinlock; sigaction may be called from a handler */
static __thread volatile sig_atomic_t handled; /* last signal a wrapped handler took */

static void trampoline(int sig, siginfo_t *si, void *uc)
{
    int e = errno; /* the interrupted call's EINTR must survive the handler */
    handled = sig;
    const struct sigaction *u = &user_act[sig];
    if (u->sa_flags & SA_SIGINFO)
        u->sa_sigaction(sig, si, uc);
    else if (u->sa_handler != SIG_DFL && u->sa_handler != SIG_IGN)
        u->sa_handler(sig);
    errno = e;
}

/* The library's hook: phase 0 before a sleep forgets earlier handlers; phase 1 after an
 * EINTR says whether the handler that ran asked for restarts. */
static int restart_hook(int phase)
{
    int sig = handled;
    handled = 0;
    return phase == 1 && sig > 0 && sig < NSIG && (user_act[sig].sa_flags & SA_RESTART);
}

__attribute__((constructor)) static void signal_init(void)
{
    shmnet__set_restart_hook(restart_hook);
}

EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (sig <= 0 || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP)
        return REAL(sigaction)(sig, act, old);
    struct sigaction kold = {0}, k = {0}, prev;
    bool handler = act && ((act->sa_flags & SA_SIGINFO) ||
                           (act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN));
    while (__atomic_exchange_n(&act_lock, 1, __ATOMIC_ACQUIRE))
        ;
    prev = user_act[sig];
    bool was = wrapped[sig];
    if (handler) {
        /* The program's act first: a signal that comes in between finds it. */
        user_act[sig] = *act;
        k = *act;
        k.sa_flags |= SA_SIGINFO;
        k.sa_sigaction = trampoline;
    }
    int r = REAL(sigaction)(sig, handler ? &k : act, &kold);
    if (r == 0 && act)
        wrapped[sig] = handler;
    else if (handler)
        user_act[sig] = prev;
    __atomic_store_n(&act_lock, 0, __ATOMIC_RELEASE);
    if (r == 0 && old)
        *old = was && kold.sa_sigaction == trampoline ? prev : kold;
    return r;
}

/* glibc's signal(): BSD semantics, which restart (SA_RESTART), through sigaction above. */
EXPORT sighandler_t signal(int sig, sighandler_t h)
{
    struct sigaction a = {.sa_handler = h, .sa_flags = SA_RESTART}, o;
    sigemptyset(&a.sa_mask);
    sigaddset(&a.sa_mask, sig);
    return sigaction(sig, &a, &o) < 0 ? SIG_ERR : o.sa_handler;
}
