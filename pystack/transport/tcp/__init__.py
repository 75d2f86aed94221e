"""TCP, sans-I/O (RFC 9293 with RFC 7323, RFC 2018/2883, RFC 5961, RFC 6298, RFC 5681, RFC 6528).

* :mod:`.connection` -- the TCB and the event processing of RFC 9293 §3.10;
* :mod:`.layer` -- :class:`TcpLayer`, the interface's protocol-6 handler (demux,
  listeners, RSTs for nothing, ports, counters) and :class:`TcpConfig`;
* :mod:`.socket` -- :class:`TcpSocket`, the application's end;
* :mod:`.congestion` -- the congestion-control plug-in interface and Reno/NewReno;
* :mod:`.isn` -- RFC 6528 initial sequence numbers.
"""

from pystack.transport.tcp.congestion import ALGORITHMS, CongestionControl, Reno
from pystack.transport.tcp.connection import State, TcpConnection
from pystack.transport.tcp.isn import IsnGenerator
from pystack.transport.tcp.layer import TcpConfig, TcpLayer
from pystack.transport.tcp.socket import SHUT_RD, SHUT_RDWR, SHUT_WR, TcpSocket

__all__ = ["ALGORITHMS", "CongestionControl", "IsnGenerator", "Reno", "SHUT_RD", "SHUT_RDWR", "SHUT_WR",
           "State", "TcpConfig", "TcpConnection", "TcpLayer", "TcpSocket"]
