#!/usr/bin/env python3
"""Writes the seed corpora of the sim_flows and qemu_stream fuzz targets:
small hand-written programs (layouts in tests/fuzz_entry.rs and
driver-sim/src/fuzz.rs) that reach each kind of event at least once."""
import hashlib, os, struct

here = os.path.dirname(os.path.abspath(__file__))

def save(target, b):
    out = os.path.join(here, "corpus", target)
    os.makedirs(out, exist_ok=True)
    name = hashlib.sha1(b).hexdigest()[:16]
    open(os.path.join(out, name), "wb").write(b)

# --- sim_flows: setup, seed, peer models of ports 80..83, then ops.
SINK, ECHO, SOURCE8K, RESET4K, SLOW36, SPEAKS, REFUSE, SINK_RTT = (
    0x00, 0x01, 0x22, 0x13, 0x24, 0x45, 0x06, 0x07)
peers = [
    bytes([SINK, ECHO, SOURCE8K, RESET4K]),
    bytes([SLOW36, SPEAKS, REFUSE, SINK_RTT]),
    bytes([ECHO, SOURCE8K, SINK, SLOW36]),
]
def connect(port, n, mss=0, fin=False, v6=False):
    op = (port - 80) << 4 | (0x80 if fin else 0) | (0x40 if v6 else 0)
    return bytes([op]) + struct.pack(">H", n) + bytes([mss])
def listen(n, model, fin=False):
    return bytes([0x03 | (0x80 if fin else 0)]) + struct.pack(">H", n) + bytes([model])
def udp(length, count=1, v6=False, refused=False):
    op = 0x04 | (0x80 if v6 else 0) | (0x40 if refused else 0)
    return bytes([op]) + struct.pack(">H", length) + bytes([count - 1])
def ping(v6=False):
    return bytes([0x05 | (0x80 if v6 else 0), 7, 1, 56])
def wait(idx):
    return bytes([0x06, idx])
def pause(idx):
    return bytes([0x08 | idx << 4])
def scripted(port, segs):
    b = bytes([0x09 | (port - 80) << 4, len(segs) - 1])
    for f, flags, ln, ack in segs:
        b += bytes([f, flags, ln]) + struct.pack(">H", ack)
    return b
def raw(bs):
    return bytes([0x0a, len(bs)]) + bs
FLUSH = bytes([0x0c])

programs = [
    connect(80, 8000),
    connect(81, 3000, fin=True) + wait(6),
    connect(82, 0, fin=True) + connect(83, 20000),
    listen(4000, SOURCE8K, fin=True),
    listen(0, ECHO) + listen(6000, SINK),
    udp(100, 3) + udp(1400, 2, v6=True) + udp(10, 1, refused=True) + wait(5),
    ping() + ping(v6=True) + wait(10),
    connect(80, 20000) + pause(2) + wait(8),
    connect(82, 2000, fin=True) + pause(3) + wait(10),
    scripted(80, [(0x10, 0, 100, 1), (0x10, 1, 50, 1), (0x13, 3, 0, 1)]) + wait(4),
    scripted(81, [(0x08, 0, 80, 1), (0x10, 0, 100, 1), (0x13, 4, 0, 0)]),
    scripted(80, [(0x00, 0, 0, 1), (0x01, 0, 200, 1)]) + FLUSH + connect(80, 500),
    raw(bytes(range(60))) + bytes([0x0b]) + connect(81, 100),
    connect(80, 4000) + udp(500, 8) + ping() + connect(81, 4000, mss=2) + wait(3) + listen(2000, RESET4K),
]
for setup in (0x00, 0x02, 0x03, 0x04, 0x07, 0x20, 0x48, 0x90, 0x65, 0x83):
    for i, p in enumerate(programs):
        if (i + setup) % 3 == 0 or setup == 0:
            save("sim_flows", bytes([setup, i]) + peers[i % 3] + p)

# --- qemu_stream: sel (batch size, buffer), then records.
def frame(n):
    return bytes([0x00]) + struct.pack(">H", n - 14)
def length(v):
    return bytes([0x01]) + struct.pack(">I", v)
def rawb(bs):
    return bytes([0x02, len(bs)]) + bs
def read(cap=0):
    return bytes([0x03]) + struct.pack(">H", cap)
streams = [
    (0x00, frame(14) + frame(60) + read()),
    (0x0f, frame(1514) * 5 + read(7) + read(100) + read()),
    (0x12, frame(65535) + frame(14) + read(1) + read(65000) + read()),
    (0x21, frame(60) + length(13) + read()),
    (0x33, frame(60) + length(65536) + frame(60) + read()),
    (0x04, length(0) + read()),
    (0x25, frame(100) + length(0xffffffff) + read(3) + read()),
    (0x10, rawb(b"\x00\x00\x00\x0e" + bytes(14)) + frame(20) + read(5) + read(5) + read()),
    (0x37, frame(14) * 40 + read(18 * 7 + 3) + read()),
    (0x01, frame(9000) + read(4) + frame(30) + read(4000) + read()),
]
for sel, body in streams:
    save("qemu_stream", bytes([sel]) + body)
