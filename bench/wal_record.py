"""The cost of writing and reading one Raft entry in the log, in the current binary
record against the JSON-with-base64 record it replaced (kept here only to compare).
Every server writes every entry once, so this is paid three times per write.

Measures and reports; never fails. Usage: python bench/wal_record.py
"""

from __future__ import annotations

import base64
import json
import timeit
import zlib

from meshlet.raft.wal import HEADER, LogRecord, decode_payload, encode_record

DATA = json.dumps({"type": "kv_put", "key": "bench/12/34",
                   "value": base64.b64encode(b"v" * 64).decode(), "cas": None}).encode()
N = 100_000


def json_record() -> bytes:
    payload = json.dumps({"index": 5, "cmd": {
        "op": "entry", "term": 3, "index": 77, "kind": 0,
        "data": base64.b64encode(DATA).decode()}}, separators=(",", ":")).encode()
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def json_read(payload: bytes) -> bytes:
    return base64.b64decode(json.loads(payload)["cmd"]["data"])


def main() -> None:
    record = LogRecord(5, {"op": "entry", "term": 3, "index": 77, "kind": 0, "raw": DATA})
    binary, old = encode_record(record), json_record()
    rows = [
        ("write", timeit.timeit(lambda: encode_record(record), number=N),
         timeit.timeit(json_record, number=N)),
        ("read", timeit.timeit(lambda: decode_payload(binary[HEADER.size:]), number=N),
         timeit.timeit(lambda: json_read(old[HEADER.size:]), number=N)),
    ]
    print(f"one {len(DATA)}-byte entry, {N:,} times\n")
    print("| step | binary µs | JSON + base64 µs | binary / JSON |\n|---|---|---|---|")
    for step, new, was in rows:
        print(f"| {step} | {new / N * 1e6:.2f} | {was / N * 1e6:.2f} | {new / was:.2f} |")
    print(f"| bytes | {len(binary)} | {len(old)} | {len(binary) / len(old):.2f} |")


if __name__ == "__main__":
    main()
