"""Three-way handshake in both roles, with every option and with none (RFC 9293 3.5,
RFC 7323 1.3/2.2/3.2, RFC 2018 2, RFC 9293 3.7.1 default MSS), and RST for a closed port
(RFC 9293 3.10.7.1)."""
from engine import PEER_IP, RST, SYN, Conn, Fail, case, sadd, sdiff

ROUTE_MSS = 1460  # MTU 1500 - 40


def need(cond, msg):
    if not cond:
        raise Fail(msg)


def collect(c, total, ack=True):
    return c.collect(total, ack=ack)


@case("handshake_passive_all_options")
def passive_all(t):
    """SYN with MSS, SACK-permitted, TS and WS: the SYN-ACK answers each (MSS of the route,
    SACK-permitted, TSecr = our TSval, a shift <= 14); then data segments carry TS and the
    sender applies our window scale."""
    lfd, p = t.listen()
    c = Conn(t, t.port(), p, mss=1460, ws=2, sack=True, ts=True, win=1448 * 4)
    tsv = t.e.tsval()
    c.seg("S", tsval=tsv)
    c.snd_nxt = sadd(c.iss, 1)
    sa = c.expect(2.0, "SYN-ACK", flags="SA", ack=sadd(c.iss, 1), length=0)
    o = sa.opts
    need(o.get("mss") == ROUTE_MSS, "SYN-ACK MSS %s, expected %d" % (o.get("mss"), ROUTE_MSS))
    need(o.get("sackok"), "SYN-ACK without SACK-permitted (our SYN offered it)")
    need("ts" in o, "SYN-ACK without timestamps (our SYN offered them)")
    need(o["ts"][1] == tsv, "SYN-ACK TSecr %d, expected our TSval %d" % (o["ts"][1], tsv))
    need("ws" in o and o["ws"] <= 14, "SYN-ACK window scale %s, expected 0..14" % o.get("ws"))
    need(0 < sa.win, "SYN-ACK offers a zero window")
    c.irs, c.rcv_nxt = sa.seq, sadd(sa.seq, 1)
    c.negotiate(o)
    c.ack()
    fd = t.accept(lfd, c)
    # Our window: 1448 << 2 = 5792 bytes = 4 segments of 1448 (MSS 1460 - 12 bytes of TS).
    t.app.ok("write %d 10000" % fd)
    segs = collect(c, 1448 * 4, ack=False)
    for s in segs:
        need("ts" in s.opts, "data segment without timestamps: %s" % c.fmt(s))
        need(s.len <= 1448, "segment of %d bytes > MSS 1460 - 12 (TS)" % s.len)
        need(not {"MSS", "WS", "SACKOK"} & set(s.opts["kinds"]),
             "SYN-only option in a data segment: %s" % c.fmt(s))
    edge = c.rcv_nxt
    c.watch(0.15, lambda s: "beyond our window" if sdiff(s.end, edge) > 0 else None,
            "bytes beyond our scaled window (1448 << 2 = 5792 bytes)")
    c.ack()
    collect(c, 10000 - 1448 * 4)
    c.send(100)
    t.app.ok("read %d 100" % fd)


@case("handshake_passive_no_options")
def passive_none(t):
    """SYN without options: the SYN-ACK carries no WS, SACK-permitted or TS (RFC 7323 1.3,
    RFC 2018 2), the daemon sends segments of at most the default MSS 536 (RFC 9293 3.7.1)
    with no options, and its window is not scaled."""
    lfd, p = t.listen()
    c = t.connect_in(p, mss=None)
    o = c.synack.opts
    bad = {"WS", "SACKOK", "TS", "SACK"} & set(o["kinds"])
    need(not bad, "SYN-ACK carries %s although our SYN had no options" % sorted(bad))
    fd = t.accept(lfd, c)
    t.app.ok("write %d 2000" % fd)
    for s in collect(c, 2000):
        need(s.len <= 536, "segment of %d bytes without an MSS option (default 536)" % s.len)
        need(not s.opts["kinds"], "options %s in a segment of a connection without any"
             % s.opts["kinds"])
    c.send(300)
    t.app.ok("read %d 300" % fd)


