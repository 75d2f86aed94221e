"""The UDP echo service (RFC 862 "Echo Protocol", UDP based): every datagram goes back to its sender.

Owns nothing but the loop over one socket the caller created and bound
(RFC 862 names port 7, :data:`ECHO_PORT`; the daemon may choose another).
The runtime calls :meth:`UdpEchoService.poll` after each batch; the replies
leave in the interface's next ``poll(now)``.
"""

from __future__ import annotations

from pystack.transport.udp import UdpSocket

#: RFC 862: "A server listens for UDP datagrams on UDP port 7."
ECHO_PORT = 7


class UdpEchoService:
    """Echo every datagram waiting on ``socket`` back to its sender.

    ``echoed`` counts the replies queued, ``dropped`` the datagrams that
    could not be echoed (the socket's send queue was full, or the sender is
    unreachable); RFC 862 promises nothing more.
    """

    def __init__(self, socket: UdpSocket) -> None:
        if not isinstance(socket, UdpSocket):
            raise TypeError(f"UdpEchoService needs a pystack UdpSocket, not {type(socket).__name__}")
        self.socket = socket
        self.echoed = 0
        self.dropped = 0

    def poll(self) -> int:
        """Echo what is waiting now; returns how many datagrams were echoed."""
        sock = self.socket
        n = 0
        while sock.readable and not sock.closed:
            try:
                data, addr = sock.recvfrom(65535)
            except OSError:  # an error recorded by ICMP: consumed by raising, nothing to echo
                continue
            try:
                sock.sendto(data, addr)
            except OSError:  # EAGAIN (send queue full), ENETUNREACH...: the datagram is lost
                self.dropped += 1
                continue
            n += 1
        self.echoed += n
        return n
