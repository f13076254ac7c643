"""Write seed corpora for the fuzz targets from the request corpus in tests/requests.

Each seed starts with the three control bytes the targets read (split point as little-endian u16, then the
limits/limit selector byte, here 0), followed by the request (`request_head`) or, for requests whose head names
`chunked`, the raw body after the blank line (`chunked_body`). Run from the repository root:
`python3 fuzz/seed_corpus.py`.
"""

from __future__ import annotations

import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = ROOT / 'tests' / 'requests'
CORPUS = ROOT / 'fuzz' / 'corpus'


def seed(data: bytes) -> bytes:
    """`data` behind a control header that splits it in the middle and keeps the default limits."""
    return struct.pack('<HB', (len(data) // 2) & 0xFFFF, 0) + data


def main() -> None:
    """Write fuzz/corpus/request_head/* and fuzz/corpus/chunked_body/*."""
    heads = CORPUS / 'request_head'
    bodies = CORPUS / 'chunked_body'
    heads.mkdir(parents=True, exist_ok=True)
    bodies.mkdir(parents=True, exist_ok=True)
    for path in sorted(REQUESTS.glob('*/*.http')):
        data = path.read_bytes()
        name = f'{path.parent.name}-{path.stem}'
        (heads / name).write_bytes(seed(data))
        head, blank, body = data.partition(b'\r\n\r\n')
        if blank and b'chunked' in head.lower():
            (bodies / name).write_bytes(seed(body))


if __name__ == '__main__':
    main()
