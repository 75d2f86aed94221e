"""Demultiplexing: ARP/neighbour cache, IPv4 routing and reassembly, ICMP, which socket gets what."""
