"""Devices that move whole frames: TAP, and (later) pipe, fault injector, pcap, tracer."""
