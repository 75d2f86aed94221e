"""Print pytest-benchmark results as ratios, group by group.

Usage: python benchmarks/report.py out/benchmarks.json

Every figure is the median of the rounds (the machine is shared and noisy).
Within a group each benchmark is shown beside the group's fast-path entry
(``[c]``, or ``[pystack]`` where pystack stands beside the kernel), so
``py`` reads as "how many times slower the pure twin is" and a baseline
(memcpy, os.read, the kernel) as "how many times the fast path costs".
The aims of the issues are checked at the end.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _unit(seconds: float) -> str:
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if seconds >= scale:
            return f"{seconds / scale:8.2f} {unit}"
    return f"{seconds / 1e-9:8.2f} ns"


def _is_c(bench: dict) -> bool:
    """The group's reference: the fast path (id ``c``, alone or first) or pystack beside the kernel."""
    name = bench["name"]
    return name.endswith(("[c]", "[pystack]")) or "[c-" in name


def load(path: str) -> dict[str, list[dict]]:
    with open(path) as fh:
        data = json.load(fh)
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or bench["name"]].append(bench)
    return groups


def median(groups, group: str, name: str) -> float | None:
    """The median of the benchmark called exactly ``name`` in ``group``, if it ran."""
    for bench in groups.get(group, []):
        if bench["name"] == name:
            return bench["stats"]["median"]
    return None


def main(path: str) -> int:
    groups = load(path)
    for group in sorted(groups):
        benches = sorted(groups[group], key=lambda b: b["stats"]["median"])
        ref = next((b for b in benches if _is_c(b)), None)
        print(f"\n{group}")
        for b in benches:
            med = b["stats"]["median"]
            ratio = f"{med / ref['stats']['median']:9.2f} x c" if ref else ""
            print(f"  {b['name']:60s} {_unit(med)}  {ratio}")
    aims = AIMS(groups)
    if aims:
        print("\naims")
        for line in aims:
            print("  " + line)
    return 0


def AIMS(groups) -> list[str]:
    """The issue's targets, where the groups they need were run."""
    out = []

    def check(label, value, ok):
        out.append(f"{label}: {value:.2f}  {'met' if ok else 'NOT met'}")

    py = median(groups, "checksum-1500", "test_checksum_1500[py]")
    c = median(groups, "checksum-1500", "test_checksum_1500[c]")
    cp = median(groups, "checksum-1500", "test_memcpy_1500")
    if py and c:
        check("checksum 1500 B, pure / fast (aim >= 50)", py / c, py / c >= 50)
    if c and cp:
        check("checksum 1500 B, fast / memcpy (aim <= 3)", c / cp, c / cp <= 3)
    py, c = median(groups, "parse", "test_parse[py]"), median(groups, "parse", "test_parse[c]")
    if py and c:
        check("full-frame parse, pure / fast (aim >= 10)", py / c, py / c >= 10)
    single = median(groups, "tap-read-10000", "test_tap_read_os_read")
    for size in (64, 256):
        batch = median(groups, "tap-read-10000", f"test_tap_read_batch[c-{size}]")
        if batch and single:
            check(f"TAP read of 10,000 frames, os.read / batch of {size} (aim > 1)", single / batch, single > batch)
    ours, kernel = (median(groups, "iface-ping-rtt", f"test_ping_rtt[{side}]") for side in ("pystack", "kernel"))
    if ours and kernel:
        out.append(f"ping round trip: pystack {ours * 1e6:.1f} us, kernel over veth {kernel * 1e6:.1f} us, "
                   f"ratio {ours / kernel:.2f}")
    ours, kernel = (median(groups, "iface-udp-echo-1000", f"test_udp_echo_rate[{side}]")
                    for side in ("pystack", "kernel"))
    if ours and kernel:
        out.append(f"UDP echo, 1000 datagrams: pystack {1000 / ours:,.0f}/s, kernel over veth {1000 / kernel:,.0f}/s, "
                   f"ratio {kernel / ours:.2f}")
    size = 64 * 1024 * 1024
    for group, name, label in (
            ("tcp-kernel-to-pystack-64MiB", "test_tcp_kernel_to_pystack", "kernel -> pystack"),
            ("tcp-pystack-to-kernel-64MiB", "test_tcp_pystack_to_kernel", "pystack -> kernel")):
        ours, theirs = median(groups, group, f"{name}[pystack]"), median(groups, group, f"{name}[kernel]")
        if ours:
            rate = size / ours / 1e6
            check(f"TCP 64 MiB {label}, MB/s (aim >= 200)", rate, rate >= 200)
            if theirs:
                out.append(f"TCP 64 MiB {label}: pystack {rate:.1f} MB/s, kernel over veth (offloads off) "
                           f"{size / theirs / 1e6:.1f} MB/s, ratio pystack / kernel {theirs / ours:.3f}")
    pipe = median(groups, "tcp-pipe-64MiB", "test_tcp_pipe[pystack]")
    if pipe:
        out.append(f"TCP 64 MiB between two stacks over the in-memory pipe: {size / pipe / 1e6:.1f} MB/s")
    ours, kernel = (extra(groups, "idle-memory", f"test_idle_memory_{side}", "bytes_per_idle_connection")
                    for side in ("pystack", "kernel"))
    if ours is not None:
        line = f"memory per idle TCP connection: pystack daemon {ours / 1024:.2f} KiB (VmRSS growth)"
        if kernel:
            line += f", kernel {kernel / 1024:.2f} KiB (slab per socket), ratio {ours / kernel:.2f}"
        out.append(line)
    idle0, idle = (median(groups, "idle-iteration", f"test_idle_iteration[{n}]") for n in (0, 1000))
    if idle0 and idle:
        out.append(f"one loop iteration: {idle0 * 1e6:.2f} us with no connection, {idle * 1e6:.2f} us "
                   f"with 1,000 idle ones")
    return out


def extra(groups, group: str, name: str, key: str):
    """``extra_info[key]`` of the benchmark called exactly ``name`` in ``group``, if it ran."""
    for bench in groups.get(group, []):
        if bench["name"] == name:
            return bench.get("extra_info", {}).get(key)
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "out/benchmarks.json"))
