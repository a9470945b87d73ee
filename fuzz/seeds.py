#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into corpus/<target>/.

Run from fuzz/: python3 seeds.py. Each seed is a valid (or nearly valid)
input of its target, so that fuzzing starts from inputs that reach deep
into the code; the layouts are the ones the targets document.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- api_route: method byte, path, "\n", body -------------------------------
GET, PUT, PATCH = 0, 1, 2
route = {
    "get_root": (GET, "/", ""),
    "put_drive": (PUT, "/drives/rootfs", json.dumps({
        "drive_id": "rootfs", "path_on_host": "/img/rootfs.ext4",
        "is_root_device": True, "is_read_only": False})),
    "patch_drive": (PATCH, "/drives/rootfs", '{"drive_id": "rootfs", "path_on_host": "/img/b.ext4"}'),
    "machine": (PUT, "/machine-config", '{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}'),
    "boot": (PUT, "/boot-source", '{"kernel_image_path": "/k", "boot_args": "console=ttyS0"}'),
    "net": (PUT, "/network-interfaces/eth0", '{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}'),
    "action": (PUT, "/actions", '{"action_type": "InstanceStart"}'),
    "pause": (PATCH, "/vm", '{"state": "Paused"}'),
    "vsock": (PUT, "/vsock", '{"guest_cid": 3, "uds_path": "/tmp/v.sock"}'),
    "snap_create": (PUT, "/snapshot/create", '{"snapshot_type": "Full", "snapshot_path": "/s", "mem_file_path": "/m"}'),
    "snap_load": (PUT, "/snapshot/load", '{"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}, "resume_vm": true}'),
    "metrics": (PUT, "/metrics", '{"metrics_path": "/tmp/m.json"}'),
    "logger": (PUT, "/logger", '{"log_path": "/tmp/l", "level": "Info"}'),
    "entropy": (PUT, "/entropy", "{}"),
}
for name, (m, path, body) in route.items():
    put("api_route", name, bytes([m]) + path.encode() + b"\n" + body.encode())

# ---- http_request: whole requests ------------------------------------------
def req(method, path, body="", extra=""):
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n{body}")

put("http_request", "get_root", req("GET", "/"))
put("http_request", "put_machine", req("PUT", "/machine-config", route["machine"][2],
                                       "Content-Type: application/json\r\n"))
