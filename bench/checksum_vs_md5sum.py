"""Ingest validation pass (streaming MD5 + CCSDS framing, one read) vs ``md5sum`` on the same bytes.

Prints ratios against a baseline measured in the same run:

* local: our pass over a file on disk vs ``md5sum`` on that file (CPU cost of our checks);
* s3: our pass streaming the object from moto's S3 server (what ingest does) vs ``md5sum``
  (adds the HTTP transfer from the loopback server).

Usage: ``./sdc bench`` or ``PYTHONPATH=plugins .venv/bin/python bench/checksum_vs_md5sum.py [--mb 200]``
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tempfile
import time
from pathlib import Path

from emm_sdc.core import packets
from emm_sdc.core.checksums import CHUNK_SIZE, StreamDigest
from emm_sdc.core.storage import Storage
from emm_sdc.embedded import EmbeddedS3


def make_l0(path: Path, megabytes: int) -> int:
    """A valid EXI L0 file of about ``megabytes`` MB (random pixel payloads)."""
    import numpy as np

    rng = np.random.default_rng(0)
    ptype = packets.PACKET_TYPES[0x110]
    count = megabytes * 1024 * 1024 // ptype.packet_len
    with path.open("wb") as fh:
        for start in range(0, count, 4096):
            n = min(4096, count - start)
            payloads = rng.integers(0, 65535, size=(n, ptype.payload_len // 2), dtype=np.uint16).tobytes()
            step = ptype.payload_len
            fh.write(b"".join(
                packets.pack_packet(0x110, start + i, 700_000_000 + start + i, 0, 1, payloads[i * step:(i + 1) * step])
                for i in range(n)
            ))
    return count


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "emm_exi_l0_20210524T101500_0011_xos1_n_v01-00.bin"
        count = make_l0(path, args.mb)
        size = path.stat().st_size
        allowed = packets.allowed_apids("exi", "l0")
        expected = subprocess.run(["md5sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]

        def ours_local() -> None:
            framer = packets.PacketFramer(allowed)
            with path.open("rb") as fh:
                d = StreamDigest(observers=[framer]).consume(iter(lambda: fh.read(CHUNK_SIZE), b""))
            assert d.md5 == expected and not framer.finish() and framer.packets == count

        def md5sum() -> None:
            subprocess.run(["md5sum", str(path)], capture_output=True, check=True)

        def md5_only() -> None:
            with path.open("rb") as fh:
                StreamDigest().consume(iter(lambda: fh.read(CHUNK_SIZE), b""))

        base = best_of(args.repeat, md5sum)
        local = best_of(args.repeat, ours_local)
        hash_only = best_of(args.repeat, md5_only)

        s3 = EmbeddedS3().start()
        try:
            client = s3.client()
            client.create_bucket(Bucket="bench")
            client.upload_file(str(path), "bench", "l0.bin")
            storage = Storage(client)

            def ours_s3() -> None:
                framer = packets.PacketFramer(allowed)
                d = storage.digest("bench", "l0.bin", [framer])
                assert d.md5 == expected and not framer.finish()

            remote = best_of(args.repeat, ours_s3)
        finally:
            s3.stop()

    mbps = size / 1e6
    print(f"object: {mbps:.0f} MB, {count} CCSDS packets; best of {args.repeat}")
    print(f"  md5sum (baseline)                     {base:7.3f} s  {mbps / base:7.0f} MB/s  ratio 1.00")
    print(f"  our MD5 alone, local file             {hash_only:7.3f} s  {mbps / hash_only:7.0f} MB/s  "
          f"ratio {hash_only / base:.2f}")
    print(f"  our MD5 + packet framing, local file  {local:7.3f} s  {mbps / local:7.0f} MB/s  ratio {local / base:.2f}")
    print(f"  our MD5 + framing, streamed from S3   {remote:7.3f} s  {mbps / remote:7.0f} MB/s  "
          f"ratio {remote / base:.2f}")


if __name__ == "__main__":
    main()
