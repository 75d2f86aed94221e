"""Buffers: the TCP reassembly buffer (assembler) and friends."""
