"""Path MTU discovery (RFC 1191, RFC 8201 for the same rule in IPv6; Linux's
tcp_v4_mtu_reduced + tcp_simple_retransmit): an ICMP "fragmentation needed" lowers the
MSS, and the part of the flight that no longer fits is sent again at the new size at
once and as ACKs come back, not after a retransmission timeout."""
import struct
import time

from engine import Fail, case, csum, sadd, sdiff

MSS = 1460
NEW_MTU = 1000
NEW_MSS = NEW_MTU - 40
GAP = 0.1  # half the minimum RTO: anything later waited for a timer


def frag_needed(t, seg, mtu):
    """ICMP type 3 code 4 quoting seg's IP header and the first 8 bytes of its TCP
    header, next-hop MTU mtu (RFC 1191 4)."""
    ihl = (seg.ipraw[0] & 0x0F) * 4
    q = seg.ipraw[:ihl + 8]
    body = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + q
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    w = t.e.wire
    return w.send_ip(w.ip_packet(1, body))


@case("pmtu_flight_resent_on_acks")
def pmtu(t):
    """Ten 1460-byte segments in flight, none received; ICMP frag-needed (MTU 1000) for
    the first: the daemon resends from SND.UNA in segments of at most 960 bytes (IP <= 1000)
    right away, and after each of our ACKs goes on at once (within 0.1 s) until the whole
    flight is through, without waiting for the RTO."""
    c, fd = t.passive(mss=MSS)
    t.app.ok("write %d %d" % (fd, 10 * MSS))
    segs = [c.expect(1.0, "data segment %d of 10" % (i + 1), length=MSS,
                     seq=sadd(c.rcv_nxt, i * MSS)) for i in range(10)]
    una = c.rcv_nxt
    end = sadd(una, 10 * MSS)
    last = frag_needed(t, segs[0], NEW_MTU)
    last_what = "the ICMP fragmentation-needed"
    held = {}  # seq -> segment beyond RCV.NXT
    resent = 0
    while c.rcv_nxt != end:
        wait = last + GAP - time.time()
        s = c.recv(max(0.0, wait))
        if s is None:
            raise Fail("nothing for %.1f s after %s, %d of %d bytes still to resend: the rest of "
                       "the flight must go out at MSS %d as ACKs arrive (RFC 1191 / RFC 8201), "
                       "not after the RTO" % (GAP, last_what, sdiff(end, c.rcv_nxt), 10 * MSS,
                                              NEW_MSS))
        if s.len == 0:
            continue
        if s.iplen > NEW_MTU or s.len > NEW_MSS:
            raise Fail("a segment of %d bytes (IP %d) after the path MTU dropped to %d: %s" % (
                s.len, s.iplen, NEW_MTU, c.fmt(s)))
        resent += 1
        if sdiff(s.seq, c.rcv_nxt) > 0:
            held[s.seq] = s
            continue
        if not c.take_in_order(s):
            continue
        while c.rcv_nxt in held:
            c.take_in_order(held.pop(c.rcv_nxt))
        last = c.ack()
        last_what = "our ACK of %d bytes" % sdiff(c.rcv_nxt, una)
    t.log("flight resent in %d segments" % resent)
