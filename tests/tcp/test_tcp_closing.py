"""Closing: FIN in each state, half-close, TIME-WAIT, simultaneous close, RST on unread data, abort."""

from __future__ import annotations

import pytest
from tcp_harness import ACK, FIN, PSH, RST, SEC, Peer, open_passive, options


@pytest.fixture
def c():
    return open_passive(Peer(), syn_opts=options(mss=1000))


def test_active_close_through_time_wait(c):
    c.sock.shutdown(1)
    fin = c.recv()
    assert fin.flags == FIN | ACK and c.sock.state == "FIN-WAIT-1"
    c.send(ACK, ack=fin.seq + 1)
    assert c.sock.state == "FIN-WAIT-2"
    c.send(FIN | ACK, ack=fin.seq + 1)
    ack = c.recv()
    assert ack.ack == c.snd and c.sock.state == "TIME-WAIT"
    # A retransmitted FIN is re-ACKed and restarts 2*MSL.
    c.p.advance(30 * SEC)
    c.send(FIN | ACK, seq=c.snd - 1, ack=fin.seq + 1)
    assert c.recv().ack == c.snd
    c.p.advance(59 * SEC)
    c.p.recv_nothing()
    assert c.sock.state == "TIME-WAIT"
    c.p.advance(1 * SEC)  # 2*MSL = 60 s after the last FIN
    c.p.recv_nothing()
    assert c.sock.state == "CLOSED" and c.p.tcp.connection_count == 0


def test_fin_and_ack_together_from_fin_wait_1(c):
    c.sock.shutdown(1)
    fin = c.recv()
    c.send(FIN | ACK, ack=fin.seq + 1)
    c.recv()
    assert c.sock.state == "TIME-WAIT"


def test_simultaneous_close(c):
    c.sock.shutdown(1)
    fin = c.recv()
    c.send(FIN | ACK, ack=fin.seq)  # their FIN crosses ours (MUST-10)
    assert c.sock.state == "CLOSING"
    assert c.recv().ack == c.snd
    c.send(ACK, ack=fin.seq + 1)
    assert c.sock.state == "TIME-WAIT"


def test_passive_close(c):
    c.send(FIN | ACK)
    c.recv()
    assert c.sock.state == "CLOSE-WAIT" and c.sock.recv(5) == b""
    c.sock.close()
    fin = c.recv()
    assert fin.flags == FIN | ACK and c.p.tcp.connections()[0].state.label == "LAST-ACK"
    c.send(ACK, ack=fin.seq + 1)
    assert c.p.tcp.connection_count == 0


def test_fin_after_data_waits_for_the_data(c):
    c.sock.send(b"x" * 1500)
    c.sock.shutdown(1)
    segs = c.recv(2)
    assert [len(s.data) for s in segs] == [1000, 500] and segs[1].flags == FIN | ACK | PSH


def test_fin_is_retransmitted(c):
    c.sock.shutdown(1)
    fin = c.recv()
    c.p.at(c.p.iface.poll_at())
    again = c.recv()
    assert again.flags & FIN and again.seq == fin.seq


def test_close_with_unread_data_sends_rst(c):
    c.send(ACK | PSH, b"unread")
    c.sock.close()
    rst = c.recv()
    assert rst.flags & RST and c.p.tcp.connection_count == 0
    assert c.p.tcp.stats["tcp.close_unread_rst"] == 1


def test_data_after_close_resets(c):
    c.sock.close()
    fin = c.recv()
    c.send(ACK | PSH, b"late", ack=fin.seq + 1)
    assert c.recv().flags & RST


def test_abort_sends_rst(c):
    c.sock.abort()
    rst = c.recv()
    assert rst.flags == RST | ACK and rst.seq == c.rcv
    assert c.p.tcp.connection_count == 0


def test_linger_zero_close_aborts(c):
    c.sock.setsockopt("linger", (1, 0))
    c.sock.close()
    assert c.recv().flags & RST


def test_rst_resets_the_application(c):
    c.send(RST)
    assert c.sock.state == "CLOSED"
    with pytest.raises(ConnectionResetError):
        c.sock.recv(1)
    assert c.sock.recv(1) == b""
    with pytest.raises(BrokenPipeError):
        c.sock.send(b"x")


def test_send_after_shutdown_is_epipe(c):
    c.sock.shutdown(1)
    with pytest.raises(BrokenPipeError):
        c.sock.send(b"x")


def test_orphan_fin_wait_2_times_out(c):
    c.sock.close()
    fin = c.recv()
    c.send(ACK, ack=fin.seq + 1)
    c.p.advance(60 * SEC)
    c.p.recv_all()
    assert c.p.tcp.connection_count == 0 and c.p.tcp.stats["tcp.fin_wait2_timeout"] == 1
