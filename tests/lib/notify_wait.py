#!/usr/bin/env python3
"""sd_notify listener for the test harness.

Usage: notify_wait.py SOCKET_PATH

Binds a unix datagram socket at SOCKET_PATH (the daemon's NOTIFY_SOCKET), prints
"LISTENING" once bound, then prints every assignment of every datagram it receives on its
own line ("READY=1", "STATUS=...", "RELOADING=1", ...), flushing after each. Runs until
killed (SIGTERM). The harness reads the lines from a fifo, so
waiting for READY=1 is waiting for an event, not polling.
"""
import os
import signal
import socket
import sys


def main():
    if len(sys.argv) != 2:
        print("usage: notify_wait.py SOCKET_PATH", file=sys.stderr)
        return 2
    path = sys.argv[1]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    out = sys.stdout
    out.write("LISTENING\n")
    out.flush()
    while True:
        data = s.recv(65536)
        for line in data.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if line:
                out.write(line + "\n")
        out.flush()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(0)
