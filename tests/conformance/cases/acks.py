"""ACK generation by the daemon as a receiver: quick ACKs at the start of a connection,
delayed ACKs afterwards (RFC 9293 3.8.6.3, RFC 5681 4.2, RFC 1122 4.2.3.2, Linux's
quick-ack mode), and ACKs for out-of-order data with SACK blocks (RFC 5681 4.2,
RFC 2018 4)."""
from engine import Fail, case, sadd, within

FULL = 1448  # MSS 1460 less 12 bytes of timestamps


def conn(t):
    return t.passive(mss=1460, ws=7, sack=True, ts=True)


def pure_ack(f):
    return f == 0x10


def past_quickack(t, c, n=16):
    """n lone full segments, each waiting for its ACK whatever its delay: the daemon's
    quick-ack phase (at most 16 segments, as Linux) is over afterwards."""
    for i in range(n):
        c.send(FULL)
        c.expect(t.delack + 0.4, "ACK of warm-up segment %d" % (i + 1), flags=pure_ack,
                 ack=c.snd_nxt)


@case("ack_quick_at_start")
def quick_at_start(t):
    """The first data segments of a connection are ACKed at once (quick-ack mode at the
    start, RFC 9293 3.8.6.3 allows it; Linux does it for up to 16 segments): each of the
    first 8 lone segments gets its ACK within delack/2."""
    c, _fd = conn(t)
    for i in range(8):
        ts = c.send(FULL)
        a = c.expect(1.0, "ACK of segment %d" % (i + 1), flags=pure_ack, ack=c.snd_nxt)
        within(a.t - ts, 0, t.delack / 2, "ACK of lone segment %d at the start" % (i + 1))


@case("ack_delayed_single_segment")
def delayed_single(t):
    """After the quick-ack phase a lone full segment is ACKed after the delayed-ACK time
    (tcp.delack_ms), not at once and not later (RFC 9293 3.8.6.3: < 0.5 s)."""
    c, _fd = conn(t)
    past_quickack(t, c)
    for i in range(2):
        ts = c.send(FULL)
        a = c.expect(t.delack + 0.5, "delayed ACK", flags=pure_ack, ack=c.snd_nxt)
        within(a.t - ts, 0.5 * t.delack, t.delack + 0.08,
               "ACK of a lone full segment (delack %.0f ms)" % (t.delack * 1000))


@case("ack_every_second_full_segment")
def second_full(t):
    """Two full segments back to back after the quick-ack phase: one ACK for both, sent
    at once when the second arrives (RFC 5681 4.2, RFC 1122 4.2.3.2)."""
    c, _fd = conn(t)
    past_quickack(t, c)
    for i in range(3):
        c.send(FULL)
        t2 = c.send(FULL)
        a = c.expect(t.delack + 0.5, "one ACK for both segments", flags=pure_ack,
                     ack=c.snd_nxt)
        within(a.t - t2, 0, t.delack / 2, "ACK of the second full segment (pair %d)" % (i + 1))


# ---------------------------------------------------------------- out of order, SACK
class SackRx:
    """Our model of a receiver's SACK blocks (RFC 2018 4): the first block holds the
    segment that triggered the ACK, then the most recently reported blocks, no block
    that is part of one already listed; at most maxb blocks."""

    def __init__(self, c, maxb):
        self.c = c
        self.maxb = maxb
        self.ranges = []   # merged [start, end) above RCV.NXT, relative offsets
        self.history = []  # blocks as last reported, most recent first

    def arrive(self, s, e):
        """A segment [s, e) (offsets from the connection's base) arrived: the new
        cumulative offset and the blocks the ACK must carry."""
        self.ranges.append([s, e])
        self.ranges.sort()
        merged = []
        for r in self.ranges:
            if merged and r[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], r[1])
            else:
                merged.append(list(r))
        cum = self.cum
        while merged and merged[0][0] <= cum:
            cum = max(cum, merged.pop(0)[1])
        self.cum = cum
        self.ranges = merged

        def holder(x):
            for r in merged:
                if r[0] <= x < r[1]:
                    return tuple(r)
            return None
        blocks = []
        first = holder(s)
        if first:
            blocks.append(first)
        for h in self.history:
            b = holder(h[0])
            if b and b not in blocks:
                blocks.append(b)
        for r in merged:  # never reported yet (cannot happen when each arrival is ACKed)
            if tuple(r) not in blocks:
                blocks.append(tuple(r))
        self.history = blocks
        return cum, blocks[:self.maxb]

    cum = 0


def ooo_run(t, order, check_order):
    """Send segments of 1000 bytes at the slots in order (slot 0 first, in order), check
    each ACK: at once, cumulative ACK, SACK blocks (content; and order if check_order)."""
    c, fd = conn(t)
    n = 1000
    base = c.snd_nxt
    rx = SackRx(c, 3)  # 40 bytes of options - 12 (TS) -> 3 blocks
    rx.cum = 0

    def rel(b):
        return "[%d-%d]" % (b[0] // n, b[1] // n)
    for k, slot in enumerate(order):
        s, e = slot * n, (slot + 1) * n
        ts = c.send(n, seq=sadd(base, s))
        cum, blocks = rx.arrive(s, e)
        a = c.expect(1.0, "ACK for segment %d" % slot, flags=pure_ack, ack=sadd(base, cum))
        if k > 0:  # the first one in order may be a quick or a delayed ACK
            within(a.t - ts, 0, t.delack / 2, "ACK for segment %d (out of order or filling "
                   "a hole: at once, RFC 5681 4.2)" % slot)
        got = [(sadd(l, -base) & 0xFFFFFFFF, sadd(r, -base) & 0xFFFFFFFF)
               for l, r in a.opts.get("sack", [])]
        want = blocks
        gs = " ".join(rel(b) for b in got) or "none"
        ws = " ".join(rel(b) for b in want) or "none"
        if sorted(got) != sorted(want):
            raise Fail("ACK for segment %d: SACK blocks %s, expected %s (in segments of %d "
                       "bytes)" % (slot, gs, ws, n))
        if want and got[0] != want[0]:
            raise Fail("ACK for segment %d: SACK blocks %s; the first block must hold the "
                       "segment that triggered the ACK: %s (RFC 2018 4)" % (slot, gs, ws))
        if check_order and got != want:
            raise Fail("ACK for segment %d: SACK blocks %s, expected %s: after the first, "
                       "the most recently reported blocks (RFC 2018 4)" % (slot, gs, ws))
    c.snd_nxt = sadd(base, rx.cum)
    t.app.ok("read %d %d" % (fd, rx.cum), 5)


@case("ooo_data_sack_blocks")
def ooo_sack(t):
    """Out-of-order segments are ACKed at once with the cumulative ACK unchanged and SACK
    blocks for what is held; filling a hole is ACKed at once; the app reads every byte in
    order. (Segments 4, then 2: the newest block is also the lowest, so this case does not
    depend on the block order.)"""
    ooo_run(t, [0, 4, 2, 1, 3], check_order=False)


@case("sack_first_block_most_recent")
def sack_order(t):
    """RFC 2018 4: the first SACK block holds the segment that triggered the ACK, the
    following ones repeat the most recently reported blocks, not the lowest first:
    segments 0, 2, 4, 6 give blocks [2], [4][2], [6][4][2]; then 3 gives [2-5][6]."""
    ooo_run(t, [0, 2, 4, 6, 3, 1, 5], check_order=True)
