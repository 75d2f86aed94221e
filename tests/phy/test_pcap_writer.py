"""PcapFile / PcapWriter, checked with a small independent reader and, when installed, tshark."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from decimal import Decimal

import pytest

from conftest import require

from pystack.phy.pcap_writer import PcapFile, PcapWriter
from pystack.phy.pipe import Pipe

EPOCH_2024 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z in µs


def read_pcap(data: bytes):
    """The file header fields and the records, decoded from pcap-savefile(5) directly."""
    magic = data[:4]
    if magic == bytes.fromhex("a1b2c3d4"):
        order = ">"
    elif magic == bytes.fromhex("d4c3b2a1"):
        order = "<"
    else:
        raise AssertionError(f"not a microsecond pcap: magic {magic.hex()}")
    major, minor, zone, sigfigs, snaplen, linktype = struct.unpack_from(order + "HHiIII", data, 4)
    header = {"major": major, "minor": minor, "zone": zone, "sigfigs": sigfigs,
              "snaplen": snaplen, "linktype": linktype}
    records, pos = [], 24
    while pos < len(data):
        sec, usec, incl, orig = struct.unpack_from(order + "IIII", data, pos)
        pos += 16
        records.append((sec * 1_000_000 + usec, orig, data[pos:pos + incl]))
        pos += incl
    assert pos == len(data), "trailing bytes after the last record"
    return header, records


def frames(n):
    return [bytes([0x02, 0, 0, 0, 0, i]) + bytes(8) + bytes([i]) * (50 + i) for i in range(n)]


def test_header_and_records_through_a_file_object():
    buf = io.BytesIO()
    pcap = PcapFile(buf, time_origin=EPOCH_2024, snaplen=1000)
    pcap.write(b"\x01" * 60, 0)
    pcap.write(bytearray(b"\x02" * 1500), 1_234_567)
    pcap.write(memoryview(b"\x03" * 64), 2_000_000)
    pcap.close()
    assert not buf.closed  # the caller's file object stays open
    header, records = read_pcap(buf.getvalue())
    assert header == {"major": 2, "minor": 4, "zone": 0, "sigfigs": 0, "snaplen": 1000, "linktype": 1}
    assert records == [
        (EPOCH_2024, 60, b"\x01" * 60),
        (EPOCH_2024 + 1_234_567, 1500, b"\x02" * 1000),  # cut to snaplen, original length kept
        (EPOCH_2024 + 2_000_000, 64, b"\x03" * 64),
    ]
    assert pcap.records == 3


def test_empty_capture_is_just_the_header(tmp_path):
    path = tmp_path / "empty.pcap"
    PcapFile(path).close()
    assert len(path.read_bytes()) == 24
    assert read_pcap(path.read_bytes())[1] == []


def test_writer_records_both_directions_in_order(tmp_path):
    path = tmp_path / "pipe.pcap"
    pipe = Pipe(latency=100)
    dev = PcapWriter(pipe.a, str(path), time_origin=EPOCH_2024)
    out, back = frames(3), frames(5)[3:]
    assert dev.transmit(out, 10) == 3
    pipe.b.transmit(back, 50)
    assert dev.receive(149) == []
    assert dev.receive(150) == back
    dev.close()
    assert pipe.a.closed
    _, records = read_pcap(path.read_bytes())
    assert records == [(EPOCH_2024 + 10, len(f), f) for f in out] + [(EPOCH_2024 + 150, len(f), f) for f in back]


def test_writer_records_only_frames_the_device_took(tmp_path):
    pipe = Pipe(capacity=2)
    buf = io.BytesIO()
    dev = PcapWriter(pipe.a, buf)
    assert dev.transmit(frames(5), 7) == 2
    dev.close()
    _, records = read_pcap(buf.getvalue())
    assert [r[2] for r in records] == frames(2)


def test_one_capture_for_both_ends(tmp_path):
    path = tmp_path / "both.pcap"
    pipe = Pipe()
    with PcapFile(path) as pcap:
        a, b = PcapWriter(pipe.a, pcap), PcapWriter(pipe.b, pcap)
        a.transmit(frames(1), 5)
        b.receive(5)
        a.close()
        b.close()
        assert not pcap.closed
    _, records = read_pcap(path.read_bytes())
    assert [(t, f) for t, _, f in records] == [(5, frames(1)[0])] * 2  # seen leaving a, arriving at b


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        PcapFile(io.BytesIO(), snaplen=0)
    with pytest.raises(ValueError):
        PcapFile(io.BytesIO(), time_origin=-1)
    pcap = PcapFile(io.BytesIO())
    with pytest.raises(ValueError, match="before the epoch"):
        pcap.write(b"x" * 60, -1)
    pcap.close()
    pcap.close()
    with pytest.raises(ValueError, match="closed"):
        pcap.write(b"x" * 60, 0)


def test_tshark_reads_the_file(tmp_path):
    require(shutil.which("tshark") is None and "tshark is not installed (ci/common.sh installs it)")
    path = tmp_path / "t.pcap"
    sent = frames(4)
    with PcapFile(path, time_origin=EPOCH_2024) as pcap:
        for i, f in enumerate(sent):
            pcap.write(f, i * 1500)
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.len", "-e", "frame.time_epoch",
         "-e", "eth.dst"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [len(f) for f in sent]
    assert [int(Decimal(r[1]) * 1_000_000) for r in rows] == [EPOCH_2024 + i * 1500 for i in range(4)]
    assert [r[2] for r in rows] == [f"02:00:00:00:00:{i:02x}" for i in range(4)]
