"""Retransmission timer (RFC 6298): back-off doubling (5.5), Karn's algorithm (3, 5.7:
no RTT sample from a retransmitted segment, the backed-off RTO kept until a new sample),
3 s when the handshake had a timeout and gave no sample (5.7).

No SACK and no timestamps here: without SACK the daemon sends no tail-loss probes, and
without timestamps an ACK of a retransmission is ambiguous (Karn applies)."""
import time

from engine import PEER_IP, Conn, Fail, case, sadd, within

MSS = 1000


def lone_segment(t, c, fd, n=100):
    t.app.ok("write %d %d" % (fd, n))
    s = c.expect(1.0, "a segment of %d bytes" % n, length=n)
    return s


def retransmission(c, s, timeout, what):
    return c.expect(timeout, what, seq=s.seq, length=s.len)


def ack_all(c, s):
    c.rcv_nxt = s.end
    return c.ack()


@case("rto_backoff_doubling")
def backoff(t):
    """A segment never ACKed: the first retransmission after the RTO (rto_min with a
    1 ms RTT), each next one after twice the previous interval (RFC 6298 5.5)."""
    c, fd = t.passive(mss=MSS)
    s = lone_segment(t, c, fd)
    times = [s.t]
    for k in range(3):
        times.append(retransmission(c, s, 4.0, "retransmission %d" % (k + 1)).t)
    d = [b - a for a, b in zip(times, times[1:])]
    within(d[0], 0.9 * t.rto_min, t.rto_min + 0.1, "first retransmission")
    for k in (1, 2):
        if not 1.7 <= d[k] / d[k - 1] <= 2.3:
            raise Fail("retransmission intervals %s s: interval %d is x%.2f the one before, "
                       "expected x2 (RFC 6298 5.5)" % (
                           " ".join("%.3f" % x for x in d), k + 1, d[k] / d[k - 1]))
    ack_all(c, s)
    c.silence(0.1, "nothing after the ACK", skip=lambda x: x.len == 0)


@case("karn_no_rtt_sample_from_retransmission")
def karn(t):
    """The ACK of a segment sent three times comes 0.5 s after the last copy: no RTT may
    be taken from it (Karn). A sample would make the next segment's RTO >= 1.5 s (from the
    last copy) or 3.3 s (from the first); without one it is the backed-off 0.8 s (or the
    0.2 s before the timeouts): the next retransmission must come within 1.15 s."""
    c, fd = t.passive(mss=MSS)
    s = lone_segment(t, c, fd)
    retransmission(c, s, 1.0, "first retransmission")
    r2 = retransmission(c, s, 2.0, "second retransmission")
    time.sleep(max(0.0, r2.t + 0.5 - time.time()))
    ack_all(c, s)
    s2 = t.app.ok("write %d 100" % fd)
    s2 = c.expect(1.0, "the next segment", seq=s.end, length=100,
                  skip=lambda x: x.seq == s.seq)
    r = retransmission(c, s2, 4.0, "retransmission of the next segment")
    if r.t - s2.t > 1.15:
        raise Fail("the next segment was retransmitted after %.3f s: the RTO came from an RTT "
                   "sample of the ambiguous ACK (Karn's algorithm, RFC 6298 3)" % (r.t - s2.t))
    ack_all(c, s2)


@case("rto_backoff_kept_until_new_sample")
def backoff_kept(t):
    """One RTO (the RTO doubles), then the retransmission is ACKed at once: that ACK gives
    no RTT sample (Karn), so the doubled RTO stays for the next segment (RFC 6298 5.5-5.7,
    Linux): its first retransmission comes after 2 x the first RTO, not after 1 x."""
    c, fd = t.passive(mss=MSS)
    s = lone_segment(t, c, fd)
    r1 = retransmission(c, s, 1.0, "first retransmission")
    rto = r1.t - s.t
    ack_all(c, s)
    t.app.ok("write %d 100" % fd)
    s2 = c.expect(1.0, "the next segment", seq=s.end, length=100)
    r = retransmission(c, s2, 4 * rto + 1, "retransmission of the next segment")
    within(r.t - s2.t, 1.7 * rto, 2 * rto + 0.15,
           "first retransmission of the next segment (the RTO was backed off to %.3f s by "
           "the timeout and no RTT sample came since: RFC 6298 5.5, 5.7 and Karn)" % (2 * rto))
    ack_all(c, s2)


def three_seconds(t, c, fd):
    s = lone_segment(t, c, fd)
    r = retransmission(c, s, 3.6, "retransmission of the first data segment")
    within(r.t - s.t, 2.85, 3.5, "first data retransmission after a handshake with a timeout "
           "(RFC 6298 5.7: with no RTT sample the RTO is 3 s once data flows)")
    ack_all(c, s)


@case("rto_3s_after_syn_timeout")
def syn_timeout(t):
    """The app connects; we ignore the first SYN and answer the retransmitted one (after
    the initial RTO, 1 s): no RTT sample (Karn), so the first data retransmission must
    come 3 s after the data (RFC 6298 5.7), not 1 s."""
    port = t.port()
    t.app.send("connect %s %d" % (PEER_IP, port))
    syn = t.wait_syn(port)
    syn2 = t.wait_syn(port, 2.5)
    if syn2.seq != syn.seq:
        raise Fail("retransmitted SYN with another ISN")
    within(syn2.t - syn.t, 0.9, 1.3, "SYN retransmission (initial RTO 1 s, RFC 6298 2.1)")
    c = Conn(t, port, syn.sport, mss=MSS)
    c.irs, c.rcv_nxt = syn.seq, sadd(syn.seq, 1)
    c.negotiate(syn2.opts)
    c.seg("SA")
    c.snd_nxt = sadd(c.iss, 1)
    c.expect(1.0, "ACK of our SYN-ACK", flags="A", ack=c.snd_nxt)
    r = t.app.reply()
    if not r.startswith("ok"):
        raise Fail("connect answered %s" % r)
    three_seconds(t, c, int(r.split()[1]))


@case("rto_3s_after_synack_timeout")
def synack_timeout(t):
    """We connect; we ignore the first SYN-ACK and ACK the retransmitted one: no RTT
    sample, so the first data retransmission must come 3 s after the data (RFC 6298 5.7)."""
    lfd, p = t.listen()
    c = Conn(t, t.port(), p, mss=MSS)
    c.seg("S")
    c.snd_nxt = sadd(c.iss, 1)
    sa = c.expect(1.0, "SYN-ACK", flags="SA", ack=c.snd_nxt)
    sa2 = c.expect(2.5, "retransmitted SYN-ACK", flags="SA", seq=sa.seq, ack=c.snd_nxt)
    within(sa2.t - sa.t, 0.9, 1.3, "SYN-ACK retransmission (initial RTO 1 s)")
    c.irs, c.rcv_nxt = sa.seq, sadd(sa.seq, 1)
    c.negotiate(sa.opts)
    c.ack()
    fd = t.accept(lfd, c)
    three_seconds(t, c, fd)
