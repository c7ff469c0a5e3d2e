"""Size buckets: how long a record's sealed stream is (format version 2).

A block holder sees every chunk's length and the chunk count, so without
padding it learns a record's exact size. Format 2 appends zero bytes to the
plaintext stream until it reaches a bucket, and seals them with the rest:
the holder learns only the bucket. The true size travels inside the signed,
encrypted metadata (``body.size``); the padded length is the manifest's clear
``padded`` field, which says nothing the chunk lengths do not.

Buckets are a config list (``pad_buckets``); a size above the largest rounds
up to a multiple of it. The default, powers of two from 1 KiB to 64 MiB,
costs at most just under 2x (a record one byte over a bucket takes the next)
and about 1.4x on average over sizes spread evenly between buckets; above
64 MiB the extra is under 64 MiB (under 1.6% of a 4 GiB record). An empty
list turns padding off (the stream is exactly the record).
"""
from __future__ import annotations

DEFAULT_BUCKETS = tuple(1 << bits for bits in range(10, 27))  # 1 KiB .. 64 MiB


def check_buckets(buckets) -> list[int]:
    """The configured buckets, or ValueError: positive integers, strictly increasing."""
    if type(buckets) is not list or any(type(b) is not int or b < 1 for b in buckets):
        raise ValueError("pad_buckets must be a list of positive integers")
    if any(a >= b for a, b in zip(buckets, buckets[1:])):
        raise ValueError("pad_buckets must be strictly increasing")
    return buckets


def padded_length(size: int, buckets) -> int:
    """The smallest bucket that holds ``size`` bytes; above the largest, the
    next multiple of it; ``size`` itself when there are no buckets."""
    if not buckets:
        return size
    for bucket in buckets:
        if size <= bucket:
            return bucket
    largest = buckets[-1]
    return -(-size // largest) * largest
