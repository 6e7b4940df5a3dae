"""Graceful close with data still queued (RFC 9293 3.10.4: CLOSE "queue this until all
preceding SENDs have been segmentized; then form a FIN"; Linux: close() without
SO_LINGER, and the exit of a process, which closes its descriptors, hand what was
written to the kernel, which sends it all and then the FIN).

The peer is a late reader: its 4096-byte window fills and stays closed for LATE seconds
(the right edge never moves left), then it reads and ACKs with a 4096-byte window. The
program has long exited by then."""
import time

from engine import FIN, RST, Fail, case, sadd, sdiff

TOTAL = 200000
WIN = 4096
LATE = 1.2


def drain(t, c, how):
    """Receive everything (late reader, then a small window), ACKing each segment; fail
    on a RST or a stall."""
    base = c.rcv_nxt
    edge = sadd(c.rcv_nxt, WIN)
    reading_at = time.time() + LATE
    reading = False
    while True:
        now = time.time()
        if not reading and now >= reading_at:
            reading = True
            edge = sadd(c.rcv_nxt, WIN)
            c.ack(win=WIN)  # the reader is back: window update
        s = c.recv(1.5 if reading else min(1.5, max(0.0, reading_at - now)))
        got = sdiff(c.rcv_nxt, base)
        if s is None:
            if reading:
                raise Fail("%s: stalled after %d of %d bytes (nothing for 1.5 s)" % (
                    how, got, TOTAL))
            continue
        if s.flags & RST:
            raise Fail("%s: RST %s after %d of %d bytes; with SO_LINGER off every byte must be "
                       "sent, then a FIN (RFC 9293 3.10.4, as Linux)" % (
                           how, c.fmt(s), got, TOTAL))
        if sdiff(s.end, edge) <= 0 or (s.flags & FIN and sdiff(s.end, edge) == 1):
            if c.take_in_order(s) and s.flags & FIN:
                if sdiff(c.rcv_nxt, base) - 1 != TOTAL:
                    raise Fail("%s: FIN after %d bytes, %d were written" % (
                        how, sdiff(c.rcv_nxt, base) - 1, TOTAL))
                c.ack(win=WIN)
                break
        if reading:
            edge = sadd(c.rcv_nxt, WIN)
        if s.seqlen:
            c.ack(win=max(0, sdiff(edge, c.rcv_nxt)))
    c.fin()
    c.expect(0.5, "ACK of our FIN", flags="A", ack=c.snd_nxt, skip=lambda s: s.flags & FIN)


@case("close_after_write_flushes")
def close_flush(t):
    """write() of 200000 bytes, close() at once, then the program exits; the peer reads
    late through a 4096-byte window: all 200000 bytes arrive, then the FIN, never a RST."""
    c, fd = t.passive(mss=1460, win=WIN)
    t.app.ok("writeclose %d %d" % (fd, TOTAL), 10)
    t.app.ok("exit")
    drain(t, c, "close() right after the write, then exit")
    t.app.wait_exit(2)


@case("exit_after_write_flushes")
def exit_flush(t):
    """write() of 200000 bytes, then the program exits without close(): as Linux closes
    the descriptors of an exiting process, all 200000 bytes arrive through the late
    reader's small window, then the FIN, never a RST."""
    c, fd = t.passive(mss=1460, win=WIN)
    t.app.ok("write %d %d" % (fd, TOTAL))
    t.app.ok("exit")
    drain(t, c, "exit without close() right after the write")
    t.app.wait_exit(2)
