"""Flow control: the daemon probing a zero window and resuming on a window update
(RFC 9293 3.8.6.1, RFC 1122 4.2.2.17), the daemon's own window closing and reopening
(RFC 9293 3.8.6.2.2), Nagle (RFC 896, RFC 9293 3.7.4) and TCP_NODELAY."""
from engine import Fail, case, sadd, sdiff, within

MSS = 1000


@case("persist_zero_window_probes")
def persist(t):
    """Our window closes with data queued: the daemon probes it (SEQ = SND.UNA - 1 with no
    data, or one new byte), the first probe after about one RTO, the next ones backing off
    (x2); each probe gets our zero-window ACK. When we open the window the data flows at
    once."""
    c, fd = t.passive(mss=MSS, win=MSS)
    t.app.ok("write %d 5000" % fd)
    s = c.expect(1.0, "the first segment (our window is 1000 bytes)", length=MSS)
    c.take_in_order(s)
    c.win = 0
    t0 = c.ack()
    una = c.rcv_nxt
    times = [t0]
    for k in range(3):
        p = c.expect(3.0, "zero-window probe %d" % (k + 1))
        ok = (p.seq == sadd(una, -1) and p.len == 0) or (p.seq == una and p.len == 1)
        if not ok or p.flags & 0x07:
            raise Fail("probe %d is %s: expected SEQ = SND.UNA - 1 without data, or one byte "
                       "at SND.UNA" % (k + 1, c.fmt(p)))
        times.append(p.t)
        c.ack()
    d = [b - a for a, b in zip(times, times[1:])]
    within(d[0], 0.9 * t.rto_min, 1.2, "first zero-window probe")
    for k in (1, 2):
        if not 1.6 <= d[k] / d[k - 1] <= 2.4:
            raise Fail("probe intervals %s s: interval %d is x%.2f the one before, expected "
                       "x2 (RFC 9293 3.8.6.1: exponential back-off)" % (
                           " ".join("%.3f" % x for x in d), k + 1, d[k] / d[k - 1]))
    c.win = 4000
    tw = c.ack()
    s = c.expect(0.2, "data after the window update", seq=una,
                 skip=lambda x: x.len <= 1 and x.seq != una)
    within(s.t - tw, 0, 0.05, "data after the window update")
    if s.len < min(MSS, 4000):
        raise Fail("only %d bytes after a window update to 4000: %s" % (s.len, c.fmt(s)))


@case("rcv_zero_window_then_update")
def rcv_window(t):
    """The app does not read: we send until the daemon's window is zero (every byte it
    offered is taken, none beyond). Probes (SND.UNA - 1, or one byte) get an ACK showing
    the zero window. Then the app reads everything: a window update comes at once, and the
    window takes data again."""
    c, fd = t.passive(mss=1460)
    edge = sadd(c.snd_nxt, c.synack.win)
    total = 0
    last_ack = None
    for _round in range(400):
        while sdiff(edge, c.snd_nxt) > 0:
            n = min(1460, sdiff(edge, c.snd_nxt))
            c.send(n)
            total += n
        # everything sent must be ACKed (the last one may be a delayed ACK)
        while True:
            a = c.expect(t.delack + 0.5, "ACK of our data (%d bytes sent)" % total,
                         flags="A")
            if sdiff(a.ack, c.snd_nxt) > 0:
                raise Fail("ACK beyond what we sent: %s" % c.fmt(a))
            right = sadd(a.ack, a.win)
            if sdiff(right, edge) < 0:
                raise Fail("the window shrank: right edge %d -> %d (RFC 9293 3.8.6.2.2)" % (
                    c.ra(edge), c.ra(right)))
            edge = right
            last_ack = a
            if a.ack == c.snd_nxt:
                break
        if last_ack.win == 0:
            break
    else:
        raise Fail("the window never closed after %d bytes" % total)
    # probes into the closed window
    for seq, n in ((sadd(c.snd_nxt, -1), 0), (c.snd_nxt, 1)):
        tp = c.send(n, seq=seq, flags="A") if n else c.seg("A", seq=seq)
        a = c.expect(0.3, "ACK of a zero-window probe", flags="A", ack=c.snd_nxt)
        within(a.t - tp, 0, t.delack / 2, "ACK of a zero-window probe")
        if a.win:
            raise Fail("ACK of a probe offers window %d, the buffer is full" % a.win)
    t.app.ok("read %d %d" % (fd, total), 10)
    a = c.expect(0.5, "a window update after the app read everything", flags="A",
                 ack=c.snd_nxt)
    if a.win < 1460:
        raise Fail("window update offers only %d bytes: %s" % (a.win, c.fmt(a)))
    c.send(1460)
    c.expect(t.delack + 0.3, "ACK of data sent into the reopened window", flags="A",
             ack=c.snd_nxt)
    t.app.ok("read %d 1460" % fd)


@case("nagle_holds_small_writes")
def nagle(t):
    """Without TCP_NODELAY a second small write waits while the first small segment is
    unacknowledged (RFC 896, RFC 9293 3.7.4), and goes out as soon as the ACK comes."""
    c, fd = t.passive(mss=MSS)
    t.app.ok("write %d 10" % fd)
    s1 = c.expect(0.5, "the first small segment (nothing in flight: sent at once)", length=10)
    t.app.ok("write %d 10" % fd)
    c.silence(0.12, "no second small segment while the first is unacknowledged (Nagle)")
    c.take_in_order(s1)
    ta = c.ack()
    s2 = c.expect(0.2, "the held bytes at the ACK", seq=s1.end, length=10)
    within(s2.t - ta, 0, 0.05, "held small segment after the ACK")
    c.take_in_order(s2)
    c.ack()


@case("nagle_off_with_nodelay")
def nodelay(t):
    """With TCP_NODELAY a small write goes out at once although data is unacknowledged."""
    c, fd = t.passive(mss=MSS)
    t.app.ok("nodelay %d 1" % fd)
    t.app.ok("write %d 10" % fd)
    s1 = c.expect(0.5, "the first small segment", length=10)
    t.app.ok("write %d 10" % fd)
    c.expect(0.05, "the second small segment at once (TCP_NODELAY)", seq=s1.end, length=10)
    c.rcv_nxt = sadd(s1.end, 10)
    c.ack()
