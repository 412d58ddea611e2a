"""Tars that lie about their size: a sparse member declares a large real size with one
block of data, so a reader that trusts it writes that many bytes from a tiny archive."""

from __future__ import annotations

import io
import tarfile


def sparse_bomb(name: str = "bomb", real_size: int = 64 << 20, *, pax: bool = False) -> bytes:
    """A tar of one sparse member ``name``: 512 bytes of data, ``real_size`` once expanded.

    ``pax``: the PAX (GNU.sparse 0.1) form; else the old GNU ``S`` header.
    """
    buffer = io.BytesIO()
    info = tarfile.TarInfo(name)
    info.size = 512
    if pax:
        info.pax_headers = {
            "GNU.sparse.major": "0",
            "GNU.sparse.minor": "1",
            "GNU.sparse.name": name,
            "GNU.sparse.realsize": str(real_size),
            "GNU.sparse.map": "0,512",
        }
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info, io.BytesIO(b"a" * 512))
        return buffer.getvalue()
    info.type = tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))[:512]

    def number(value: int) -> bytes:
        return tarfile.itn(value, 12, tarfile.GNU_FORMAT)

    header[386:398], header[398:410] = number(0), number(512)  # one extent: offset, size
    header[483:495] = number(real_size)  # the real (expanded) size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + b"a" * 512 + bytes(1024)
