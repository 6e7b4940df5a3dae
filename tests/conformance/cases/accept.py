"""Listeners and their accept queue: order, data before accept(), a listener closing
with unaccepted connections (RST at the right sequence number, as Linux), connections
reset before accept(), an accept queue overflow (Linux's tcp_abort_on_overflow = 0 drops the final ACK and lets it be retried)."""
import time

from engine import RST, SYN, Conn, Fail, case, sadd

OPTS = dict(mss=1460, ws=7, sack=True, ts=True)


def full_synack(c, what):
    """The SYN-ACK answered every option we offered: it is not a SYN cookie (a cookie's
    SYN-ACK carries only the MSS, docs/tcp.md) and the listener had room."""
    missing = [k for k in ("ws", "sackok", "ts") if k not in c.synack.opts]
    if missing:
        raise Fail("%s: the SYN-ACK lacks %s (a SYN cookie: the listener counted itself "
                   "full)" % (what, ", ".join(missing)))


@case("accept_queue_order_and_early_data")
def order(t):
    """Three handshakes complete before accept(); two send data at once. accept() returns
    them in the order they completed, and the early data is there to read."""
    lfd, p = t.listen(backlog=4)
    cs = [t.connect_in(p, name="c%d" % i, **OPTS) for i in range(3)]
    for c in cs[:2]:
        c.send(100)
        c.expect(0.5, "ACK of data sent before accept()", flags="A", ack=c.snd_nxt)
    for c in cs:
        full_synack(c, c.name)
    fds = [t.accept(lfd, c) for c in cs]
    for fd in fds[:2]:
        t.app.ok("read %d 100" % fd)


@case("accept_listener_close_resets_unaccepted")
def listener_close(t):
    """close() of a listener with two unaccepted connections: each gets a RST at its
    SND.NXT (as Linux: the child is reset), and the port answers a new SYN with RST,ACK."""
    lfd, p = t.listen(backlog=4)
    cs = [t.connect_in(p, name="c%d" % i, **OPTS) for i in range(2)]
    t.app.ok("close %d" % lfd)
    for c in cs:
        c.expect(0.5, "RST for %s (unaccepted) when its listener closes" % c.name,
                 flags=lambda f: f & RST, seq=c.rcv_nxt, length=0)
    c = Conn(t, t.port(), p)
    c.seg("S")
    c.expect(0.5, "RST,ACK for a SYN to the closed listener's port", flags="RA", seq=0,
             ack=sadd(c.iss, 1))


def no_answer(t, conns, what):
    """No segment on these connections for 0.2 s (a SYN-ACK again would mean that the
    final ACK was not taken, a RST that the handshake was refused)."""
    s = t.e.wire.take(lambda s: any(c.match(s) for c in conns), 0.2)
    if s is not None:
        c = [c for c in conns if c.match(s)][0]
        raise Fail("%s got %s after its handshake (%s)" % (c.name, c.fmt(s), what))


def reset_before_accept(t, fin_first):
    """Backlog 2. reset1 completes its handshake and is reset before accept(); live1
    connects: accept() must give live1 (a reset connection it may give only if a read
    reports the reset and a write fails), and a write on it must go out on live1's
    4-tuple. Then reset2 and reset3 are reset before accept() too: the listener must not
    count them (its queue length goes back to 0, live2 and live3 complete normally, not
    with SYN cookies). Closing the listener resets live2 and live3 at their SND.NXT;
    live1 still works; nothing ever goes out on a reset connection's 4-tuple."""
    lfd, p = t.listen(backlog=2)
    dead = []

    def reset_one(name):
        d = t.connect_in(p, name=name, **OPTS)
        full_synack(d, "%s (after %d connection(s) reset before accept())" % (name, len(dead)))
        if fin_first:
            d.fin()
            d.expect(0.5, "ACK of %s's FIN" % d.name, flags="A", ack=d.snd_nxt)
        d.rst(seq=d.snd_nxt)
        dead.append(d)
        time.sleep(0.02)

    def accept_live(c):
        ports = {d.lport: d for d in dead}
        returned = 0
        while True:
            r = t.app.ok("accept %d 2000" % lfd, 4)
            fd, port = int(r[0]), int(r[1])
            if port == c.lport:
                return fd
            if port not in ports:
                raise Fail("accept() returned a connection from port %d, expected %d (%s)" % (
                    port, c.lport, c.name))
            d = ports[port]
            returned += 1
            rr = t.app.cmd("read %d 1 300" % fd)
            if not (rr.startswith("err ECONNRESET") or rr.startswith("err EPIPE") or
                    (fin_first and rr.startswith("eof"))):
                raise Fail("accept() returned %s, reset before accept(), and a read on it "
                           "answered '%s' (expected ECONNRESET)" % (d.name, rr))
            rw = t.app.cmd("write %d 10" % fd)
            if not rw.startswith("err"):
                raise Fail("accept() returned %s, reset before accept(), and a write on it "
                           "answered '%s' (expected an error)" % (d.name, rw))
            t.app.ok("close %d" % fd)
            if returned > len(dead):
                raise Fail("accept() keeps returning reset connections")

    reset_one("reset1")
    live1 = t.connect_in(p, name="live1", **OPTS)
    full_synack(live1, "live1 (after reset1)")
    no_answer(t, [live1], "the listener refused it")
    fd = accept_live(live1)
    t.app.ok("write %d 100" % fd)
    live1.collect(100)
    reset_one("reset2")
    reset_one("reset3")
    q = None
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        q = t.listener_queue(p)
        if q == 0:
            break
        time.sleep(0.05)
    if q != 0:
        raise Fail("the listener's accept queue still holds %s connection(s) after the "
                   "connections in it were reset (shmnetctl sockets Recv-Q)" % q)
    live = [t.connect_in(p, name="live%d" % (i + 2), **OPTS) for i in range(2)]
    for c in live:
        full_synack(c, "%s (after 3 reset connections)" % c.name)
    no_answer(t, live, "the final ACK was not taken: the listener counts the reset "
              "connections")
    t.app.ok("close %d" % lfd)
    for c in live:
        c.expect(0.5, "RST for %s (unaccepted) when the listener closes" % c.name,
                 flags=lambda f: f & RST, seq=c.rcv_nxt, length=0)
    t.app.ok("write %d 100" % fd)
    live1.collect(100)
    time.sleep(0.05)
    for d in dead:
        extra = t.e.wire.peek_all(d.match)
        if extra:
            raise Fail("segment on %s's 4-tuple after its reset: %s" % (
                d.name, d.fmt(extra[0])))