put("http_request", "pipelined", req("GET", "/") + req("PUT", "/actions", route["action"][2]))
put("http_request", "chunked", "PUT /actions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    "10\r\n{\"action_type\": \r\n10\r\n\"FlushMetrics\"}\r\n0\r\n\r\n")
put("http_request", "keepalive_close", req("GET", "/version", extra="Connection: close\r\n"))

# ---- config_file -------------------------------------------------------------
put("config_file", "full", json.dumps({
    "boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0 reboot=k"},
    "machine-config": {"vcpu_count": 2, "mem_size_mib": 128, "smt": False, "track_dirty_pages": True},
    "drives": [
        {"drive_id": "rootfs", "path_on_host": "/img/rootfs.ext4", "is_root_device": True, "is_read_only": True},
        {"drive_id": "data", "path_on_host": "/img/data.ext4", "is_root_device": False, "is_read_only": False},
    ],
    "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}],
    "entropy": {},
    "vsock": {"guest_cid": 3, "uds_path": "/tmp/v.sock"},
    "logger": {"log_path": "/tmp/log", "level": "Debug"},
    "metrics": {"metrics_path": "/tmp/metrics"},
}, indent=1))
put("config_file", "minimal", '{"boot-source": {"kernel_image_path": "/k"}}')
put("config_file", "drive_only", json.dumps({"boot-source": {"kernel_image_path": "/k"},
    "drives": [{"drive_id": "d", "path_on_host": "/d", "is_root_device": False, "is_read_only": False,
                "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}}]}))

# ---- block_requestq / rng_requestq -----------------------------------------
# Queue layout (podvm_fuzz::queue): shape (size = 1 << (shape % 9); bit 7
# event index), desc/avail/used as u16 (x16, x2, x4 into the low region),
# next_avail, next_used. Rings in the first 1 KiB, buffers after them.
def queue_header(size_log2=4):
    return struct.pack("<BHHHHH", size_log2, 0x0000, 0x0100 // 2, 0x0200 // 4, 0, 0)


def desc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)


NEXT, WRITE = 1, 2


def memory(descs, heads, extra):
    mem = bytearray(0x1000)
    for i, d in enumerate(descs):
        mem[i * 16:i * 16 + 16] = d
    avail = struct.pack("<HH", 0, len(heads)) + b"".join(struct.pack("<H", h) for h in heads)
    mem[0x100:0x100 + len(avail)] = avail
    for at, b in extra:
        mem[at:at + len(b)] = b
    return bytes(mem)


def blk_hdr(t, sector):
    return struct.pack("<IIQ", t, 0, sector)


blk = {
    "read": ([desc(0x300, 16, NEXT, 1), desc(0x400, 512, NEXT | WRITE, 2), desc(0x600, 1, WRITE, 0)],
             [0], [(0x300, blk_hdr(0, 3))]),
    "write": ([desc(0x300, 16, NEXT, 1), desc(0x400, 512, NEXT, 2), desc(0x600, 1, WRITE, 0)],
              [0], [(0x300, blk_hdr(1, 5)), (0x400, bytes(range(256)) * 2)]),
    "flush_and_id": ([desc(0x300, 16, NEXT, 1), desc(0x600, 1, WRITE, 0),
                      desc(0x310, 16, NEXT, 3), desc(0x400, 20, NEXT | WRITE, 4), desc(0x601, 1, WRITE, 0)],
                     [0, 2], [(0x300, blk_hdr(4, 0)), (0x310, blk_hdr(8, 0))]),
    "split_header": ([desc(0x300, 8, NEXT, 1), desc(0x308, 8, NEXT, 2), desc(0x400, 1024, NEXT | WRITE, 3),
                      desc(0x800, 1, WRITE, 0)], [0], [(0x300, blk_hdr(0, 60))]),
}
for name, (descs, heads, extra) in blk.items():
    for flags, suffix in [(0, ""), (2, "_file"), (1, "_ro")]:
        put("block_requestq", name + suffix, bytes([flags]) + queue_header() + memory(descs, heads, extra))

rng = {
    "one": ([desc(0x400, 64, WRITE, 0)], [0], []),
    "two": ([desc(0x400, 64, WRITE, 0), desc(0x500, 16, NEXT | WRITE, 2), desc(0x600, 16, WRITE, 0)], [0, 1], []),
}
for name, (descs, heads, extra) in rng.items():
    put("rng_requestq", name, bytes([0]) + queue_header() + memory(descs, heads, extra))

# ---- mmio_transport: device byte, then ops ----------------------------------
def w32(off, v):
    return struct.pack("<BHQ", 1 | (2 << 1), off, v)


def r32(off):
    return struct.pack("<BH", 2 << 1, off)


def setup(qnum=16):
    return b"".join([
        w32(0x70, 1), w32(0x70, 3), w32(0x14, 1), r32(0x10), w32(0x24, 1), w32(0x20, 1),
        w32(0x24, 0), w32(0x20, 0x200), w32(0x70, 0xb), r32(0x70), w32(0x30, 0), r32(0x34),
        w32(0x38, qnum), w32(0x80, 0x1000), w32(0x84, 0), w32(0x90, 0x2000), w32(0xa0, 0x3000),
        w32(0x44, 1), w32(0x70, 0xf), r32(0x70), r32(0xfc), r32(0x100), w32(0x50, 0), r32(0x60),
        w32(0x64, 1),
    ])


put("mmio_transport", "block_setup", bytes([0]) + setup())
put("mmio_transport", "block_ro_setup_reset", bytes([1]) + setup() + w32(0x70, 0) + setup(8))
put("mmio_transport", "rng_setup", bytes([2]) + setup())
put("mmio_transport", "bad_queue", bytes([0]) + setup(3))

# ---- snapshot_state: mode byte, then a state file or a payload ---------------
# snapshot_payload.json is the payload of a real snapshot (a paused
# virtio_blk guest with a drive and the entropy device, taken with
# PUT /snapshot/create); paths in it are the ones of that run.
def crc64_xz(data, crc=0xFFFFFFFFFFFFFFFF):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xC96C5795D7870F42 if crc & 1 else 0)
    return crc


def state_file(payload, vendor=b"GenuineIntel", digest=0x0123456789ABCDEF):
    head = b"PODVMSNP" + struct.pack("<I", 1) + vendor + b"0.1.0".ljust(32, b"\0")
    head += struct.pack("<QQ", digest, len(payload))
    return head + struct.pack("<Q", crc64_xz(head + payload) ^ 0xFFFFFFFFFFFFFFFF) + payload


with open(os.path.join(HERE, "snapshot_payload.json"), "rb") as f:
    payload = f.read()
put("snapshot_state", "payload", b"\x01" + payload)
put("snapshot_state", "whole_file", b"\x00" + state_file(payload))
put("snapshot_state", "other_vendor", b"\x00" + state_file(payload, vendor=b"AuthenticAMD"))
put("snapshot_state", "truncated", b"\x00" + state_file(payload)[:100])
