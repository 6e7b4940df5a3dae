"""Loss recovery of the daemon as a sender: fast retransmit after three duplicate ACKs
(RFC 5681 3.2), NewReno partial ACKs (RFC 6582 3.2), limited transmit (RFC 3042), SACK
recovery (RFC 6675).

The engine holds its handshake ACK back 150 ms, so the daemon's first RTT sample makes
its RTO about 450 ms and its tail-loss probe timeout (with SACK) 300 ms: the engine's
scripted duplicate ACKs come long before either, on a noisy machine too."""
import time

from engine import Fail, case, sadd, within

MSS = 1000
SLOW_HANDSHAKE = 0.15
FAST = 0.06  # "at once": a reaction to the segment just sent


def sender(t, sack=False):
    return t.passive(mss=MSS, sack=sack, ack_delay=SLOW_HANDSHAKE)


def data_flags(f):
    return not f & 0x07 and f & 0x10  # no SYN/FIN/RST, ACK set


def burst(t, c, n):
    """n full segments from the daemon, in order: their start offsets."""
    base = c.rcv_nxt
    segs = []
    for i in range(n):
        segs.append(c.expect(1.0, "data segment %d of %d" % (i + 1, n), flags=data_flags,
                             seq=sadd(base, i * MSS), length=MSS))
    for s in segs:
        c.check_data(s)
    return segs


def dupack(c, sack=None):
    return c.ack(sack=sack)


@case("fast_retransmit_after_3_dupacks")
def fast_rtx(t):
    """8 segments, the first lost: two duplicate ACKs send nothing (no new data is
    queued), the third retransmits the first segment at once (RFC 5681 3.2)."""
    c, fd = sender(t)
    t.app.ok("write %d %d" % (fd, 8 * MSS))
    segs = burst(t, c, 8)
    for k in (1, 2):
        dupack(c)
        c.silence(0.03, "nothing after duplicate ACK %d" % k)
    t3 = dupack(c)
    r = c.expect(FAST * 2, "fast retransmit of the first segment after the third duplicate "
                 "ACK", seq=segs[0].seq, length=MSS)
    within(r.t - t3, 0, FAST, "fast retransmit")
    c.rcv_nxt = segs[-1].end
    c.ack()
    c.silence(0.1, "nothing once everything is acknowledged")


@case("newreno_partial_ack_retransmits")
def newreno(t):
    """No SACK; segments 1 and 4 of 8 lost: fast retransmit of 1 after three duplicate
    ACKs, no retransmission for later duplicate ACKs, then the partial ACK (up to 4)
    retransmits segment 4 at once (RFC 6582 3.2 step 4), without waiting for an RTO and
    without resending 2 and 3; the full ACK ends recovery."""
    c, fd = sender(t)
    t.app.ok("write %d %d" % (fd, 8 * MSS))
    segs = burst(t, c, 8)
    for _k in range(3):            # segments 2, 3, 5 arrive
        t3 = dupack(c)
    r = c.expect(FAST * 2, "fast retransmit of segment 1", seq=segs[0].seq, length=MSS)
    within(r.t - t3, 0, FAST, "fast retransmit")
    for _k in range(3):            # segments 6, 7, 8 arrive
        dupack(c)
    c.silence(0.05, "no retransmission for the duplicate ACKs in recovery")
    c.rcv_nxt = segs[3].seq        # the retransmitted 1 arrives: 1-3 are in
    tp = c.ack()
    r = c.expect(FAST * 2, "retransmission of segment 4 after the partial ACK",
                 seq=segs[3].seq, length=MSS)
    within(r.t - tp, 0, FAST, "retransmission after the partial ACK")
    c.rcv_nxt = segs[-1].end
    c.ack()
    c.silence(0.1, "nothing after the full ACK")


