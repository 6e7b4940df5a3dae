"""Connection close in every order (RFC 9293 3.6, 3.10.7.4): active close through
FIN-WAIT-1 and FIN-WAIT-2 to TIME-WAIT, a FIN+ACK straight to TIME-WAIT, passive close
through CLOSE-WAIT and LAST-ACK, simultaneous close through CLOSING; TIME-WAIT ACKs a
retransmitted FIN again. States are read with shmnetctl sockets."""
from engine import RST, Fail, case, within

MSS = 1000


def old_fin(f):
    return lambda s: s.flags & 0x01 and s.seq == f.seq  # our copy came again: fine


def active_close(t):
    c, fd = t.passive(mss=MSS)
    t.app.ok("close %d" % fd)
    f = c.expect(0.5, "FIN after close()", flags="FA", seq=c.rcv_nxt, ack=c.snd_nxt, length=0)
    return c, f


@case("close_active_fin_wait_to_time_wait")
def active(t):
    """close(): FIN (FIN-WAIT-1); our ACK of it: FIN-WAIT-2, nothing sent; our FIN: ACKed
    at once, TIME-WAIT."""
    c, f = active_close(t)
    t.wait_state(c, "FIN-WAIT-1")
    c.take_in_order(f)
    c.ack()
    t.wait_state(c, "FIN-WAIT-2")
    c.silence(0.1, "nothing in FIN-WAIT-2", skip=old_fin(f))
    tf = c.fin()
    a = c.expect(0.3, "ACK of our FIN", flags="A", seq=f.end, ack=c.snd_nxt, length=0,
                 skip=old_fin(f))
    within(a.t - tf, 0, t.delack / 2, "ACK of the FIN")
    t.wait_state(c, "TIME-WAIT")


@case("close_active_finack_to_time_wait")
def finack(t):
    """close(): FIN; our FIN carrying the ACK of theirs: one ACK, TIME-WAIT."""
    c, f = active_close(t)
    c.take_in_order(f)
    c.fin()
    c.expect(0.3, "ACK of our FIN", flags="A", seq=f.end, ack=c.snd_nxt, length=0,
             skip=old_fin(f))
    t.wait_state(c, "TIME-WAIT")


@case("time_wait_reacks_retransmitted_fin")
def tw_reack(t):
    """In TIME-WAIT a retransmission of the peer's FIN is ACKed again (RFC 9293 3.10.7.4,
    TIME-WAIT: "acknowledge it, and restart the 2 MSL timeout")."""
    c, f = active_close(t)
    c.take_in_order(f)
    c.ack()
    t.wait_state(c, "FIN-WAIT-2")
    c.fin()
    c.expect(0.3, "ACK of our FIN", flags="A", seq=f.end, ack=c.snd_nxt, skip=old_fin(f))
    t.wait_state(c, "TIME-WAIT")
    for k in range(2):
        tr = c.seg("FA", seq=c.fin_seq)
        a = c.expect(0.3, "ACK of our retransmitted FIN in TIME-WAIT (%d)" % (k + 1), flags="A",
                     seq=f.end, ack=c.snd_nxt, length=0)
        within(a.t - tr, 0, t.delack / 2, "ACK of the retransmitted FIN")
    t.wait_state(c, "TIME-WAIT")


@case("close_passive_close_wait_last_ack")
def passive(t):
    """Our FIN: ACKed at once, CLOSE-WAIT, the app reads EOF; its close(): FIN, LAST-ACK;
    our ACK: the connection is gone, and a segment for it gets a RST (RFC 9293 3.10.7.1)."""
    c, fd = t.passive(mss=MSS)
    tf = c.fin()
    a = c.expect(0.3, "ACK of our FIN", flags="A", ack=c.snd_nxt, length=0)
    within(a.t - tf, 0, t.delack / 2, "ACK of the FIN")
    t.wait_state(c, "CLOSE-WAIT")
    r = t.app.cmd("read %d 1 2000" % fd)
    if r != "eof 0":
        raise Fail("app read after our FIN answered '%s', expected end of file" % r)
    t.app.ok("close %d" % fd)
    f = c.expect(0.5, "FIN after close() in CLOSE-WAIT", flags="FA", seq=c.rcv_nxt,
                 ack=c.snd_nxt, length=0)
    t.wait_state(c, "LAST-ACK")
    c.take_in_order(f)
    c.ack()
    t.wait_state(c, None)
    c.ack()
    c.expect(0.3, "RST for an ACK to the closed connection", flags="R", seq=c.rcv_nxt,
             length=0)


@case("close_simultaneous_closing")
def simultaneous(t):
    """Both FINs cross: the daemon's FIN, then ours not acknowledging it: the daemon goes
    to CLOSING and ACKs our FIN (SEQ after its FIN); our ACK of its FIN: TIME-WAIT."""
    c, fd = t.passive(mss=MSS)
    t.app.ok("shutdown %d wr" % fd)
    f = c.expect(0.5, "FIN after shutdown(SHUT_WR)", flags="FA", seq=c.rcv_nxt, ack=c.snd_nxt)
    c.fin()  # ACK field = their FIN's sequence number: it does not acknowledge the FIN
    c.expect(0.3, "ACK of our FIN in CLOSING", flags="A", seq=f.end, ack=c.snd_nxt, length=0,
             skip=old_fin(f))
    t.wait_state(c, "CLOSING")
    c.take_in_order(f)
    c.ack()
    t.wait_state(c, "TIME-WAIT")
    r = t.app.cmd("read %d 1 2000" % fd)
    if r != "eof 0":
        raise Fail("app read after our FIN answered '%s', expected end of file" % r)


@case("so_linger_zero_sends_rst")
def linger0(t):
    """SO_LINGER {1, 0} then close(): a RST at SND.NXT instead of a FIN, the connection
    is gone."""
    c, fd = t.passive(mss=MSS)
    t.app.ok("linger %d 1 0" % fd)
    t.app.ok("close %d" % fd)
    c.expect(0.5, "RST on close() with SO_LINGER {1, 0}", flags=lambda f: f & RST and
             not f & 0x01, seq=c.rcv_nxt, length=0)
    c.silence(0.1, "nothing after the RST")
    t.wait_state(c, None)


@case("close_with_unread_data_sends_rst")
def unread(t):
    """close() with received bytes the app never read: a RST, not a FIN (RFC 2525 2.17,
    RFC 9293 3.6 note, as Linux)."""
    c, fd = t.passive(mss=MSS)
    c.send(100)
    c.expect(0.5, "ACK of our data", flags="A", ack=c.snd_nxt)
    t.app.ok("close %d" % fd)
    c.expect(0.5, "RST on close() with unread data", flags=lambda f: f & RST and not f & 0x01,
             seq=c.rcv_nxt, length=0)
    t.wait_state(c, None)


@case("half_close_data_after_fin")
def half_close(t):
    """shutdown(SHUT_WR): FIN; the daemon still receives (FIN-WAIT-2 takes data, ACKs it)
    and the app reads it."""
    c, fd = t.passive(mss=MSS)
    t.app.ok("shutdown %d wr" % fd)
    f = c.expect(0.5, "FIN after shutdown(SHUT_WR)", flags="FA", seq=c.rcv_nxt)
    c.take_in_order(f)
    c.ack()
    t.wait_state(c, "FIN-WAIT-2")
    for _k in range(3):
        c.send(500)
    c.expect(0.5, "ACK of our data in FIN-WAIT-2", flags="A", ack=c.snd_nxt, seq=f.end,
             skip=lambda s: s.flags == 0x10 and s.ack != c.snd_nxt)
    t.app.ok("read %d 1500" % fd)
