"""Wire-level TCP conformance engine for shmnet (docs/conformance.md).

Runs in the network namespace that holds the kernel side of shmnetd's TAP. That side has
no IP address, so the kernel never answers anything on it; this engine is the only peer:
it owns 10.200.0.1 on an AF_PACKET socket (it answers ARP for that address itself),
sends TCP segments with exact sequence numbers, flags, options and timing, and reads the
daemon's segments with kernel receive timestamps (SO_TIMESTAMPNS). The application side
is tests/progs/conf_app under LD_PRELOAD=libshmnet_preload.so, driven line by line.

Frames are built and parsed by hand (struct), not with scapy: option order, padding and
every field are exactly what a case says, and nothing "fixes" a segment on the way.

Vocabulary of a case (see tests/conformance/cases/*.py):
    t.listen(backlog)            the app listens on a fresh port -> (lfd, port)
    t.connect_in(port, ...)      an engine connection opens to the daemon -> Conn
    t.passive(...)               listen + connect_in + accept -> (Conn, fd)
    t.active(...)                the app connects, the engine answers -> (Conn, fd)
    c.send(n=..), c.ack(), c.fin(), c.rst(seq)   segments from the engine
    c.expect(timeout, what, flags=, seq=, ack=, length=...)  the next daemon segment
    c.silence(duration, what)    no daemon segment on this connection for that long
    t.app.ok("write 5 1000")     a socket call in the application, answer checked
Sequence numbers in messages are relative: the daemon's to its ISN, ours to our ISN.
"""
import os
import queue
import random
import socket
import struct
import subprocess
import threading
import time

DAEMON_IP = "10.200.0.2"
DAEMON_MAC = "02:00:00:00:00:02"
PEER_IP = "10.200.0.1"

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_FLAG_ORDER = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "A"), (URG, "U"))

M32 = 0xFFFFFFFF


class Fail(Exception):
    """A conformance check failed: the message says what was expected and what came."""


def flags_str(f):
    return "".join(c for b, c in _FLAG_ORDER if f & b) or "."


def flags_val(s):
    v = 0
    for b, c in _FLAG_ORDER:
        if c in s:
            v |= b
    return v


def sadd(a, b):
    return (a + b) & M32


def sdiff(a, b):
    """a - b in sequence space, as a signed number."""
    return ((a - b + 0x80000000) & M32) - 0x80000000


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


_PAT = bytes(i % 251 for i in range(251))


