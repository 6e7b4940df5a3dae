#!/usr/bin/python3
"""Send malformed or hostile frames to the daemon (run inside the peer namespace).

Usage: badframes.py IFACE CASE [CASE...]

IFACE is the kernel side of the daemon's TAP; frames go to the daemon's MAC
(02:00:00:00:00:02, IPv4 10.200.0.2) from the interface's own MAC and 10.200.0.1.
Uses Debian's python3-scapy (run with /usr/bin/python3). Malformed headers are built
byte by byte so that nothing "fixes" them on the way. Prints how many frames it sent.
"""
import struct
import sys

from scapy.all import ARP, ICMP, IP, Ether, Raw, get_if_hwaddr, sendp  # noqa: E402

DAEMON_MAC = "02:00:00:00:00:02"
DAEMON_IP = "10.200.0.2"
PEER_IP = "10.200.0.1"


def csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_addr(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ip4(payload: bytes, *, ihl=5, tot_len=None, ident=0x1234, flags_frag=0, proto=1,
        ttl=64, src=PEER_IP, dst=DAEMON_IP, bad_csum=False, options=b"") -> bytes:
    """IPv4 header + payload with free choice of every field; checksum over ihl*4 bytes
    when they exist (else over what there is)."""
    if tot_len is None:
        tot_len = 20 + len(options) + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | (ihl & 0xF), 0, tot_len & 0xFFFF, ident,
                      flags_frag, ttl, proto, 0, ip_addr(src), ip_addr(dst)) + options
    c = csum(hdr)
    if bad_csum:
        c = (c + 1) & 0xFFFF or 1
    hdr = hdr[:10] + struct.pack("!H", c) + hdr[12:]
    return hdr + payload


def icmp_echo(ident=0x4242, seq=1, data=b"shmnet-badinput!", bad_csum=False) -> bytes:
    h = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    c = csum(h)
    if bad_csum:
        c = (c + 1) & 0xFFFF or 1
    return h[:2] + struct.pack("!H", c) + h[4:]


MF = 0x2000


def frames(case, ifmac):
    eth = Ether(dst=DAEMON_MAC, src=ifmac, type=0x0800)
    if case == "eth_short":
        # 10 bytes: shorter than an Ethernet header (the kernel may refuse to send it).
        return [Raw(bytes.fromhex("0200000000020000") + b"\x08\x00")]
    if case == "ip_short":
        return [eth / Raw(ip4(icmp_echo())[:12])]           # 12 of the 20 header bytes
    if case == "ip_csum":
        return [eth / Raw(ip4(icmp_echo(), bad_csum=True))]
    if case == "ip_ihl3":
        return [eth / Raw(ip4(icmp_echo(), ihl=3))]
    if case == "ip_ihl15":
        # IHL 15 = 60-byte header, but the datagram has 36 bytes in all.
        return [eth / Raw(ip4(icmp_echo(data=b""), ihl=15, tot_len=36) + b"\0" * 8)]
    if case == "ip_len":
        return [eth / Raw(ip4(icmp_echo(), tot_len=1000))]  # claims 1000, carries 44
    if case == "frag_overlap":
        data = icmp_echo(data=b"A" * 40)                     # 48 bytes of ICMP
        f1 = ip4(data[:24], ident=0x7001, flags_frag=MF | 0, tot_len=44)
        f2 = ip4(data[8:48], ident=0x7001, flags_frag=1, tot_len=60)  # offset 8 < 24: overlap
        return [eth / Raw(f1), eth / Raw(f2)]
    if case == "frag_flood":
        # 2000 datagrams, only their first fragment ever arrives.
        return [eth / Raw(ip4(icmp_echo(data=b"B" * 8)[:16], ident=0x8000 + i,
                              flags_frag=MF, tot_len=36))
                for i in range(2000)]
    if case == "frag_many":
        # One datagram in 300 pieces of 8 bytes, never finished (all MF).
        return [eth / Raw(ip4(b"C" * 8, ident=0x9001, flags_frag=MF | i, tot_len=28))
                for i in range(300)]
    if case == "arp_wrong_subnet":
        return [Ether(dst="ff:ff:ff:ff:ff:ff", src=ifmac) /
                ARP(op=1, hwsrc=ifmac, psrc="10.99.0.1", hwdst="00:00:00:00:00:00",
                    pdst=DAEMON_IP)]
    if case == "icmp_csum":
        return [eth / Raw(ip4(icmp_echo(bad_csum=True)))]
    if case == "good_echo":
        return [eth / IP(src=PEER_IP, dst=DAEMON_IP) / ICMP() / Raw(b"ok")]
    raise SystemExit("unknown case " + case)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    iface = sys.argv[1]
    ifmac = get_if_hwaddr(iface)
    total = 0
    for case in sys.argv[2:]:
        fr = frames(case, ifmac)
        sendp(fr, iface=iface, verbose=0)
        total += len(fr)
        print("%s: sent %d frame(s)" % (case, len(fr)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
