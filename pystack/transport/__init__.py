"""Sans-I/O sockets: UDP (udp.py) and TCP (tcp/), the application side of the stack.

Named ``transport`` rather than the ``socket/`` of ARCHITECTURE.md (decision):
``pystack.socket`` is the public module that mirrors Python's ``socket``
(see pystack/socket.py), which applications import; the sans-I/O layer
below it keeps the transport-layer name.
"""
