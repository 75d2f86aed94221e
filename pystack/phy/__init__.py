"""Devices that move whole frames: TAP (tap, tapio), the in-memory pipe, and stackable
wrappers (fault_injector, pcap_writer, tracer), all behind the protocol in device.py."""
