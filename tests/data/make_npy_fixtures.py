#!/usr/bin/python3
"""Writes the .npy fixtures that tests/unit/test_npy.cpp reads.

Run from anywhere with Debian's Python (it has numpy):
    /usr/bin/python3 tests/data/make_npy_fixtures.py

The good fixtures hold values given by a formula of the flat index i, which
the C++ test recomputes (it never copies numbers from these files):
    f4_2x3x4.npy     float32 (2, 3, 4)   0.25 * i - 3
    i4_5.npy         int32   (5,)        3 - 7 * i
    i8_4x2.npy       int64   (4, 2)      1000000007 * i - 2**40
    f4_scalar.npy    float32 ()          3.25
    f4_empty.npy     float32 (0,)
    i8_empty_3x0.npy int64   (3, 0)
    f4_v2_3x2.npy    float32 (3, 2)      1.5 * i + 0.5, format version 2.0
    i4_v3_7.npy      int32   (7,)        i * i - 20, format version 3.0
The bad_*.npy files must each be refused with an error naming the file.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(HERE, name)


def save_version(name, a, version):
    with open(path(name), "wb") as f:
        np.lib.format.write_array(f, a, version=version)


def main():
    np.save(path("f4_2x3x4.npy"), (0.25 * np.arange(24) - 3).astype("<f4").reshape(2, 3, 4))
    np.save(path("i4_5.npy"), (3 - 7 * np.arange(5)).astype("<i4"))
    np.save(path("i8_4x2.npy"), (1000000007 * np.arange(8, dtype="<i8") - 2**40).reshape(4, 2))
    np.save(path("f4_scalar.npy"), np.array(3.25, dtype="<f4"))
    np.save(path("f4_empty.npy"), np.zeros((0,), dtype="<f4"))
    np.save(path("i8_empty_3x0.npy"), np.zeros((3, 0), dtype="<i8"))
    save_version("f4_v2_3x2.npy", (1.5 * np.arange(6) + 0.5).astype("<f4").reshape(3, 2), (2, 0))
    save_version("i4_v3_7.npy", (np.arange(7) ** 2 - 20).astype("<i4"), (3, 0))

    good = (np.arange(6) + 1).astype("<f4").reshape(2, 3)
    np.save(path("bad_big_endian.npy"), good.astype(">f4"))
    np.save(path("bad_fortran.npy"), np.asfortranarray(good))
    np.save(path("bad_float64.npy"), good.astype("<f8"))
    np.save(path("bad_int16.npy"), good.astype("<i2"))

    np.save(path("bad_magic.npy"), good)
    raw = bytearray(open(path("bad_magic.npy"), "rb").read())
    raw[1:6] = b"NUMPZ"
    open(path("bad_magic.npy"), "wb").write(bytes(raw))

    np.save(path("bad_truncated_data.npy"), good)
    raw = open(path("bad_truncated_data.npy"), "rb").read()
    open(path("bad_truncated_data.npy"), "wb").write(raw[:-3])

    # Magic, version and header length are there; the header stops early.
    np.save(path("bad_truncated_header.npy"), good)
    raw = open(path("bad_truncated_header.npy"), "rb").read()
    open(path("bad_truncated_header.npy"), "wb").write(raw[:30])

    # Sanity checks of the fixtures themselves.
    assert np.load(path("bad_fortran.npy")).flags.f_contiguous
    assert not np.load(path("bad_fortran.npy")).flags.c_contiguous


if __name__ == "__main__":
    main()