@case("limited_transmit_rfc3042")
def limited_transmit(t):
    """cwnd full (10 segments out, 2 more queued), first segment lost: the first and the
    second duplicate ACK each send one new segment (RFC 3042), the third retransmits."""
    c, fd = sender(t)
    t.app.ok("write %d %d" % (fd, 12 * MSS))
    segs = burst(t, c, 10)
    c.silence(0.05, "nothing beyond the initial window of 10 segments")
    nxt = segs[-1].end
    for k in (1, 2):
        tk = dupack(c)
        s = c.expect(FAST * 2, "a new segment for duplicate ACK %d (limited transmit)" % k,
                     seq=nxt, length=MSS)
        within(s.t - tk, 0, FAST, "limited transmit for duplicate ACK %d" % k)
        nxt = s.end
    t3 = dupack(c)
    r = c.expect(FAST * 2, "fast retransmit after the third duplicate ACK", seq=segs[0].seq,
                 length=MSS)
    within(r.t - t3, 0, FAST, "fast retransmit")
    c.rcv_nxt = nxt
    c.ack()
    c.silence(0.1, "nothing once everything is acknowledged")


@case("sack_recovery_rfc6675")
def sack_recovery(t):
    """SACK; segments 1 and 3 of 10 lost, the other 8 arrive and are SACKed (blocks built
    as RFC 2018 says). Recovery starts with the third duplicate ACK (RFC 6675 5: DupThresh
    or IsLost), retransmits segment 1 at once, then segment 3 (the other hole below the
    highest SACK), each once, nothing that was SACKed, and all before any timeout."""
    c, fd = sender(t, sack=True)
    t.app.ok("write %d %d" % (fd, 10 * MSS))
    segs = burst(t, c, 10)
    una = segs[0].seq
    arrive = [1, 3, 4, 5, 6, 7, 8, 9]
    have = []
    sent = []
    for k, i in enumerate(arrive):
        have.append(i)
        # blocks: the one holding segment i first, then the other ranges, newest first
        ranges = []
        for j in sorted(have):
            if ranges and ranges[-1][1] == j:
                ranges[-1][1] = j + 1
            else:
                ranges.append([j, j + 1])
        first = [r for r in ranges if r[0] <= i < r[1]][0]
        rest = sorted((r for r in ranges if r is not first), key=lambda r: -max(
            have.index(x) for x in range(r[0], r[1])))
        blocks = [(sadd(una, r[0] * MSS), sadd(una, r[1] * MSS)) for r in [first] + rest]
        sent.append(dupack(c, sack=blocks[:4]))
        time.sleep(0.004)
    holes = {segs[0].seq: "1", segs[2].seq: "3"}
    got = {}
    end = time.monotonic() + 0.15
    while len(got) < 2:
        s = c.recv(max(0.0, end - time.monotonic()))
        if s is None:
            missing = [holes[k] for k in holes if k not in got]
            raise Fail("segment(s) %s not retransmitted within 0.15 s of the last of 8 SACKed "
                       "duplicate ACKs (RTO about 0.45 s)" % ", ".join(missing))
        if s.len == 0:
            continue
        if s.seq not in holes:
            raise Fail("retransmission of SACKed or unrequested data: %s" % c.fmt(s))
        if s.seq in got:
            raise Fail("segment %s retransmitted twice: %s" % (holes[s.seq], c.fmt(s)))
        if s.len != MSS:
            raise Fail("retransmission of %d bytes, expected %d: %s" % (s.len, MSS, c.fmt(s)))
        got[s.seq] = s
    r1, r3 = got[segs[0].seq], got[segs[2].seq]
    if r1.t > r3.t:
        raise Fail("segment 3 retransmitted before segment 1 (the first hole, RFC 6675 "
                   "NextSeg)")
    if r1.t < sent[2]:
        raise Fail("segment 1 retransmitted %.3f s before the third duplicate ACK" % (
            sent[2] - r1.t))
    within(r1.t - sent[2], 0, FAST + 0.04, "retransmission of segment 1 after the third "
           "duplicate ACK")
    c.rcv_nxt = segs[-1].end
    c.ack()
    c.silence(0.1, "nothing once everything is acknowledged", skip=lambda s: s.len == 0)
