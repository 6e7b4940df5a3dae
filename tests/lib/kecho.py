# Kernel-side UDP echo server for integration tests: python3 kecho.py PORT.
# Prints READY once bound; echoes every datagram to its sender. The receive buffer is
# forced large (SO_RCVBUFFORCE, root) so bursts from many clients are not dropped here.
import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
s.bind(("0.0.0.0", int(sys.argv[1])))
print("READY", flush=True)
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