def pattern(off, n):
    """n bytes of the stream pattern from stream offset off (byte i is i % 251)."""
    k = off % 251
    return (_PAT * ((k + n) // 251 + 1))[k:k + n]


def ip_bytes(a):
    return socket.inet_aton(a)


# ---------------------------------------------------------------- options
def opt_mss(v):
    return struct.pack("!BBH", 2, 4, v)


def opt_ws(shift):
    return b"\x01\x03\x03" + bytes([shift])  # NOP + WS


def opt_sackok():
    return b"\x04\x02"


def opt_ts(val, ecr):
    return struct.pack("!BBII", 8, 10, val & M32, ecr & M32)


def opt_sack(blocks):
    b = struct.pack("!BBBB", 1, 1, 5, 2 + 8 * len(blocks))
    for l, r in blocks:
        b += struct.pack("!II", l & M32, r & M32)
    return b


def parse_opts(b):
    o = {"kinds": []}
    i = 0
    while i < len(b):
        k = b[i]
        if k == 0:
            o["kinds"].append("EOL")
            break
        if k == 1:
            i += 1
            continue
        if i + 1 >= len(b) or b[i + 1] < 2 or i + b[i + 1] > len(b):
            o["malformed"] = True
            break
        ln = b[i + 1]
        v = b[i + 2:i + ln]
        if k == 2 and ln == 4:
            o["mss"] = struct.unpack("!H", v)[0]
            o["kinds"].append("MSS")
        elif k == 3 and ln == 3:
            o["ws"] = v[0]
            o["kinds"].append("WS")
        elif k == 4 and ln == 2:
            o["sackok"] = True
            o["kinds"].append("SACKOK")
        elif k == 5 and (ln - 2) % 8 == 0:
            o["sack"] = [struct.unpack("!II", v[j:j + 8]) for j in range(0, ln - 2, 8)]
            o["kinds"].append("SACK")
        elif k == 8 and ln == 10:
            o["ts"] = struct.unpack("!II", v)
            o["kinds"].append("TS")
        else:
            o["kinds"].append("opt%d" % k)
        i += ln
    return o


# ---------------------------------------------------------------- segments
class Seg:
    """A TCP segment the daemon sent (parsed from the frame), with its arrival time."""

    def __init__(self, t, ip):
        self.t = t
        ihl = (ip[0] & 0x0F) * 4
        self.iplen, = struct.unpack("!H", ip[2:4])
        self.df = bool(struct.unpack("!H", ip[6:8])[0] & 0x4000)
        self.src = socket.inet_ntoa(ip[12:16])
        self.dst = socket.inet_ntoa(ip[16:20])
        self.ipraw = bytes(ip[:self.iplen])
        h = ip[ihl:self.iplen]
        (self.sport, self.dport, self.seq, self.ack, off, self.flags, self.win, _c,
         _u) = struct.unpack("!HHIIBBHHH", h[:20])
        doff = (off >> 4) * 4
        self.optraw = bytes(h[20:doff])
        self.opts = parse_opts(self.optraw)
        self.payload = bytes(h[doff:])

    @property
    def len(self):
        return len(self.payload)

    def has(self, f):
        return bool(self.flags & f)

    @property
    def seqlen(self):
        return self.len + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    @property
    def end(self):
        return sadd(self.seq, self.seqlen)

    def __str__(self):
        return "%d>%d [%s] seq=%d ack=%d win=%d len=%d %s" % (
            self.sport, self.dport, flags_str(self.flags), self.seq, self.ack, self.win,
            self.len, fmt_opts(self.opts))


def fmt_opts(o, rel_seq=None):
    parts = []
    for k in o["kinds"]:
        if k == "MSS":
            parts.append("mss %d" % o["mss"])
        elif k == "WS":
            parts.append("ws %d" % o["ws"])
        elif k == "TS":
            parts.append("ts %d/%d" % o["ts"])
        elif k == "SACK":
            bl = o["sack"]
            if rel_seq:
                parts.append("sack " + " ".join("%d-%d" % (rel_seq(l), rel_seq(r))
                                                for l, r in bl))
            else:
                parts.append("sack " + " ".join("%d-%d" % b for b in bl))
        else:
            parts.append(k.lower())
    return "<" + ",".join(parts) + ">" if parts else ""


# ---------------------------------------------------------------- the wire
class Wire:
    """The AF_PACKET socket on the TAP's kernel side: frames out, the daemon's frames in."""

    def __init__(self, iface, trace):
        self.iface = iface
        self.trace = trace
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((iface, ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        with open("/sys/class/net/%s/address" % iface) as f:
            self.mac = bytes.fromhex(f.read().strip().replace(":", ""))
        self.dmac = bytes.fromhex(DAEMON_MAC.replace(":", ""))
        self.cv = threading.Condition()
        self.segs = []   # daemon TCP segments not taken yet
        self.icmp = []   # (t, bytes) ICMP from the daemon
        self.arp_replies = 0
        self.ip_id = random.randrange(65536)
        self.thread = threading.Thread(target=self._rx, daemon=True)
        self.thread.start()

    def _rx(self):
        mine = ip_bytes(PEER_IP)
        dip = ip_bytes(DAEMON_IP)
        while True:
            try:
                data, anc, _fl, addr = self.sock.recvmsg(65536, 256)
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING or len(data) < 14:
                continue
            t = None
            for lvl, typ, d in anc:
                if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(d) >= 16:
                    s, ns = struct.unpack("qq", d[:16])
                    t = s + ns / 1e9
            if t is None:
                t = time.time()
            etype, = struct.unpack("!H", data[12:14])
            if etype == ETH_P_ARP and len(data) >= 42:
                op, = struct.unpack("!H", data[20:22])
                if op == 1 and data[38:42] == mine:
                    sha, spa = data[22:28], data[28:32]
                    rep = (sha + self.mac + struct.pack("!H", ETH_P_ARP) +
                           struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 2) +
                           self.mac + mine + sha + spa)
                    try:
                        self.sock.send(rep)
                        self.arp_replies += 1
                    except OSError:
                        pass
                continue
            if etype != ETH_P_IP:
                continue
            ip = data[14:]
            if len(ip) < 20 or ip[12:16] != dip:
                continue
            if ip[9] == 6:
                try:
                    seg = Seg(t, ip)
                except struct.error:
                    continue
                with self.cv:
                    self.segs.append(seg)
                    self.cv.notify_all()
                self.trace.add(t, "<", str(seg))
            elif ip[9] == 1:
                with self.cv:
                    self.icmp.append((t, bytes(ip)))
                    self.cv.notify_all()
                self.trace.add(t, "<", "icmp type %d code %d" % (ip[(ip[0] & 15) * 4],
                                                               ip[(ip[0] & 15) * 4 + 1]))

    def clear(self):
        with self.cv:
            self.segs.clear()
            self.icmp.clear()

    def take(self, pred, timeout):
        """The first daemon segment matching pred (removed from the queue), waiting up to
        timeout seconds; None if none came."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for i, s in enumerate(self.segs):
                    if pred(s):
                        return self.segs.pop(i)
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def peek_all(self, pred):
        with self.cv:
            return [s for s in self.segs if pred(s)]

    def ip_packet(self, proto, payload, src=PEER_IP, dst=DAEMON_IP, df=True, ttl=64):
        self.ip_id = (self.ip_id + 1) & 0xFFFF
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), self.ip_id,
                        0x4000 if df else 0, ttl, proto, 0, ip_bytes(src), ip_bytes(dst))
        h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
        return h + payload

    def send_ip(self, pkt):
        """Send; returns the time just before the send (the daemon may answer before
        send() returns: an interval measured from here is never too short)."""
        t = time.time()
        self.sock.send(self.dmac + self.mac + struct.pack("!H", ETH_P_IP) + pkt)
        return t

    def send_tcp(self, sport, dport, seq, ack, flags, win, opts=b"", payload=b""):
        while len(opts) % 4:
            opts += b"\x01"
        hl = 20 + len(opts)
        h = struct.pack("!HHIIBBHHH", sport, dport, seq & M32, ack & M32, (hl // 4) << 4,
                        flags, win, 0, 0) + opts
        pseudo = struct.pack("!4s4sBBH", ip_bytes(PEER_IP), ip_bytes(DAEMON_IP), 0, 6,
                             hl + len(payload))
        c = csum(pseudo + h + payload)
        h = h[:16] + struct.pack("!H", c) + h[18:]
        return self.send_ip(self.ip_packet(6, h + payload))


class Trace:
    """What happened in the current case (frames both ways, app commands), printed when
    the case fails."""

    def __init__(self):
        self.lines = []
        self.t0 = time.time()
        self.lock = threading.Lock()

    def reset(self):
        with self.lock:
            self.lines = []
            self.t0 = time.time()

    def add(self, t, d, text):
        with self.lock:
            self.lines.append((t, d, text))

    def dump(self, n=80):
        with self.lock:
            ls = sorted(self.lines, key=lambda x: x[0])
        out = ["%9.4f %s %s" % (t - self.t0, d, x) for t, d, x in ls]
        if len(out) > n:
            out = out[:10] + ["... %d lines ..." % (len(out) - n)] + out[-(n - 10):]
        return out


# ---------------------------------------------------------------- the application
class App:
    """tests/progs/conf_app under LD_PRELOAD: one command line in, one answer line out."""

    def __init__(self, eng):
        self.e = eng
        env = dict(os.environ, LD_PRELOAD=eng.preload, SHMNET_SOCKET=eng.sock)
        self.p = subprocess.Popen([eng.app_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env, text=True, bufsize=1)
        self.q = queue.Queue()
        self.pending = []
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self):
        for line in self.p.stdout:
            line = line.rstrip("\n")
            self.e.trace.add(time.time(), "app<", line)
            self.q.put(line)
        self.q.put(None)

    def _err(self):
        for line in self.p.stderr:
            self.e.trace.add(time.time(), "app!", line.rstrip("\n"))

    def send(self, cmd):
        self.e.trace.add(time.time(), "app>", cmd)
        self.pending.append(cmd)
        try:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            raise Fail("app: cannot send '%s' (exited with %s)" % (cmd, self.p.poll()))

    def reply(self, timeout=5.0):
        cmd = self.pending.pop(0) if self.pending else "?"
        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            raise Fail("app: no answer to '%s' within %.1fs" % (cmd, timeout))
        if line is None:
            raise Fail("app: exited (status %s) before answering '%s'" % (self.p.wait(), cmd))
        return line

    def poll(self):
        """An answer if one is there (for the command sent first), else None."""
        try:
            line = self.q.get_nowait()
        except queue.Empty:
            return None
        cmd = self.pending.pop(0) if self.pending else "?"
        if line is None:
            raise Fail("app: exited (status %s) before answering '%s'" % (self.p.wait(), cmd))
        return line

    def cmd(self, c, timeout=5.0):
        self.send(c)
        return self.reply(timeout)

    def ok(self, c, timeout=5.0):
        r = self.cmd(c, timeout)
        if not r.startswith("ok"):
            raise Fail("app: '%s' answered '%s'" % (c, r))
        return r.split()[1:]

    def wait_exit(self, timeout=5.0):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Fail("app: did not exit within %.1fs" % timeout)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass


# ---------------------------------------------------------------- an engine connection
class Conn:
    """The engine's end of one TCP connection with the daemon. Options are offered in our
    SYN (or SYN-ACK) as asked; what both sides offered is then in use (ws_on, sack_on,
    ts_on). win is the receive window we advertise, in bytes."""

    def __init__(self, t, lport, rport, mss=1460, ws=None, sack=False, ts=False, win=65535,
                 name="c"):
        self.t = t
        self.e = t.e
        self.w = t.e.wire
        self.name = name
        self.lport, self.rport = lport, rport
        self.iss = random.getrandbits(32)
        self.snd_nxt = self.snd_una = self.iss
        self.irs = None
        self.rcv_nxt = None
        self.o_mss, self.o_ws, self.o_sack, self.o_ts = mss, ws, sack, ts
        self.ws_on = self.sack_on = self.ts_on = False
        self.peer_ws = 0
        self.peer_mss = None
        self.ts_recent = 0
        self.win = win
        self.fin_seq = None

    # -- relative numbers for messages
    def rs(self, s):
        """The daemon's sequence number s relative to its ISN."""
        return sdiff(s, self.irs) if self.irs is not None else s

    def ra(self, a):
        """Our sequence number a relative to our ISN."""
        return sdiff(a, self.iss)

    def fmt(self, s):
        return "[%s] seq=%d ack=%d win=%d len=%d %s" % (
            flags_str(s.flags), self.rs(s.seq), self.ra(s.ack) if s.flags & ACK else 0, s.win,
            s.len, fmt_opts(s.opts, self.ra))

    def match(self, s):
        return s.sport == self.rport and s.dport == self.lport

    # -- negotiation
    def negotiate(self, o):
        """o: the daemon's SYN or SYN-ACK options."""
        self.peer_mss = o.get("mss", 536)
        self.ws_on = self.o_ws is not None and "ws" in o
        self.peer_ws = o["ws"] if self.ws_on else 0
        self.sack_on = self.o_sack and o.get("sackok", False)
        self.ts_on = self.o_ts and "ts" in o
        if "ts" in o:
            self.ts_recent = o["ts"][0]

    def wscale_mine(self):
        return self.o_ws if self.ws_on else 0

    # -- sending
    def opts(self, flags, tsval=None, tsecr=None, sack=None):
        b = b""
        if flags & SYN:
            if self.o_mss is not None:
                b += opt_mss(self.o_mss)
            if self.o_sack and (not flags & ACK or self.sack_on):
                b += opt_sackok()
            if self.o_ts and (not flags & ACK or self.ts_on):
                b += opt_ts(self.e.tsval() if tsval is None else tsval,
                            (self.ts_recent if flags & ACK else 0) if tsecr is None else tsecr)
            if self.o_ws is not None and (not flags & ACK or self.ws_on):
                b += opt_ws(self.o_ws)
            return b
        if self.ts_on:
            b += b"\x01\x01" + opt_ts(self.e.tsval() if tsval is None else tsval,
                                     self.ts_recent if tsecr is None else tsecr)
        if sack:
            b += opt_sack(sack)
        return b

    def seg(self, flags, seq=None, ack=None, data=b"", win=None, tsval=None, tsecr=None,
            sack=None, opts=None):
        """One segment, sent as given (nothing is advanced); returns the send time."""
        if isinstance(flags, str):
            flags = flags_val(flags)
        seq = self.snd_nxt if seq is None else seq
        if ack is None:
            ack = self.rcv_nxt if flags & ACK and self.rcv_nxt is not None else 0
        w = self.win if win is None else win
        if not flags & SYN:
            w >>= self.wscale_mine()
        w = min(w, 0xFFFF)
        o = self.opts(flags, tsval, tsecr, sack) if opts is None else opts
        t = self.w.send_tcp(self.lport, self.rport, seq, ack, flags, w, o, data)
        self.e.trace.add(t, ">", "%d>%d [%s] seq=%d ack=%d win=%d len=%d %s" % (
            self.lport, self.rport, flags_str(flags), self.ra(seq),
            self.rs(ack) if flags & ACK else 0, w, len(data),
            fmt_opts(parse_opts(o), self.rs)))
        return t

    def send(self, n=None, data=None, flags="PA", seq=None, **kw):
        """Data from the stream pattern at seq (default SND.NXT, which then advances)."""
        advance = seq is None
        seq = self.snd_nxt if seq is None else seq
        if data is None:
            data = pattern(sdiff(seq, self.iss) - 1, n)
        t = self.seg(flags, seq=seq, data=data, **kw)
        if advance:
            self.snd_nxt = sadd(self.snd_nxt, len(data) + (1 if "F" in flags else 0))
        return t

    def ack(self, **kw):
        return self.seg("A", **kw)

    def fin(self, **kw):
        self.fin_seq = self.snd_nxt
        t = self.seg("FA", **kw)
        self.snd_nxt = sadd(self.snd_nxt, 1)
        return t

    def rst(self, seq=None, **kw):
        return self.seg("R", seq=seq, opts=b"", **kw)

    # -- receiving
    def recv(self, timeout):
        s = self.w.take(self.match, timeout)
        if s is not None and "ts" in s.opts:
            self.ts_recent = s.opts["ts"][0]
        return s

    def expect(self, timeout, what, flags=None, seq=None, ack=None, length=None, minlen=None,
               maxlen=None, skip=None):
        """The next segment on this connection must come within timeout and match. flags:
        the exact set ("A", "PA"...) or a callable. skip: segments to pass over."""
        end = time.monotonic() + timeout
        while True:
            s = self.recv(max(0.0, end - time.monotonic()))
            if s is None:
                raise Fail("no segment within %.3fs; expected %s" % (timeout, what))
            if skip and skip(s):
                continue
            break
        bad = []
        if flags is not None:
            okf = flags(s.flags) if callable(flags) else s.flags == flags_val(flags)
            if not okf:
                bad.append("flags")
        if seq is not None and s.seq != seq & M32:
            bad.append("seq (want %d)" % self.rs(seq))
        if ack is not None and (not s.flags & ACK or s.ack != ack & M32):
            bad.append("ack (want %d)" % self.ra(ack))
        if length is not None and s.len != length:
            bad.append("length (want %d)" % length)
        if minlen is not None and s.len < minlen:
            bad.append("length (want >= %d)" % minlen)
        if maxlen is not None and s.len > maxlen:
            bad.append("length (want <= %d)" % maxlen)
        if bad:
            raise Fail("expected %s, got %s: wrong %s" % (what, self.fmt(s), ", ".join(bad)))
        return s

    def silence(self, duration, what="nothing", skip=None, since=None):
        """No segment on this connection for duration seconds (skip: ones to pass over).
        since: the reference time for the message (default: now)."""
        t0 = time.time() if since is None else since
        end = time.monotonic() + duration
        while True:
            s = self.recv(max(0.0, end - time.monotonic()))
            if s is None:
                return
            if skip and skip(s):
                continue
            raise Fail("expected %s for %.3fs, got %s after %.3fs" % (
                what, duration, self.fmt(s), s.t - t0))

    def watch(self, duration, bad, what):
        """For duration seconds, every segment on this connection is checked: bad(s)
        returns a complaint (or None). Returns the segments seen."""
        end = time.monotonic() + duration
        seen = []
        while True:
            s = self.recv(max(0.0, end - time.monotonic()))
            if s is None:
                return seen
            seen.append(s)
            why = bad(s)
            if why:
                raise Fail("%s: %s (%s)" % (what, self.fmt(s), why))

    def is_old(self, s):
        """s brings nothing new: a pure ACK, or data/FIN entirely below RCV.NXT."""
        if s.seqlen == 0:
            return not s.flags & RST
        return sdiff(s.end, self.rcv_nxt) <= 0

    def collect(self, total, timeout=1.0, ack=True):
        """Data from the daemon until total more bytes came in order (the bytes are checked;
        pure ACKs and retransmissions of what we have are passed over). ack: ACK each
        segment at once. Returns the new segments."""
        segs, got = [], 0
        while got < total:
            s = self.expect(timeout, "data (%d of %d bytes so far)" % (got, total),
                            skip=self.is_old)
            if not self.take_in_order(s):
                raise Fail("out-of-order data %s (expected seq %d)" % (
                    self.fmt(s), self.rs(self.rcv_nxt)))
            if ack:
                self.ack()
            segs.append(s)
            got += s.len
        return segs

    def check_data(self, s):
        """The payload must be the stream pattern at its offset."""
        off = sdiff(s.seq, self.irs) - 1
        if s.payload != pattern(off, s.len):
            raise Fail("segment %s carries the wrong bytes for stream offset %d" % (
                self.fmt(s), off))

    def take_in_order(self, s):
        """Accept s's data and FIN if s starts at or before RCV.NXT and brings something
        new (the bytes are checked); returns True, else False (a hole before s)."""
        if sdiff(s.seq, self.rcv_nxt) > 0 or sdiff(s.end, self.rcv_nxt) <= 0:
            return False
        if s.len:
            self.check_data(s)
        self.rcv_nxt = s.end
        return True


# ---------------------------------------------------------------- the engine
class Engine:
    def __init__(self, iface, app_path, preload, sock, ctl, delack_ms, rto_min_ms):
        self.trace = Trace()
        self.wire = Wire(iface, self.trace)
        self.app_path = app_path
        self.preload = preload
        self.sock = sock
        self.ctl_path = ctl
        self.delack = delack_ms / 1000.0
        self.rto_min = rto_min_ms / 1000.0
        self.ts_base = random.getrandbits(32)

    def tsval(self):
        return (int(time.monotonic() * 1000) + self.ts_base) & M32

    def ctl(self, *args):
        r = subprocess.run([self.ctl_path, "-s", self.sock] + list(args), capture_output=True,
                           text=True, timeout=10)
        return r.stdout

    def stat(self, name):
        for line in self.ctl("stats").splitlines():
            p = line.split()
            if len(p) >= 2 and p[0] == name:
                return int(p[1])
        raise Fail("shmnetctl stats has no counter %s" % name)

    def sockets(self):
        """[(state, recvq, sendq, local_port, peer_port)] from shmnetctl sockets."""
        out = []
        for line in self.ctl("sockets").splitlines():
            p = line.split()
            if len(p) < 5 or ":" not in p[3] or not p[1].isdigit():
                continue
            lp = int(p[3].rsplit(":", 1)[1])
            pp = p[4].rsplit(":", 1)[1]
            out.append((p[0], int(p[1]), int(p[2]), lp, int(pp) if pp.isdigit() else 0))
        return out


class Case:
    """The context of one running case: its ports, its app process, helpers."""

    def __init__(self, eng, idx, name):
        self.e = eng
        self.name = name
        self._app = None
        self._port = 20000 + idx * 40   # engine-side ports (our end)
        self._aport = 6000 + idx * 16   # app listening ports

    @property
    def app(self):
        if self._app is None:
            self._app = App(self.e)
        return self._app

    def new_app(self):
        """A second application process."""
        a = App(self.e)
        self._extra = getattr(self, "_extra", []) + [a]
        return a

    def close(self):
        if self._app:
            self._app.kill()
        for a in getattr(self, "_extra", []):
            a.kill()

    def port(self):
        self._port += 1
        return self._port

    def aport(self):
        self._aport += 1
        return self._aport

    @property
    def delack(self):
        return self.e.delack

    @property
    def rto_min(self):
        return self.e.rto_min

    def log(self, text):
        self.e.trace.add(time.time(), "#", text)

    # -- application helpers
    def listen(self, backlog=8, app=None):
        app = app or self.app
        p = self.aport()
        fd = int(app.ok("listen %d %d" % (p, backlog))[0])
        return fd, p

    def accept(self, lfd, c=None, timeout_ms=3000, app=None):
        app = app or self.app
        r = app.ok("accept %d %d" % (lfd, timeout_ms), timeout_ms / 1000.0 + 2)
        fd, port = int(r[0]), int(r[1])
        if c is not None and port != c.lport:
            raise Fail("accept returned the connection from port %d, expected %d" % (
                port, c.lport))
        return fd

    # -- engine connects to a daemon listener
    def connect_in(self, port, mss=1460, ws=None, sack=False, ts=False, win=65535,
                   ack_delay=0.0, name="c", check_synack=True):
        """SYN -> SYN-ACK -> ACK. ack_delay holds our ACK back (the daemon's first RTT
        sample, so its SRTT and RTO, follow from it)."""
        c = Conn(self, self.port(), port, mss=mss, ws=ws, sack=sack, ts=ts, win=win, name=name)
        self.syn_handshake(c, ack_delay, check_synack)
        return c

    def syn_handshake(self, c, ack_delay=0.0, check_synack=True):
        c.seg("S")
        c.snd_nxt = sadd(c.iss, 1)
        sa = c.expect(2.0, "SYN-ACK", flags="SA" if check_synack else None,
                      ack=sadd(c.iss, 1))
        c.irs = sa.seq
        c.rcv_nxt = sadd(sa.seq, 1)
        c.negotiate(sa.opts)
        c.synack = sa
        if ack_delay:
            time.sleep(max(0.0, ack_delay - (time.time() - sa.t)))
        c.ack()
        return sa

    def passive(self, backlog=8, **kw):
        """The app listens and accepts; the engine connects. -> (Conn, fd)."""
        lfd, p = self.listen(backlog)
        c = self.connect_in(p, **kw)
        fd = self.accept(lfd, c)
        c.lfd = lfd
        return c, fd

    # -- the app connects to the engine
    def wait_syn(self, port, timeout=3.0):
        s = self.e.wire.take(lambda s: s.dport == port and s.flags & SYN and not s.flags & ACK,
                             timeout)
        if s is None:
            raise Fail("no SYN to port %d within %.1fs" % (port, timeout))
        return s

    def active(self, mss=1460, ws=None, sack=False, ts=False, win=65535, synack_delay=0.0,
               name="c"):
        """The app connects to us; we answer the SYN. -> (Conn, fd)."""
        port = self.port()
        self.app.send("connect %s %d" % (PEER_IP, port))
        syn = self.wait_syn(port)
        c = Conn(self, port, syn.sport, mss=mss, ws=ws, sack=sack, ts=ts, win=win, name=name)
        c.irs = syn.seq
        c.rcv_nxt = sadd(syn.seq, 1)
        c.syn = syn
        c.negotiate(syn.opts)
        if synack_delay:
            time.sleep(max(0.0, synack_delay - (time.time() - syn.t)))
        c.seg("SA")
        c.snd_nxt = sadd(c.iss, 1)
        c.expect(2.0, "the ACK of our SYN-ACK", flags="A", seq=sadd(syn.seq, 1),
                 ack=sadd(c.iss, 1), length=0)
        r = self.app.reply()
        if not r.startswith("ok"):
            raise Fail("app: connect answered '%s'" % r)
        return c, int(r.split()[1])

    # -- state checks through shmnetctl
    def state(self, c):
        for st, _rq, _sq, lp, pp in self.e.sockets():
            if lp == c.rport and pp == c.lport:
                return st
        return None

    def wait_state(self, c, want, timeout=1.0):
        end = time.monotonic() + timeout
        st = None
        while True:
            st = self.state(c)
            if st == want:
                return
            if time.monotonic() >= end:
                raise Fail("connection state %s, expected %s (shmnetctl sockets)" % (st, want))
            time.sleep(0.02)

    def listener_queue(self, port):
        for st, rq, _sq, lp, _pp in self.e.sockets():
            if st == "LISTEN" and lp == port:
                return rq
        return None


CASES = []


def case(name):
    """Register a case: def f(t) raising Fail (or AssertionError) when the rule is broken."""
    def reg(fn):
        CASES.append((name, fn, (fn.__doc__ or "").strip()))
        return fn
    return reg


def within(dt, lo, hi, what):
    if not lo <= dt <= hi:
        raise Fail("%s after %.3fs, expected between %.3fs and %.3fs" % (what, dt, lo, hi))
