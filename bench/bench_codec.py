"""Decode throughput of stream.codec.decode_batch on typical position messages.

Prints records/s for batches of typical messages (x/y with speed and heading, as the
simulator publishes them), without optional fields, with lat/lon, and with 1% bad records.
Run: .venv/bin/python bench/bench_codec.py [--records 10000] [--repeat 7]
"""

from __future__ import annotations

import random
import time

import orjson
from _kit import parser

from trajstream.stream.codec import CodecConfig, decode_batch


def _messages(n: int, kind: str, rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    keys, values = [], []
    for i in range(n):
        vid = f"veh-{i % 500}"
        msg: dict = {"vehicle_id": vid, "ts": 1764081000.0 + i * 0.002}
        if kind == "latlon":
            msg["lat"] = 52.52 + rng.uniform(-0.01, 0.01)
            msg["lon"] = 13.40 + rng.uniform(-0.01, 0.01)
        else:
            msg["x"] = round(rng.uniform(-2000, 2000), 3)
            msg["y"] = round(rng.uniform(-2000, 2000), 3)
        if kind != "minimal":
            msg["speed"] = round(rng.uniform(0, 20), 3)
            msg["heading"] = round(rng.uniform(-3.14, 3.14), 4)
        value = orjson.dumps(msg)
        if kind == "dirty" and i % 100 == 0:
            value = [b"not json", b"[1,2]", b'{"vehicle_id": "x"}', value.replace(b'"x"', b'"q"')][
                (i // 100) % 4
            ]
        keys.append(vid.encode())
        values.append(value)
    return keys, values


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--records", type=int, default=10_000, help="records per decoded batch")
    ap.add_argument("--repeat", type=int, default=7,
                    help="timed decodes per message kind; the best is printed")
    args = ap.parse_args()
    rng = random.Random(7)
    cfg = CodecConfig(origin_lat=52.52, origin_lon=13.40)
    print(f"decode_batch, {args.records} records per batch, best of {args.repeat}")
    for kind in ("typical", "minimal", "latlon", "dirty"):
        keys, values = _messages(args.records, kind, rng)
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            batch, rejected = decode_batch(keys, values, cfg)
            best = min(best, time.perf_counter() - t0)
        size = sum(map(len, values)) / len(values)
        print(
            f"  {kind:8s} {args.records / best:>12,.0f} records/s  "
            f"({best * 1e3:6.2f} ms/batch, {size:.0f} B/msg, {len(batch)} ok, "
            f"{len(rejected)} rejected)"
        )
    # orjson.loads alone, the floor of any per-message decoder
    keys, values = _messages(args.records, "typical", rng)
    loads = orjson.loads
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for v in values:
            loads(v)
        best = min(best, time.perf_counter() - t0)
    print(f"  orjson.loads alone {args.records / best:>10,.0f} records/s")


if __name__ == "__main__":
    main()
