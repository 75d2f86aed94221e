"""Wire formats: bytes <-> values for Ethernet, ARP, IPv4, ICMPv4, UDP and TCP."""
