/* setsockopt / getsockopt: what the library keeps itself (timeouts, non-blocking, linger),
 * what it forwards to the daemon, and the options replayed on a listener's members. */
#include "libclient/client_impl.h"

#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

static int64_t tv_to_ns(const struct timeval *tv)
{
    if (tv->tv_sec < 0)
        return -1;
    if (tv->tv_sec > INT64_MAX / 1000000000ll - 1)
        return 0;
    return (int64_t)tv->tv_sec * 1000000000ll + tv->tv_usec * 1000ll;
}

/* A TCP option the daemon took. Several workers: on a socket that may still listen
 * (neither connecting nor connected), remembered for the listener members listen() makes;
 * on a listener, passed on to its members (best effort, as on s). Only sockets that set
 * options before listen or connect pay for the log. */
static void opt_record(struct csock *s, const struct shm_req *req)
{
    int i = 0;

    if (s->att->nparts > 1 && sock_tstate(s) == TS_NONE) {
        /* the TX lock: two threads may set options at once, as on a kernel socket */
        fam_lock(&s->sp->tx_lock);
        if (!s->opts)
            s->opts = calloc(1, sizeof(*s->opts)); /* NULL: not replayed (best effort) */
        struct optlog *l = s->opts;
        while (l && i < l->n && (l->o[i].level != req->arg0 || l->o[i].name != req->arg1))
            i++;
        if (l && i < OPTLOG_MAX) {
            l->o[i].level = req->arg0;
            l->o[i].name = req->arg1;
            l->o[i].len = req->optlen;
            memcpy(l->o[i].val, req->opt, req->optlen);
            if (i == l->n)
                l->n++;
        }
        pthread_mutex_unlock(&s->sp->tx_lock);
    }
    for (int k = 0; k < grp_n(s); k++) {
        struct shm_req o = *req;
        member_call(s->grp[k], &o);
    }
}

static int do_setsockopt(struct csock *s, int level, int name, const void *val, socklen_t len)
{
    struct shm_req req = {.op = SHM_OP_SETSOCKOPT, .arg0 = level, .arg1 = name};
    struct shm_cpl cpl = {0};
    int r;

    if (!val && len)
        return -EFAULT;
    if (level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO)) {
        struct timeval tv;
        if (!val)
            return -EFAULT;
        if (len < sizeof(tv))
            return -EINVAL;
        memcpy(&tv, val, sizeof(tv));
        if (tv.tv_usec < 0 || tv.tv_usec >= 1000000)
            return -EDOM;
        if (name == SO_RCVTIMEO)
            s->rcvtimeo = tv_to_ns(&tv);
        else
            s->sndtimeo = tv_to_ns(&tv);
        return 0;
    }
    if (level == SOL_SOCKET && name == SO_RCVLOWAT) { /* the library's readiness test */
        int v;
        if (!val || len < sizeof(v))
            return -EINVAL;
        memcpy(&v, val, sizeof(v));
        __atomic_store_n(&s->rcvlowat, v < 0 ? INT_MAX : v, __ATOMIC_RELAXED);
        return 0;
    }
    if (level == SOL_SOCKET && (name == SO_TIMESTAMP || name == SO_TIMESTAMPNS)) {
        /* The daemon stamps the records (datagram sockets); the library picks the form. */
        unsigned bit = name == SO_TIMESTAMP ? SHMNET_WANT_TS : SHMNET_WANT_TSNS;
        int on = 0;
        if (!val || len < sizeof(on))
            return -EINVAL;
        memcpy(&on, val, sizeof(on));
        /* One form at a time, the last asked for; either off turns both off (Linux). */
        unsigned both = SHMNET_WANT_TS | SHMNET_WANT_TSNS;
        unsigned now = __atomic_and_fetch(&s->want, ~both, __ATOMIC_RELAXED);
        if (on)
            now = __atomic_or_fetch(&s->want, bit, __ATOMIC_RELAXED);
        if (s->type == SOCK_DGRAM) {
            int any = !!(now & (SHMNET_WANT_TS | SHMNET_WANT_TSNS));
            req.arg1 = SO_TIMESTAMP;
            req.optlen = sizeof(any);
            memcpy(req.opt, &any, sizeof(any));
            return sock_request(s, &req, &cpl);
        }
        return 0; /* a stream carries no per-datagram times: accepted, as Linux does */
    }
    if (level == IPPROTO_IP && (name == IP_PKTINFO || name == IP_RECVTOS)) {
        /* Control messages the library builds from each record's header. */
        unsigned bit = name == IP_PKTINFO ? SHMNET_WANT_PKTINFO : SHMNET_WANT_TOS;
        int on = 0;
        if (len < 1)
            return -EINVAL;
        memcpy(&on, val, len < sizeof(on) ? len : sizeof(on)); /* Linux takes a byte too */
        if (on)
            __atomic_fetch_or(&s->want, bit, __ATOMIC_RELAXED);
        else
            __atomic_fetch_and(&s->want, ~bit, __ATOMIC_RELAXED);
        return 0;
    }
    if (len > SHM_OPT_MAX)
        return -EINVAL;
    req.optlen = (uint16_t)len;
    if (len)
        memcpy(req.opt, val, len);
    /* TCP_CORK and TCP_NODELAY on a connection cannot fail in the daemon, and servers flip
     * them around every response (nginx's tcp_nopush): post them like a TX kick, without
     * waiting for the completion. Requests of a channel are handled in order, so the bytes
     * sent before and after are corked or pushed as they would be. */
    if (level == IPPROTO_TCP && (name == TCP_CORK || name == TCP_NODELAY) && len >= sizeof(int) &&
        s->type == SOCK_STREAM && sock_tstate(s) == TS_CONNECTED) {
        req.handle = s->handle;
        return att_call(s->att, s->pt, &req, NULL) < 0 ? dead_err(s, OP_OTHER) : 0;
    }
    r = sock_request(s, &req, &cpl);
    if (r < 0)
        return r;
    if (s->type == SOCK_STREAM)
        opt_record(s, &req);
    if (level == SOL_SOCKET && name == SO_LINGER && len >= sizeof(struct linger)) {
        struct linger lg;
        memcpy(&lg, val, sizeof(lg));
        s->linger_s = lg.l_onoff ? (lg.l_linger < 0 ? 0 : lg.l_linger) : -1;
    }
    return 0;
}

