/* Socket options: SOL_SOCKET, IPPROTO_IP and IPPROTO_TCP, set and read on the daemon's
 * socket and its protocol control block. */
#include "daemon/client_impl.h"

static int get_int(const struct shm_req *r, int *v)
{
    if (r->optlen < sizeof(int))
        return -EINVAL;
    memcpy(v, r->opt, sizeof(int));
    return 0;
}

static int put_int(struct shm_cpl *c, int v)
{
    memcpy(c->opt, &v, sizeof(v));
    c->optlen = sizeof(v);
    return 0;
}

/* IP_TTL (1..255, -1: back to dflt) and IP_TOS (the ECN bits are the stack's), for either
 * protocol's control block. */
static int ip_setsockopt(int name, int v, uint8_t dflt, uint8_t *ttl, uint8_t *tos)
{
    switch (name) {
    case IP_TTL:
        if (v != -1 && (v < 1 || v > 255))
            return -EINVAL;
        *ttl = v == -1 ? dflt : (uint8_t)v;
        return 0;
    case IP_TOS:
        *tos = (uint8_t)(v & 0xfc);
        return 0;
    default:
        return -ENOPROTOOPT;
    }
}

static int tcp_setsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r)
{
    struct tcp_pcb *t = ds->tcp;
    if (r->arg0 == SOL_SOCKET && r->arg1 == SO_LINGER) {
        struct linger lg;
        if (r->optlen < sizeof(lg))
            return -EINVAL;
        memcpy(&lg, r->opt, sizeof(lg));
        ds->linger0 = lg.l_onoff && lg.l_linger == 0;
        return 0;
    }
    if (r->arg0 == IPPROTO_TCP && r->arg1 == TCP_CONGESTION) {
        char name[17] = {0};
        memcpy(name, r->opt, r->optlen < 16 ? r->optlen : 16);
        return t ? tcp_set_cc(t, name) : -ENOTCONN;
    }
    int v, rc = get_int(r, &v);
    if (rc)
        return rc;
    if (!t)
        return -EINVAL;
    if (r->arg0 == SOL_SOCKET) {
        switch (r->arg1) {
        case SO_KEEPALIVE:
            t->keepalive = v != 0;
            tcp_arm_keepalive(cl->st, t);
            return 0;
        case SO_REUSEADDR:
            ds->reuseaddr = v != 0;
            return 0; /* TIME_WAIT never blocks a listener's bind */
        case SO_RCVBUF:
        case SO_SNDBUF:
        case SO_PRIORITY:
            return 0; /* fifos have their size */
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 == IPPROTO_TCP) {
        switch (r->arg1) {
        case TCP_NODELAY:
            t->nodelay = v != 0;
            tcp_output(cl->st, t);
            return 0;
        case TCP_CORK:
            t->cork = v != 0;
            if (!t->cork)
                tcp_output(cl->st, t); /* uncorking sends what was held */
            return 0;
        case TCP_KEEPIDLE:
        case TCP_KEEPINTVL:
        case TCP_KEEPCNT:
            if (v < 1 || v > 32767)
                return -EINVAL;
            if (r->arg1 == TCP_KEEPIDLE)
                t->keep_idle_s = (uint32_t)v;
            else if (r->arg1 == TCP_KEEPINTVL)
                t->keep_intvl_s = (uint32_t)v;
            else
                t->keep_cnt = (uint32_t)v;
            tcp_arm_keepalive(cl->st, t);
            return 0;
        case TCP_USER_TIMEOUT:
            if (v < 0)
                return -EINVAL;
            t->user_timeout_ms = (uint32_t)v;
            return 0;
        case TCP_QUICKACK:
            return 0;
        case TCP_MAXSEG: /* tcp(7): 0 = the route's; else 88 (TCP_MIN_MSS) .. 65535 */
            if (v != 0 && (v < 88 || v > 65535))
                return -EINVAL;
            t->user_mss = (uint16_t)v;
            return 0;
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 == IPPROTO_IP)
        return ip_setsockopt(r->arg1, v, 0, &t->ttl, &t->tos); /* ttl 0: the stack's default */
    return -ENOPROTOOPT;
}

static int tcp_getsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r,
                          struct shm_cpl *c)
{
    struct tcp_pcb *t = ds->tcp;
    if (r->arg0 == SOL_SOCKET) {
        switch (r->arg1) {
        case SO_TYPE:
            return put_int(c, SOCK_STREAM);
        case SO_DOMAIN:
            return put_int(c, AF_INET);
        case SO_PROTOCOL:
            return put_int(c, IPPROTO_TCP);
        case SO_ERROR: {
            int e = ds->so_error;
            ds->so_error = 0;
            __atomic_store_n(&shsock(cl, ds->idx)->so_error, 0, __ATOMIC_RELAXED);
            __atomic_fetch_and(&shsock(cl, ds->idx)->events, ~(uint32_t)SHM_EV_ERR,
                               __ATOMIC_RELEASE);
            return put_int(c, e);
        }
        case SO_KEEPALIVE:
            return put_int(c, t && t->keepalive);
        case SO_RCVBUF:
            return put_int(c, (int)ds->rx_size);
        case SO_SNDBUF:
            return put_int(c, (int)ds->tx_size);
        case SO_REUSEADDR:
            return put_int(c, ds->reuseaddr);
        case SO_ACCEPTCONN:
            return put_int(c, t && t->state == TCPS_LISTEN);
        case SO_LINGER: {
            struct linger lg = {.l_onoff = ds->linger0, .l_linger = 0};
            memcpy(c->opt, &lg, sizeof(lg));
            c->optlen = sizeof(lg);
            return 0;
        }
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 == IPPROTO_IP && t && (r->arg1 == IP_TTL || r->arg1 == IP_TOS))
        return put_int(c, r->arg1 == IP_TOS ? t->tos : t->ttl ? t->ttl : cl->st->par.default_ttl);
    if (r->arg0 != IPPROTO_TCP)
        return -ENOPROTOOPT;
    if (!t)
        return r->arg1 == TCP_INFO ? (c->optlen = 0, 0) : -ENOTCONN;
    switch (r->arg1) {
    case TCP_NODELAY:
        return put_int(c, t->nodelay);
    case TCP_CORK:
        return put_int(c, t->cork);
    case TCP_MAXSEG: /* before the handshake: the cap if set, else the default (tcp(7)) */
        return put_int(c, t->state >= TCPS_ESTABLISHED ? t->mss
                          : t->user_mss                ? t->user_mss
                                                       : t->mss);
    case TCP_KEEPIDLE:
        return put_int(c, (int)t->keep_idle_s);
    case TCP_KEEPINTVL:
        return put_int(c, (int)t->keep_intvl_s);
    case TCP_KEEPCNT:
        return put_int(c, (int)t->keep_cnt);
    case TCP_USER_TIMEOUT:
        return put_int(c, (int)t->user_timeout_ms);
    case TCP_CONGESTION:
        c->optlen = (uint16_t)strlen(t->cc->name);
        memcpy(c->opt, t->cc->name, c->optlen);
        return 0;
    case TCP_INFO: {
        /* Linux's tcpi_state numbering: ESTABLISHED = 1 ... (see linux/tcp.h) */
        static const uint8_t linux_state[] = {7, 10, 2, 3, 1, 4, 5, 8, 11, 9, 6};
        struct shm_tcp_info ti = {
            .state = linux_state[t->state],
            .ca_state = t->in_recovery ? 3 : 0,
            .retransmits = (uint8_t)(t->rtx_count > 255 ? 255 : t->rtx_count),
            .options = (uint8_t)((t->ts_ok ? 1 : 0) | (t->sack_ok ? 2 : 0) | (t->ws_ok ? 4 : 0)),
            .snd_wscale = t->snd_wscale,
            .rcv_wscale = t->rcv_wscale,
            .rto_us = t->rto_ms * 1000,
            .snd_mss = t->mss,
            .rtt_us = t->srtt_us,
            .rttvar_us = t->rttvar_us,
            .snd_cwnd = t->mss ? t->cwnd / t->mss : 0,
            .snd_ssthresh =
                t->ssthresh == 0xffffffffu ? 0x7fffffff : t->ssthresh / (t->mss ? t->mss : 1),
        };
        memcpy(c->opt, &ti, sizeof(ti));
        c->optlen = sizeof(ti);
        return 0;
    }
    default:
        return -ENOPROTOOPT;
    }
}

int op_setsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r)
{
    if (ds->type == SOCK_STREAM)
        return tcp_setsockopt(cl, ds, r);
    int v, rc = get_int(r, &v);
    if (rc)
        return rc;
    if (r->arg0 == SOL_SOCKET) {
        switch (r->arg1) {
        case SO_REUSEADDR:
            ds->pcb.reuseaddr = v != 0;
            return 0;
        case SO_BROADCAST:
            ds->pcb.broadcast = v != 0;
            return 0;
        case SO_RCVBUF:
            /* Linux doubles the value for bookkeeping; the fifo is the upper bound. */
            if (v < 0)
                return -EINVAL;
            ds->rx_limit = (uint32_t)v > ds->rx_size / 2 ? ds->rx_size : (uint32_t)v * 2;
            if (ds->rx_limit < 2304)
                ds->rx_limit = 2304; /* SOCK_MIN_RCVBUF */
            return 0;
        case SO_SNDBUF:
        case SO_KEEPALIVE:
        case SO_PRIORITY:
            return 0; /* accepted; no effect on a datagram fifo of fixed size */
        case SO_TIMESTAMP:
        case SO_TIMESTAMPNS:
            /* The client keeps which one was asked for; records carry the time if either. */
            ds->want_ts = v != 0;
            return 0;
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 == IPPROTO_IP)
        return ip_setsockopt(r->arg1, v, (uint8_t)cl->st->par.default_ttl, &ds->pcb.ttl,
                             &ds->pcb.tos);
    return -ENOPROTOOPT;
}

int op_getsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r, struct shm_cpl *c)
{
    if (ds->type == SOCK_STREAM)
        return tcp_getsockopt(cl, ds, r, c);
    if (r->arg0 == SOL_SOCKET) {
        switch (r->arg1) {
        case SO_TYPE:
            return put_int(c, (int)ds->type);
        case SO_DOMAIN:
            return put_int(c, AF_INET);
        case SO_PROTOCOL:
            return put_int(c, IPPROTO_UDP);
        case SO_ERROR: {
            int e = ds->so_error;
            ds->so_error = 0;
            struct shm_sock *sh = shsock(cl, ds->idx);
            __atomic_store_n(&sh->so_error, 0, __ATOMIC_RELAXED);
            __atomic_fetch_and(&sh->events, ~(uint32_t)SHM_EV_ERR, __ATOMIC_RELEASE);
            return put_int(c, e);
        }
        case SO_REUSEADDR:
            return put_int(c, ds->pcb.reuseaddr);
        case SO_BROADCAST:
            return put_int(c, ds->pcb.broadcast);
        case SO_RCVBUF:
            return put_int(c, (int)ds->rx_limit);
        case SO_SNDBUF:
            return put_int(c, (int)ds->tx_size);
        case SO_KEEPALIVE:
            return put_int(c, 0);
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 == IPPROTO_IP) {
        if (r->arg1 == IP_TTL)
            return put_int(c, ds->pcb.ttl);
        if (r->arg1 == IP_TOS)
            return put_int(c, ds->pcb.tos);
    }
    return -ENOPROTOOPT;
}
