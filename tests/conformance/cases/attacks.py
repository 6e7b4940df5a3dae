"""Blind in-window attacks (RFC 5961) and PAWS (RFC 7323 5)."""
from engine import M32, Fail, case, sadd, within

MSS = 1000


@case("rfc5961_rst_in_window_challenge_ack")
def rst_challenge(t):
    """A RST inside the window but not at RCV.NXT gets a challenge ACK (SEQ = SND.NXT,
    ACK = RCV.NXT) and the connection lives on; RSTs outside the window are dropped
    silently; a RST exactly at RCV.NXT resets (the app reads ECONNRESET) and gets no
    answer (RFC 5961 3.2)."""
    c, fd = t.passive(mss=MSS)
    tr = c.rst(seq=sadd(c.snd_nxt, 100))
    a = c.expect(0.3, "challenge ACK for an in-window RST", flags="A", seq=c.rcv_nxt,
                 ack=c.snd_nxt, length=0)
    within(a.t - tr, 0, t.delack / 2, "challenge ACK")
    c.rst(seq=sadd(c.snd_nxt, -70000))
    c.rst(seq=sadd(c.snd_nxt, 0x40000000))
    c.silence(0.1, "nothing for RSTs outside the window")
    t.app.ok("write %d 10" % fd)
    c.collect(10)
    c.rst(seq=c.snd_nxt)
    c.silence(0.1, "nothing in answer to a RST at RCV.NXT")
    r = t.app.cmd("read %d 1 2000" % fd)
    if not r.startswith("err ECONNRESET"):
        raise Fail("app read after the RST answered '%s', expected ECONNRESET" % r)
    t.wait_state(c, None)


@case("rfc5961_syn_in_window_challenge_ack")
def syn_challenge(t):
    """A SYN on an established connection (in the window) gets a challenge ACK and the
    connection lives on (RFC 5961 4.2), no RST."""
    c, fd = t.passive(mss=MSS)
    ts = c.seg("S", seq=sadd(c.snd_nxt, 1000))
    a = c.expect(0.3, "challenge ACK for a SYN", flags="A", seq=c.rcv_nxt, ack=c.snd_nxt,
                 length=0)
    within(a.t - ts, 0, t.delack / 2, "challenge ACK")
    c.silence(0.05, "nothing else")
    t.app.ok("write %d 10" % fd)
    c.collect(10)
    c.send(10)
    t.app.ok("read %d 10" % fd)


@case("paws_old_timestamp_dropped")
def paws(t):
    """With timestamps, a segment whose TSval is older than TS.Recent is dropped and ACKed
    at once (ACK unchanged, TS.Recent unchanged); the same bytes with a current TSval are
    taken; the app reads every byte once (RFC 7323 5.3)."""
    c, fd = t.passive(mss=1460, ws=7, sack=True, ts=True)
    c.send(100)
    c.expect(0.5, "ACK of our data", flags="A", ack=c.snd_nxt)
    seq = c.snd_nxt
    old = (t.e.tsval() - 100000) & M32
    tp = c.send(100, seq=seq, tsval=old)
    a = c.expect(0.3, "ACK for a segment with an old timestamp (dropped)", flags="A",
                 ack=seq, length=0)
    within(a.t - tp, 0, t.delack / 2, "ACK of the PAWS-dropped segment")
    if a.opts.get("ts", (0, 0))[1] == old:
        raise Fail("the ACK echoes the old TSval %d: TS.Recent must not take it" % old)
    c.send(100)
    c.expect(0.5, "ACK of the same bytes with a current timestamp", flags="A", ack=c.snd_nxt)
    t.app.ok("read %d 200" % fd)