int shmnet_setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
{
    return (int)WITH_SOCK(fd, s, do_setsockopt(s, level, optname, optval, optlen));
}

static void put_opt(void *val, socklen_t *len, const void *src, size_t n)
{
    if (*len < n)
        n = *len;
    memcpy(val, src, n);
    *len = (socklen_t)n;
}

static int do_getsockopt(struct csock *s, int level, int name, void *val, socklen_t *len)
{
    struct shm_req req = {.op = SHM_OP_GETSOCKOPT, .arg0 = level, .arg1 = name};
    struct shm_cpl cpl = {0};
    int r, v;

    if (!val || !len)
        return -EFAULT;
    if ((int)*len < 0)
        return -EINVAL;
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_RCVTIMEO:
        case SO_SNDTIMEO: {
            int64_t ns = name == SO_RCVTIMEO ? s->rcvtimeo : s->sndtimeo;
            struct timeval tv = {0};
            if (ns > 0) {
                tv.tv_sec = ns / 1000000000ll;
                tv.tv_usec = ns % 1000000000ll / 1000;
            }
            put_opt(val, len, &tv, sizeof(tv));
            return 0;
        }
        case SO_RCVLOWAT:
            v = __atomic_load_n(&s->rcvlowat, __ATOMIC_RELAXED);
            v = v < 1 ? 1 : v;
            put_opt(val, len, &v, sizeof(v));
            return 0;
        case SO_TYPE:
            v = s->type;
            put_opt(val, len, &v, sizeof(v));
            return 0;
        case SO_DOMAIN:
            v = AF_INET;
            put_opt(val, len, &v, sizeof(v));
            return 0;
        case SO_PROTOCOL:
            v = s->type == SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP;
            put_opt(val, len, &v, sizeof(v));
            return 0;
        default:
            break;
        }
    }
    if ((level == IPPROTO_IP && (name == IP_PKTINFO || name == IP_RECVTOS)) ||
        (level == SOL_SOCKET && (name == SO_TIMESTAMP || name == SO_TIMESTAMPNS))) {
        unsigned bit = name == IP_PKTINFO     ? SHMNET_WANT_PKTINFO
                       : name == IP_RECVTOS   ? SHMNET_WANT_TOS
                       : level == IPPROTO_IP  ? 0
                       : name == SO_TIMESTAMP ? SHMNET_WANT_TS
                                              : SHMNET_WANT_TSNS;
        v = !!(__atomic_load_n(&s->want, __ATOMIC_RELAXED) & bit);
        put_opt(val, len, &v, sizeof(v));
        return 0;
    }
    r = sock_request(s, &req, &cpl);
    if (r < 0)
        return r;
    if (cpl.optlen > SHM_OPT_MAX)
        cpl.optlen = SHM_OPT_MAX;
    if (s->type == SOCK_STREAM && level == IPPROTO_TCP && name == TCP_INFO) {
        struct shm_tcp_info si = {0};
        struct tcp_info ti;
        memset(&ti, 0, sizeof(ti));
        memcpy(&si, cpl.opt, cpl.optlen < sizeof(si) ? cpl.optlen : sizeof(si));
        if (cpl.optlen) { /* 0: the connection is gone, all zero */
            ti.tcpi_state = si.state;
            ti.tcpi_ca_state = si.ca_state;
            ti.tcpi_retransmits = si.retransmits;
            ti.tcpi_options = si.options;
            ti.tcpi_snd_wscale = si.snd_wscale & 0xf;
            ti.tcpi_rcv_wscale = si.rcv_wscale & 0xf;
            ti.tcpi_rto = si.rto_us;
            ti.tcpi_snd_mss = si.snd_mss;
            ti.tcpi_rcv_mss = si.snd_mss;
            ti.tcpi_rtt = si.rtt_us;
            ti.tcpi_rttvar = si.rttvar_us;
            ti.tcpi_snd_cwnd = si.snd_cwnd;
            ti.tcpi_snd_ssthresh = si.snd_ssthresh;
        }
        put_opt(val, len, &ti, sizeof(ti));
        return 0;
    }
    if (s->type == SOCK_STREAM && level == IPPROTO_TCP && name == TCP_CONGESTION) {
        char cc[16] = {0}; /* Linux: TCP_CA_NAME_MAX bytes, NUL-padded */
        memcpy(cc, cpl.opt, cpl.optlen < sizeof(cc) - 1 ? cpl.optlen : sizeof(cc) - 1);
        put_opt(val, len, cc, sizeof(cc));
        return 0;
    }
    put_opt(val, len, cpl.opt, cpl.optlen);
    return 0;
}

int shmnet_getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
    return (int)WITH_SOCK(fd, s, do_getsockopt(s, level, optname, optval, optlen));
}