@case("accept_rst_before_accept")
def rst_before(t):
    reset_before_accept(t, fin_first=False)


rst_before.__doc__ = ("RST before accept(): " + reset_before_accept.__doc__)


@case("accept_fin_rst_before_accept")
def fin_rst_before(t):
    reset_before_accept(t, fin_first=True)


fin_rst_before.__doc__ = ("FIN, then RST before accept(): " + reset_before_accept.__doc__)


@case("accept_queue_overflow_drops_ack")
def overflow(t):
    """Backlog 1, the app not accepting: three SYNs (all answered), then the three final
    ACKs, each followed by a 10-byte request that the engine retransmits (RTO 0.2 s, x2,
    at most 0.8 s) like a client. What the queue cannot hold must be dropped silently, no
    RST (Linux, tcp_abort_on_overflow = 0; tcp.abort_on_overflow = false): a dropped ACK
    or request is taken when it is retried (our retransmission, or our ACK of a
    retransmitted SYN-ACK) after accept() made room. At least one connection must wait
    (Linux holds backlog + 1 = 2); all three are accepted in the end and their requests
    read."""
    lfd, p = t.listen(backlog=1)
    cs = [Conn(t, t.port(), p, name="k%d" % (i + 1), **OPTS) for i in range(3)]
    for c in cs:
        c.seg("S")
        c.snd_nxt = sadd(c.iss, 1)
    for c in cs:
        sa = c.expect(1.5, "SYN-ACK for %s" % c.name, flags="SA", ack=c.snd_nxt)
        c.irs, c.rcv_nxt = sa.seq, sadd(sa.seq, 1)
        c.negotiate(sa.opts)
        c.synack = sa
    now = time.time()
    for c in cs:
        c.ack()
        c.req_seq = c.snd_nxt
        c.send(10)
        c.acked = False
        c.rto = 0.2
        c.next_rtx = now + c.rto
        c.synack_rtx = 0
        c.first_ack = None

    def pump(until):
        while time.time() < until:
            s = t.e.wire.take(lambda s: any(c.match(s) for c in cs), 0.01)
            now = time.time()
            if s is not None:
                c = [c for c in cs if c.match(s)][0]
                if s.flags & RST:
                    raise Fail("%s: RST %s from the daemon after the handshake completed with "
                               "the accept queue full: the ACK must be dropped silently "
                               "(Linux, tcp_abort_on_overflow = 0)" % (c.name, c.fmt(s)))
                if s.flags & SYN:
                    c.synack_rtx += 1
                    c.ack()  # a client answers a repeated SYN-ACK with an ACK
                elif s.ack == c.snd_nxt and not c.acked:
                    c.acked = True
                    c.first_ack = now
            for c in cs:
                if not c.acked and now >= c.next_rtx:
                    c.send(10, seq=c.req_seq)
                    c.rto = min(2 * c.rto, 0.8)
                    c.next_rtx = now + c.rto
    pump(time.time() + 0.6)
    waiting = [c.name for c in cs if not c.acked]
    if not waiting:
        raise Fail("all three requests were acknowledged with backlog 1 and no accept(): the "
                   "accept queue never overflowed (Linux holds backlog + 1 = 2)")
    t.log("waiting for room: %s" % " ".join(waiting))
    accepted = {}
    t.app.send("accept %d 6000" % lfd)
    pending = "accept"
    end = time.time() + 8
    while len(accepted) < 3:
        if time.time() > end:
            raise Fail("accepted %s; %s never came (waiting before accept: %s)" % (
                sorted(accepted.values()) or "none",
                [c.name for c in cs if c.name not in accepted.values()], waiting))
        pump(time.time() + 0.02)
        r = t.app.poll()
        if r is None:
            continue
        if pending == "accept":
            if not r.startswith("ok"):
                raise Fail("accept() answered '%s' with %s accepted; waiting: %s" % (
                    r, sorted(accepted.values()) or "none", [c.name for c in cs if not c.acked]))
            fd, port = int(r.split()[1]), int(r.split()[2])
            cc = [c for c in cs if c.lport == port]
            if not cc or port in [c.lport for c in cs if c.name in accepted.values()]:
                raise Fail("accept() returned port %d" % port)
            accepted[fd] = cc[0].name
            t.app.send("read %d 10 4000" % fd)
            pending = "read"
        else:
            if r != "ok 10":
                raise Fail("read of the request on %s answered '%s'" % (
                    list(accepted.values())[-1], r))
            if len(accepted) < 3:
                t.app.send("accept %d 6000" % lfd)
                pending = "accept"
    if list(accepted.values())[0] != "k1":
        raise Fail("accept() order %s: k1 completed first" % list(accepted.values()))
