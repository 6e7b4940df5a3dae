#!/usr/bin/env python3
"""Open many connections to shmnetd's control socket, as a hostile local user would.

  ctlflood.py SOCKET N REQUEST open   N connections, each sends REQUEST (a line; "" sends
                                      nothing) and never reads; prints "OPEN opened O failed
                                      F" and keeps them open until killed.
  ctlflood.py SOCKET N REQUEST hold   the same, but prints, once every connection has
                                      something to read (an answer, a refusal or EOF) or
                                      after 30 s, "READY opened O failed F refused R pending
                                      P" (R: refused with "error: too many ...").
  ctlflood.py SOCKET N REQUEST close  N times: connect, send REQUEST, close. Prints
                                      "DONE opened O failed F".
"""
import select
import signal
import socket
import sys
import time


def main():
    path, n, req, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    conns, failed = [], 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            if req:
                s.sendall(req.encode() + b"\n")
        except OSError:
            failed += 1
            s.close()
            continue
        if mode == "close":
            s.close()
        else:
            conns.append(s)
    if mode == "close":
        print(f"DONE opened {n - failed} failed {failed}", flush=True)
        return
    if mode == "open":
        print(f"OPEN opened {len(conns)} failed {failed}", flush=True)
        hold()
    poller = select.poll()
    pending = {s.fileno(): s for s in conns}
    for fd in pending:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(500):
            if pending.pop(fd, None):
                poller.unregister(fd)
    refused = 0
    for s in conns:
        if s.fileno() in pending:
            continue
        try:
            head = s.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            continue
        refused += head.startswith(b"error: too many")
    print(f"READY opened {len(conns)} failed {failed} refused {refused} pending {len(pending)}",
          flush=True)
    hold()


def hold():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
