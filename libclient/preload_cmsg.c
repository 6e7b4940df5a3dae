/* Control messages of sendmsg and recvmsg on shmnet datagram sockets (cmsg(3)): the ones
 * the socket asked for with IP_PKTINFO, IP_RECVTOS, SO_TIMESTAMP and SO_TIMESTAMPNS are built
 * from the datagram's record
 * header; on send, IP_PKTINFO chooses the source address. */
#include "libclient/preload_int.h"

/* Append one control message to m's buffer at *used; false (nothing written) if it does
 * not fit. */
static bool cmsg_add(struct msghdr *m, size_t *used, int level, int type, const void *data,
                     size_t len)
{
    if (!m->msg_control || *used + CMSG_LEN(len) > m->msg_controllen)
        return false;
    struct cmsghdr c = {.cmsg_len = CMSG_LEN(len), .cmsg_level = level, .cmsg_type = type};
    uint8_t *p = (uint8_t *)m->msg_control + *used;
    memcpy(p, &c, sizeof(c));
    memcpy(p + CMSG_LEN(0), data, len); /* CMSG_DATA of a header at p */
    *used += CMSG_SPACE(len);
    if (*used > m->msg_controllen) /* the last one needs no padding after it */
        *used = m->msg_controllen;
    return true;
}

void cmsg_put(struct msghdr *m, const struct shmnet_dgram_info *in)
{
    size_t used = 0;
    bool all = true;

    /* socket(7): the receive time, as a timeval or a timespec, before the IP messages. */
    if ((in->want & SHMNET_WANT_TS) && in->ts_ns) {
        struct timeval tv = {.tv_sec = (time_t)(in->ts_ns / 1000000000u),
                             .tv_usec = (suseconds_t)(in->ts_ns % 1000000000u / 1000)};
        all &= cmsg_add(m, &used, SOL_SOCKET, SCM_TIMESTAMP, &tv, sizeof(tv));
    }
    if ((in->want & SHMNET_WANT_TSNS) && in->ts_ns) {
        struct timespec ts = {.tv_sec = (time_t)(in->ts_ns / 1000000000u),
                              .tv_nsec = (long)(in->ts_ns % 1000000000u)};
        all &= cmsg_add(m, &used, SOL_SOCKET, SCM_TIMESTAMPNS, &ts, sizeof(ts));
    }
    if (in->want & SHMNET_WANT_PKTINFO) {
        struct in_pktinfo pi = {.ipi_ifindex = in->ifindex};
        pi.ipi_spec_dst.s_addr = in->spec_dst;
        pi.ipi_addr.s_addr = in->dst;
        all &= cmsg_add(m, &used, IPPROTO_IP, IP_PKTINFO, &pi, sizeof(pi));
    }
    if (in->want & SHMNET_WANT_TOS) {
        uint8_t tos = in->tos;
        all &= cmsg_add(m, &used, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
    }
    m->msg_controllen = used;
    if (!all)
        m->msg_flags |= MSG_CTRUNC;
}

int cmsg_source(const struct msghdr *m, uint32_t *src)
{
    *src = 0;
    if (!m->msg_control || m->msg_controllen < sizeof(struct cmsghdr))
        return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)m); c;
         c = CMSG_NXTHDR((struct msghdr *)m, c)) {
        if (c->cmsg_len < CMSG_LEN(0) ||
            (uint8_t *)c + c->cmsg_len > (uint8_t *)m->msg_control + m->msg_controllen) {
            errno = EINVAL;
            return -1;
        }
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            if (c->cmsg_len < CMSG_LEN(sizeof(pi))) {
                errno = EINVAL;
                return -1;
            }
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            *src = pi.ipi_spec_dst.s_addr; /* ip(7): the source address of the datagram */
        }
    }
    return 0;
}
