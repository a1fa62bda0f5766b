"""Ingest validation pass (streaming MD5 + CCSDS framing and sequence counts, one read) vs ``md5sum``.

Prints ratios against a baseline measured in the same run:

The object is an EXI L0 file of interleaved filter images (three APIDs, each counting its own packets).

* local: our pass over a file on disk vs ``md5sum`` on that file (CPU cost of our checks);
* s3: our pass streaming the object from moto's S3 server (what ingest does) vs ``md5sum``
  (adds the HTTP transfer from the loopback server).

Usage: ``./sdc bench`` or ``PYTHONPATH=plugins:devtools .venv/bin/python bench/checksum_vs_md5sum.py [--mb 200]``
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tempfile
import time
from pathlib import Path

from emm_dev.embedded import EmbeddedS3
from emm_sdc.core import packets
from emm_sdc.core.checksums import CHUNK_SIZE, StreamDigest
from emm_sdc.core.storage import Storage

#: An EXI imaging sequence's filters (f437, f546, f635): one 256-row image per filter in turn, as in an L0 file.
FILTER_APIDS = (0x113, 0x114, 0x115)


def make_l0(path: Path, megabytes: int) -> int:
    """A valid EXI L0 file of about ``megabytes`` MB (random pixel payloads): three filters' images in turn,
    each APID counting its own packets (the counts wrap past 16383)."""
    import numpy as np

    rng = np.random.default_rng(0)
    ptype = packets.PACKET_TYPES[0x110]
    rows = packets.EXI_IMAGE_SIZE
    count = megabytes * 1024 * 1024 // ptype.packet_len
    with path.open("wb") as fh:
        for start in range(0, count, 4096):
            n = min(4096, count - start)
            payloads = rng.integers(0, 65535, size=(n, ptype.payload_len // 2), dtype=np.uint16).tobytes()
            step = ptype.payload_len
            out = []
            for k in range(start, start + n):
                image, row = divmod(k, rows)
                seq = image // len(FILTER_APIDS) * rows + row  # this APID's packets before this one
                payload = payloads[(k - start) * step:(k - start + 1) * step]
                out.append(packets.pack_packet(FILTER_APIDS[image % len(FILTER_APIDS)], seq, 700_000_000 + k, 0, 1,
                                               payload))
            fh.write(b"".join(out))
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
            assert not framer.sequence.report().anomalies

        def md5sum() -> None:
            subprocess.run(["md5sum", str(path)], capture_output=True, check=True)

        def md5_only() -> None:
            with path.open("rb") as fh:
                StreamDigest().consume(iter(lambda: fh.read(CHUNK_SIZE), b""))

        with path.open("rb") as fh:
            chunks = list(iter(lambda: fh.read(CHUNK_SIZE), b""))

        def checks_only() -> None:
            framer = packets.PacketFramer(allowed)
            for chunk in chunks:
                framer(chunk)
            assert not framer.finish() and not framer.sequence.report().anomalies

        base = best_of(args.repeat, md5sum)
        local = best_of(args.repeat, ours_local)
        hash_only = best_of(args.repeat, md5_only)
        checks = best_of(args.repeat, checks_only)
        chunks.clear()

        s3 = EmbeddedS3().start()
        try:
            client = s3.client()
            client.create_bucket(Bucket="bench")
            client.upload_file(str(path), "bench", "l0.bin")
            storage = Storage(client)

            def ours_s3() -> None:
                framer = packets.PacketFramer(allowed)
                d = storage.digest("bench", "l0.bin", [framer])
                assert d.md5 == expected and not framer.finish() and not framer.sequence.report().anomalies

            remote = best_of(args.repeat, ours_s3)
        finally:
            s3.stop()

    mbps = size / 1e6
    print(f"object: {mbps:.0f} MB, {count} CCSDS packets; best of {args.repeat}")
    print(f"  md5sum (baseline)                     {base:7.3f} s  {mbps / base:7.0f} MB/s  ratio 1.00")
    print(f"  our MD5 alone, local file             {hash_only:7.3f} s  {mbps / hash_only:7.0f} MB/s  "
          f"ratio {hash_only / base:.2f}")
    print(f"  packet checks alone, bytes in memory  {checks:7.3f} s  {mbps / checks:7.0f} MB/s  "
          f"ratio {checks / base:.2f}")
    print(f"  our MD5 + packet checks, local file   {local:7.3f} s  {mbps / local:7.0f} MB/s  ratio {local / base:.2f}")
    print(f"  our MD5 + checks, streamed from S3    {remote:7.3f} s  {mbps / remote:7.0f} MB/s  "
          f"ratio {remote / base:.2f}")


if __name__ == "__main__":
    main()
