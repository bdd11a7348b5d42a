#!/usr/bin/env python3
"""Writes the seed corpus of the tap_batch fuzz target from the reference
captures: each capture's guest frames as one batch under several
configurations, each guest frame alone, and hostile variants of each frame
(truncated at every layer boundary, lengths rewritten, bytes flipped)."""
import hashlib, os, struct, sys

here = os.path.dirname(os.path.abspath(__file__))
caps = os.path.join(here, "..", "tests", "captures")
out = os.path.join(here, "corpus", "tap_batch")
os.makedirs(out, exist_ok=True)

def frames(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic in (0xa1b2c3d4, 0xa1b23c4d) else ">"
    off, res = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(end + "IIII", data[off:off + 16])
        res.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return res

def encode(sel, fs):
    b = bytes([sel])
    for i, f in enumerate(fs):
        f = f[:0x7fff]
        hi = len(f) >> 8
        if i == len(fs) - 1:
            hi |= 0x80
        b += bytes([hi, len(f) & 0xff]) + f
    return b

def save(b):
    name = hashlib.sha1(b).hexdigest()[:16]
    open(os.path.join(out, name), "wb").write(b)

for name in sorted(os.listdir(caps)):
    if not name.endswith(".pcap") or "stall" in name:
        continue
    fs = frames(os.path.join(caps, name))
    if not fs:
        continue
    guest = [f for f in fs if f[6:12] == fs[0][6:12]]
    for sel in (0x00, 0x01, 0x02, 0x3c, 0x80):
        save(encode(sel, guest[:20]))
    for f in guest[:6]:
        save(encode(0, [f]))
        for cut in (13, 14, 20, 33, 34, 41, 42, 53, 54, 61, 62, len(f) - 1):
            if 0 < cut < len(f):
                save(encode(0, [f[:cut]]))
        for pos, val in ((14, 0x4f), (16, 0xff), (18, 0xff), (20, 0x20), (20, 44), (38, 0xff), (40, 0x00), (59, 0xff)):
            if pos < len(f):
                g = bytearray(f)
                g[pos] = val
                save(encode(0, [bytes(g)]))
print(len(os.listdir(out)), "corpus files")