@case("handshake_active_all_options")
def active_all(t):
    """The app connects: the SYN offers MSS, SACK-permitted, TS (TSecr 0) and WS; our
    SYN-ACK with all of them is ACKed with TSecr = our TSval; data carries TS."""
    port = t.port()
    t.app.send("connect %s %d" % (PEER_IP, port))
    syn = t.wait_syn(port)
    o = syn.opts
    need(syn.flags == SYN, "SYN with flags %s" % syn.flags)
    need(o.get("mss") == ROUTE_MSS, "SYN MSS %s, expected %d" % (o.get("mss"), ROUTE_MSS))
    need(o.get("sackok"), "SYN without SACK-permitted")
    need("ts" in o and o["ts"][1] == 0, "SYN without timestamps or with TSecr != 0: %s" % o)
    need("ws" in o and o["ws"] <= 14, "SYN without a window scale (0..14): %s" % o)
    c = Conn(t, port, syn.sport, mss=1460, ws=7, sack=True, ts=True)
    c.irs, c.rcv_nxt = syn.seq, sadd(syn.seq, 1)
    c.negotiate(o)
    tsv = t.e.tsval()
    c.seg("SA", tsval=tsv)
    c.snd_nxt = sadd(c.iss, 1)
    a = c.expect(2.0, "the ACK of our SYN-ACK", flags="A", seq=sadd(syn.seq, 1),
                 ack=sadd(c.iss, 1), length=0)
    need("ts" in a.opts and a.opts["ts"][1] == tsv,
         "ACK TSecr %s, expected our TSval %d" % (a.opts.get("ts"), tsv))
    r = t.app.reply()
    need(r.startswith("ok"), "connect answered %s" % r)
    fd = int(r.split()[1])
    t.app.ok("write %d 3000" % fd)
    for s in collect(c, 3000):
        need("ts" in s.opts, "data segment without timestamps: %s" % c.fmt(s))
        need(s.len <= 1448, "segment of %d bytes > 1448" % s.len)


@case("handshake_active_no_options")
def active_none(t):
    """The app connects, our SYN-ACK has no options: no TS or SACK in the daemon's
    segments afterwards, at most 536 bytes each (no MSS option)."""
    port = t.port()
    t.app.send("connect %s %d" % (PEER_IP, port))
    syn = t.wait_syn(port)
    c = Conn(t, port, syn.sport, mss=None)
    c.irs, c.rcv_nxt = syn.seq, sadd(syn.seq, 1)
    c.negotiate(syn.opts)
    c.seg("SA")
    c.snd_nxt = sadd(c.iss, 1)
    a = c.expect(2.0, "the ACK of our SYN-ACK", flags="A", seq=sadd(syn.seq, 1),
                 ack=sadd(c.iss, 1), length=0)
    need(not a.opts["kinds"], "options %s in the ACK, our SYN-ACK had none" % a.opts["kinds"])
    r = t.app.reply()
    need(r.startswith("ok"), "connect answered %s" % r)
    fd = int(r.split()[1])
    t.app.ok("write %d 2000" % fd)
    for s in collect(c, 2000):
        need(s.len <= 536, "segment of %d bytes without an MSS option (default 536)" % s.len)
        need(not s.opts["kinds"], "options %s in a segment" % s.opts["kinds"])


@case("rst_for_closed_port")
def closed_port(t):
    """A SYN to a port nobody listens on gets <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>, an ACK
    gets <SEQ=SEG.ACK><CTL=RST> (RFC 9293 3.10.7.1)."""
    c = Conn(t, t.port(), t.aport())
    c.seg("S")
    r = c.expect(1.0, "RST,ACK for a SYN to a closed port", flags="RA", seq=0,
                 ack=sadd(c.iss, 1), length=0)
    need(r.flags & RST, "")
    c.seg("A", seq=sadd(c.iss, 1), ack=12345)
    c.expect(1.0, "RST for an ACK to a closed port", flags="R", seq=12345, length=0)
