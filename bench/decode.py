"""Decode cost per delivery, for each inbound format (the decoders sit on the ingest hot path).

Typical deliveries are built with the test payload builders; each is decoded in a tight loop and the
best of several rounds is reported in microseconds per delivery. The clock is this process's CPU time,
so other load on the machine counts less; orjson.loads alone on the same body is shown as a yardstick.

    python bench/decode.py [--rounds 5] [--number 2000]
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys
import time
import timeit

import orjson

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from glue import formats
from tests.formats import payloads as p

CASES = {
    "harbor default (push)": p.delivery("harbor", p.harbor_default(), p.HARBOR_JSON),
    "harbor cloudevents (push)": p.delivery("harbor", p.harbor_ce(), p.HARBOR_CE_JSON),
    "gitlab push": p.delivery("gitlab", p.gitlab_push(), p.gitlab_headers()),
    "gitlab merge request": p.delivery(
        "gitlab", p.gitlab_merge_request(), p.gitlab_headers("Merge Request Hook")
    ),
    "minio webhook (put)": p.delivery(
        "minio", p.minio_envelope(p.minio_record()), {"content-type": "application/json"}
    ),
    "minio listen line": p.delivery(
        "minio", p.minio_listen_line(p.minio_record(escaped=False)), {}, transport="minio-listen"
    ),
    "argo plain json": p.delivery("argo", {"model": "llama-3-8b", "replicas": "2"}, {}),
    "cloudevents binary": p.delivery("cloudevents", {"model": "llama-3-8b"}, p.ce_binary_headers()),
    "cloudevents structured": p.delivery(
        "cloudevents", p.ce_structured(), {"content-type": "application/cloudevents+json"}
    ),
}
ARGO = formats.Options(type="org.example.argo", source="argo/sensor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    for name, delivery in CASES.items():
        options = ARGO if delivery.format == "argo" else formats.Options()
        formats.decode(delivery, options)  # warm up, and fail loudly on a broken case
        best = min(
            timeit.repeat(
                functools.partial(formats.decode, delivery, options),
                number=args.number,
                repeat=args.rounds,
                timer=time.process_time,
            )
        )
        parse = min(
            timeit.repeat(
                functools.partial(orjson.loads, delivery.body),
                number=args.number,
                repeat=args.rounds,
                timer=time.process_time,
            )
        )
        print(
            f"{name:28s} {len(delivery.body):6d} B  {best / args.number * 1e6:7.1f} us/delivery  "
            f"(orjson.loads alone {parse / args.number * 1e6:5.1f} us, x{best / parse:.1f})"
        )


if __name__ == "__main__":
    main()
