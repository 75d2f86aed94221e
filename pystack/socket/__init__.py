"""Sans-I/O sockets: UDP (udp.py) and TCP (tcp/), the application side of the stack."""
