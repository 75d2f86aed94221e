"""The `pystack` command line: wrong arguments and missing privileges give one line and a
non-zero exit, never a traceback; `status` text layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import require

from pystack import cli
from pystack.iface.interface import Interface, InterfaceConfig
from pystack.phy.pipe import Pipe
from pystack.runtime.control import ControlServer
from pystack.runtime.loop import Loop

ROOT = Path(__file__).resolve().parents[2]
RUN_S = 30


def run_main(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str, *needles: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("pystack"), lines[0]
    assert "error:" in lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("argv, needle", [
    ([], "a command is needed"),
    (["bogus"], "invalid choice"),
    (["up", "--ip", "10.77.0.2"], "needs a prefix length"),
    (["up", "--ip", "10.77.0/24"], "is not an IPv4 address"),
    (["up", "--ip", "10.77.0.0/24"], "network address"),
    (["up", "--ip", "10.77.0.255/24"], "broadcast address"),
    (["up", "--ip", "224.0.0.1/24"], "cannot be a host"),
    (["up", "--host-ip", "10.77.0.2/24"], "the stack's own address"),
    (["up", "--gateway", "10.1.2.3"], "not on-link"),
    (["up", "--gateway", "10.77.0.2"], "the stack's own address"),
    (["up", "--gateway", "nope"], "is not an IPv4 address"),
    (["up", "--mtu", "67"], "68..65535"),
    (["up", "--mtu", "big"], "must be an integer"),
    (["up", "--udp-echo", "0"], "1..65535"),
    (["up", "--tap", "a" * 16], "invalid interface name"),
    (["up", "--tap", "a/b"], "invalid interface name"),
    (["up", "--netns", "a/b"], "invalid network namespace name"),
    (["up", "--netns", "x", "--no-netns"], "not allowed with"),
    (["up", "--mac", "01:00:5e:00:00:01"], "group"),
    (["up", "--mac", "zz"], "is not a MAC"),
    (["up", "--impair", "loss=2"], "probability"),
    (["up", "--impair", "nope=1"], "unknown impairment key"),
    (["up", "--log-level", "loud"], "invalid choice"),
    (["up", "--unknown"], "unrecognized arguments"),
    (["status", "--timeout", "soon"], "invalid float"),
])
def test_wrong_arguments_are_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert out == ""
    assert_one_line(err, needle)


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["up", "--help"])
    assert info.value.code == 0
    assert "--impair" in capsys.readouterr().out


def test_status_without_a_daemon_is_one_line_exit_1(capsys, tmp_path):
    code, out, err = run_main(capsys, "status", "--control", str(tmp_path / "none.sock"))
    assert code == 1
    assert_one_line(err, "no pystack daemon answers")


def test_python_dash_m_pystack_is_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "pystack", "up", "--ip", "bad"], cwd=ROOT,
                          capture_output=True, text=True, timeout=RUN_S)
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "argument --ip")


def test_default_host_ip_in_a_namespace_of_our_own():
    args = cli.build_parser().parse_args(["up", "--netns", "x", "--ip", "10.9.0.5/24"])
    cfg = cli._daemon_config(args)
    assert cfg.host_ip == ("10.9.0.1", 24)
    args = cli.build_parser().parse_args(["up", "--netns", "x", "--ip", "10.9.0.1/24"])
    assert cli._daemon_config(args).host_ip == ("10.9.0.2", 24)
    args = cli.build_parser().parse_args(["up", "--ip", "10.9.0.5/24"])
    assert cli._daemon_config(args).host_ip is None  # never an address in a namespace we did not make


# -- missing privileges: run as nobody -------------------------------------------------------

def _as_nobody(*argv: str) -> subprocess.CompletedProcess:
    require((os.geteuid() != 0 or shutil.which("setpriv") is None) and "needs root and setpriv to drop to nobody")
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all",
           sys.executable, "-m", "pystack", *argv]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=RUN_S,
                          env={**os.environ, "HOME": "/nonexistent"})


@pytest.fixture
def public_dir():
    """A temporary directory nobody may enter (pytest's tmp_path is root's only)."""
    path = tempfile.mkdtemp(prefix="pystack-cli-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_up_as_nobody_is_a_one_line_privilege_error(public_dir):
    # No namespace: it would try the current one's TAP and must be refused by the kernel.
    proc = _as_nobody("up", "--tap", "pstnobody0", "--control", os.path.join(public_dir, "ctl.sock"))
    assert proc.returncode == 1, proc.stderr
    assert_one_line(proc.stderr, "permission denied")
    assert not os.path.exists(os.path.join(public_dir, "ctl.sock"))


def test_up_in_a_namespace_as_nobody_is_a_one_line_privilege_error(public_dir):
    proc = _as_nobody("up", "--netns", "pystack-nobody-test", "--control", os.path.join(public_dir, "c.sock"))
    assert proc.returncode == 1, proc.stderr
    assert_one_line(proc.stderr, "needs root")
    assert not os.path.exists("/run/netns/pystack-nobody-test")


def test_status_as_nobody_on_roots_socket_is_a_one_line_error(public_dir):
    path = os.path.join(public_dir, "root.sock")
    with Loop(Pipe().b, _Idle()) as loop:
        server = ControlServer(path, loop, {"status": lambda: {}})
        try:
            proc = _as_nobody("status", "--control", path)
        finally:
            server.close()
    assert proc.returncode == 1
    assert_one_line(proc.stderr, "permission denied")


class _Idle:
    def receive(self, frame, now): pass
    def poll(self, now): return []
    def poll_at(self): return None


# -- status text -----------------------------------------------------------------------------

def _status() -> dict:
    iface = Interface(InterfaceConfig(mac=bytes.fromhex("025000000002"), ip=0x0A4D0002, prefix_len=24))
    sock = iface.udp.socket()
    sock.bind(("", 7))
    iface.stats.incr("ipv4.rx", 12)
    iface.stats.incr("ipv4.bad_checksum", 3)
    iface.neighbors.add_static(0x0A4D0001, bytes.fromhex("02aabbccddee"))
    st = iface.status()
    st["daemon"] = {"pid": 1234, "tap": "pst0", "netns": "ns1", "uptime_s": 2.5, "implementation": "c"}
    st["device"] = {"name": "pst0", "mtu": 1500, "batch": 64, "truncated": 0, "pcap": None}
    st["faults"] = {"seed": 7, "rx": {"seen": 10, "dropped_loss": 1}, "tx": {"seen": 9}}
    st["runtime"] = {"iterations": 5, "rx_frames": 10}
    return json.loads(json.dumps(st))  # what the client sees


def test_status_text_reads_like_netstat_s():
    text = cli.format_status(_status())
    lines = text.splitlines()
    assert lines[0].startswith("pystack 10.77.0.2/24 on pst0 in namespace ns1: pid 1234")
    assert "Ip:" in lines
    ip = lines.index("Ip:")
    block = lines[ip + 1:lines.index("Reassembly:")]
    assert "    12 rx" in block
    assert "     3 bad checksum" in block  # every drop reason, aligned
    assert "     0 bad ihl" in block
    for title in ("Ethernet:", "Arp:", "Icmp:", "Udp:", "Device:", "Faults (seed 7):", "Runtime:",
                  "ARP table:", "Sockets:"):
        assert title in lines, title
    arp = lines[lines.index("ARP table:") + 1:lines.index("Sockets:")]
    assert arp[0].split() == ["Address", "HWaddress", "State", "Expires"]
    assert arp[1].split() == ["10.77.0.1", "02:aa:bb:cc:dd:ee", "permanent", "never"]
    socks = lines[lines.index("Sockets:") + 1:]
    assert socks[0].split() == ["Proto", "Local", "Remote", "Rx-Queue", "Tx-Queue", "Drops"]
    assert socks[1].split() == ["udp", "0.0.0.0:7", "*:*", "0", "0", "0"]


def test_status_text_of_an_empty_status_does_not_fail():
    text = cli.format_status({})
    assert "ARP table:\n    (empty)" in text
    assert "Sockets:\n    (none)" in text


# -- TCP services, send/recv, and the TCP part of status (issue 4) -----------------------------

def test_tcp_services_are_one_command_line(tmp_path):
    args = cli.build_parser().parse_args(
        ["up", "--netns", "pst", "--ip", "10.77.0.2/24", "--tcp-echo", "7", "--tcp-discard", "9",
         "--tcp-source", "19:64KiB", "--tcp-source", "20", "--tcp-source", f"21:{tmp_path}/f.bin",
         "--tcp-sink", "5001", "--tcp-sink", f"5002:{tmp_path}", "--tcp-msl", "1", "--tcp-min-rto", "0.05"])
    cfg = cli._daemon_config(args)
    assert cfg.tcp_echo == [7] and cfg.tcp_discard == [9]
    assert cfg.tcp_source == [(19, None, 65536), (20, None, None), (21, f"{tmp_path}/f.bin", None)]
    assert cfg.tcp_sink == [(5001, None), (5002, str(tmp_path))]
    assert cfg.tcp_msl == 1_000_000 and cfg.tcp_min_rto == 50_000
    assert cfg.service_names() == ["tcp-echo:7", "tcp-discard:9", "tcp-source:19", "tcp-source:20",
                                   "tcp-source:21", "tcp-sink:5001", "tcp-sink:5002"]


@pytest.mark.parametrize("argv, needle", [
    (["up", "--tcp-echo", "0"], "1..65535"),
    (["up", "--tcp-source", "19:"], "nothing after ':'"),
    (["up", "--tcp-source", "x:1K"], "must be an integer"),
    (["up", "--tcp-sink", "70000"], "1..65535"),
    (["up", "--tcp-msl", "0"], "--tcp-msl must be in"),
    (["up", "--tcp-msl", "soon"], "number of seconds"),
    (["up", "--tcp-echo", "7", "--tcp-sink", "7"], "TCP port 7 is given twice"),
    (["send", "10.77.0.1", "5001"], "the following arguments are required: FILE"),
    (["send", "10.77.0.x", "5001", "f"], "is not an IPv4 address"),
    (["recv", "10.77.0.1", "0", "f"], "1..65535"),
    (["recv", "10.77.0.1", "5", "f", "--connect-timeout", "0"], "--connect-timeout must be in"),
    (["send", "10.77.0.1", "5", "f", "--tcp-echo", "7"], "unrecognized arguments"),
])
def test_wrong_tcp_arguments_are_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert out == ""
    assert_one_line(err, needle)


def test_send_of_a_missing_file_fails_before_any_setup(capsys, tmp_path):
    code, out, err = run_main(capsys, "send", "--tap", "pstnofile0", "10.77.0.1", "5001",
                              str(tmp_path / "missing.bin"))
    assert code == 1
    assert_one_line(err.splitlines()[-1], "No such file or directory", "missing.bin")


def test_status_text_lists_tcp_connections_like_ss():
    st = _status()
    st["tcp"] = [
        {"proto": "tcp", "state": "LISTEN", "local": "0.0.0.0:7", "remote": "*:*", "recv_q": 0, "send_q": 256,
         "syn_q": 0},
        {"proto": "tcp", "state": "ESTABLISHED", "local": "10.77.0.2:7", "remote": "10.77.0.1:40000",
         "recv_q": 5, "send_q": 1000, "srtt_us": 1250, "rttvar_us": 500, "rto_us": 200000, "cwnd": 14480,
         "ssthresh": None, "congestion": "reno", "mss": 1448, "rcv_mss": 536, "wscale": "7,7",
         "timestamps": True, "sack": True, "snd_wnd": 65536, "rcv_wnd": 262144, "retrans": 1,
         "retrans_total": 3, "bytes_sent": 10, "bytes_acked": 9, "bytes_received": 8, "segs_in": 4,
         "segs_out": 5, "orphan": False},
    ]
    st["services"] = [{"service": "tcp-echo:7", "port": 7, "accepted": 2, "active": 1, "completed": 1,
                       "failed": 0, "bytes_in": 30, "bytes_out": 30, "recent": []}]
    lines = cli.format_status(st).splitlines()
    tcp = lines[lines.index("TCP:") + 1:lines.index("Services:")]
    assert tcp[0].split() == ["State", "Recv-Q", "Send-Q", "Local", "Peer"]
    assert tcp[1].split() == ["LISTEN", "0", "256", "0.0.0.0:7", "*:*"]
    assert tcp[2].split() == ["ESTABLISHED", "5", "1000", "10.77.0.2:7", "10.77.0.1:40000"]
    detail = tcp[3].split()
    for item in ("reno", "ts", "sack", "wscale:7,7", "rto:200", "rtt:1.25/0.5", "mss:1448", "cwnd:14480",
                 "bytes_sent:10", "bytes_acked:9", "bytes_received:8", "retrans:1/3"):
        assert item in detail, item
    assert not any(d.startswith("ssthresh") for d in detail)  # still infinite: shown as ss does, not at all
    assert lines[lines.index("Services:") + 1].split()[:3] == ["tcp-echo:7:", "accepted", "2,"]
    assert "TCP:\n    (none)" in cli.format_status({})


def test_progress_is_a_log_line_when_stderr_is_not_a_terminal():
    import io

    class FakeSession:
        done = False
        bytes_in, bytes_out, seconds = 0, 5_000_000, 2.0

    stream = io.StringIO()
    progress = cli._Progress(FakeSession(), stream, "sent")
    assert progress.every == 5_000_000 and progress.poll_at() is not None
    progress._next = 0
    progress.poll()
    assert stream.getvalue() == "pystack: sent 5000000 bytes in 2.0 s (2.50 MB/s)\n"
    FakeSession.done = True
    assert progress.poll_at() is None
    progress.clear()  # nothing drawn on a terminal: nothing to clear
    assert stream.getvalue().count("\n") == 1
