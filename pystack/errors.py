"""Errors pystack raises, split by whose fault they are.

*Peer garbage* -- a frame that cannot be trusted -- raises a subclass of
:class:`MalformedPacket`.  Its ``reason`` is a short dotted name
(``"ipv4.bad_ihl"``) that the interface uses as the counter under which it
drops the frame; the catalogue below lists every reason either
implementation (pure or Cython) can raise, so both raise the same words and
``pystack status`` can show every counter, zero or not.

MalformedPacket deliberately does *not* derive from ValueError: a bug in our
own code (an IndexError, struct.error or ValueError) must never be mistaken
for, and silently counted as, a bad packet.

*Caller misuse* of the API raises ordinary Python errors (TypeError,
ValueError) or OSError with a Linux errno, as the standard library does.
"""

from __future__ import annotations


class PystackError(Exception):
    """Base class of pystack's own errors."""


class MalformedPacket(PystackError):
    """A frame or header that fails validation.

    ``reason`` is the counter name (one of :data:`REASONS`); ``detail`` is a
    human sentence with the offending values, for logs and test failures.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)

    def __reduce__(self):
        return (self.__class__, (self.reason, self.detail))


class Truncated(MalformedPacket):
    """The buffer ends before the header or a length field says it should."""


class BadChecksum(MalformedPacket):
    """An IPv4 header, ICMP, UDP or TCP checksum does not verify."""


class BadField(MalformedPacket):
    """A field holds a value the protocol forbids (version, IHL, option length...)."""


# Every reason a parser may raise, with the class that carries it.  Keep the
# two implementations in step with this table; tests check that every raised
# reason is listed here.
REASONS: dict[str, type[MalformedPacket]] = {
    # Ethernet II
    "ethernet.truncated": Truncated,
    # ARP (RFC 826)
    "arp.truncated": Truncated,
    "arp.unsupported": BadField,  # not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4)
    "arp.bad_opcode": BadField,
    # IPv4 (RFC 791)
    "ipv4.truncated": Truncated,
    "ipv4.bad_version": BadField,
    "ipv4.bad_ihl": BadField,  # IHL < 5 or header past the end of the buffer
    "ipv4.bad_total_length": BadField,  # total length < IHL*4 or beyond the frame
    "ipv4.bad_checksum": BadChecksum,
    "ipv4.bad_option": BadField,
    # ICMPv4 (RFC 792)
    "icmp.truncated": Truncated,
    "icmp.bad_checksum": BadChecksum,
    # UDP (RFC 768)
    "udp.truncated": Truncated,
    "udp.bad_length": BadField,
    "udp.bad_checksum": BadChecksum,
    # TCP (RFC 9293)
    "tcp.truncated": Truncated,
    "tcp.bad_data_offset": BadField,  # < 5, or header past the end of the segment
    "tcp.bad_checksum": BadChecksum,
    "tcp.bad_option_length": BadField,  # RFC 9293 MUST-7
}


def malformed(reason: str, detail: str = "") -> MalformedPacket:
    """Build the right MalformedPacket subclass for ``reason``."""
    return REASONS[reason](reason, detail)
