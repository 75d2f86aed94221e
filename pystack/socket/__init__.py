"""The transport state machines, sans-I/O: UDP sockets now (:mod:`pystack.socket.udp`), TCP next.

A transport plugs into :class:`pystack.iface.interface.Interface` as the
handler of its IP protocol number (``Interface.register``) and talks to the
layer below only through the interface object it is handed; nothing here
imports ``iface/`` (the arrows go runtime -> iface -> socket -> wire), reads a
clock or touches a file descriptor.  The application side of a socket never
needs ``now``: it queues and dequeues, and the interface moves the bytes in
``poll(now)``.
"""
