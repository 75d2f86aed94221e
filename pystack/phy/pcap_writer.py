"""Recording frames to a libpcap capture file that tcpdump and Wireshark read.

:class:`PcapFile` writes the file (any caller: the runtime, tests);
:class:`PcapWriter` is the device wrapper that records every frame received
from, and every frame taken by, the device it wraps.

Format: the classic libpcap savefile, pcap-savefile(5) and
draft-ietf-opsawg-pcap ("PCAP Capture File Format"), section 4 "File Header"
and section 5 "Packet Record".  Version 2.4, magic 0xA1B2C3D4 (microsecond
timestamps), LINKTYPE_ETHERNET (1).  Fields are written little-endian on any
host, which the magic tells readers (pcap-savefile(5): a reader byte-swaps
when it reads the magic as 0xD4C3B2A1), so a file's bytes depend only on the
frames and times written.

Timestamps are ``time_origin + now`` in µs: ``now`` is the caller's clock and
``time_origin`` maps it to µs since the Unix epoch (the runtime passes the
wall-clock time at which its ``now`` was 0; a simulation may leave it 0).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import BinaryIO

from pystack.phy.device import Device, Wrapper

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1  # draft-ietf-opsawg-pcaplinktype, LINKTYPE_ETHERNET
DEFAULT_SNAPLEN = 65535

# magic, version major, minor, two reserved words (formerly thiszone and
# sigfigs; writers SHOULD write 0), snaplen, link type: 24 bytes.
_FILE_HEADER = struct.Struct("<IHHiIII")
# seconds, microseconds, captured length, original length: 16 bytes.
_RECORD_HEADER = struct.Struct("<IIII")


class PcapFile:
    """A libpcap capture being written to ``file``, a path or a binary file object.

    A path is opened (truncated) here and closed by :meth:`close`; a file
    object stays the caller's: :meth:`close` flushes it and leaves it open.
    Frames longer than ``snaplen`` are cut to it, keeping their original
    length in the record, as a capture with that snap length would.
    """

    def __init__(self, file: str | os.PathLike | BinaryIO, time_origin: int = 0,
                 snaplen: int = DEFAULT_SNAPLEN, linktype: int = LINKTYPE_ETHERNET) -> None:
        if not isinstance(time_origin, int) or time_origin < 0:
            raise ValueError(f"time_origin must be an int >= 0 (µs since the epoch), got {time_origin!r}")
        if not isinstance(snaplen, int) or not 1 <= snaplen <= 0xFFFFFFFF:
            raise ValueError(f"snaplen must be an int in 1..{0xFFFFFFFF}, got {snaplen!r}")
        if hasattr(file, "write"):
            self._file = file
            self._owned = False
        else:
            self._file = open(file, "wb")
            self._owned = True
        self.time_origin = time_origin
        self.snaplen = snaplen
        self.linktype = linktype
        self.records = 0
        self.closed = False
        major, minor = PCAP_VERSION
        self._file.write(_FILE_HEADER.pack(PCAP_MAGIC_US, major, minor, 0, 0, snaplen, linktype))

    def write(self, frame, now: int) -> None:
        """Append one record: ``frame`` (bytes-like) seen at ``now``."""
        if self.closed:
            raise ValueError("write to closed PcapFile")
        ts = self.time_origin + now
        if ts < 0:
            raise ValueError(f"timestamp before the epoch: time_origin {self.time_origin} + now {now}")
        length = len(frame)
        caplen = min(length, self.snaplen)
        seconds, micros = divmod(ts, 1_000_000)
        self._file.write(_RECORD_HEADER.pack(seconds, micros, caplen, length))
        self._file.write(frame if caplen == length else memoryview(frame)[:caplen])
        self.records += 1

    def write_all(self, frames: Sequence, now: int) -> None:
        """Append one record per frame, all at ``now``."""
        for frame in frames:
            self.write(frame, now)

    def flush(self) -> None:
        if not self.closed:
            self._file.flush()

    def close(self) -> None:
        """Flush; close the file if it was opened here.  Calling it twice is harmless."""
        if self.closed:
            return
        self.closed = True
        if self._owned:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self) -> "PcapFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PcapWriter(Wrapper):
    """Records every frame crossing ``inner``, in both directions, to a capture.

    ``file`` is a path, a binary file object, or an open :class:`PcapFile`
    (to record several devices, such as both ends of a pipe, in one
    capture; that file then stays open when this device closes).  A
    transmitted frame is recorded only once ``inner`` takes it: the frames
    refused stay with the caller, who will offer them again.
    """

    def __init__(self, inner: Device, file, time_origin: int = 0, snaplen: int = DEFAULT_SNAPLEN) -> None:
        super().__init__(inner)
        if isinstance(file, PcapFile):
            self.pcap = file
            self._owns_pcap = False
        else:
            self.pcap = PcapFile(file, time_origin=time_origin, snaplen=snaplen)
            self._owns_pcap = True

    def receive(self, now: int) -> list:
        frames = self.inner.receive(now)
        write = self.pcap.write
        for frame in frames:
            write(frame, now)
        return frames

    def transmit(self, frames: Sequence, now: int) -> int:
        taken = self.inner.transmit(frames, now)
        write = self.pcap.write
        for i in range(taken):
            write(frames[i], now)
        return taken

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self._owns_pcap:
                self.pcap.close()
            else:
                self.pcap.flush()
