"""The shared part of every atheris target in this folder (`make fuzz`).

A target names the exceptions its parser documents; anything else escaping
is a crash that libFuzzer reports with the input that caused it. Seed inputs
(valid objects from the format vectors) are written into the corpus folder on
the first run, so mutation starts from well-formed data rather than noise.
"""
from __future__ import annotations

import os
import sys

import atheris

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


def fuzz(name: str, parse, allowed: tuple[type[BaseException], ...], seeds=()) -> None:
    """Runs libFuzzer on ``parse(data: bytes)``; ``allowed`` are its documented refusals."""
    corpus = os.path.join(ROOT, "fuzz", "corpus", name)
    os.makedirs(corpus, exist_ok=True)
    for i, seed in enumerate(seeds):
        path = os.path.join(corpus, f"seed-{i}")
        if not os.path.exists(path):
            with open(path, "wb") as handle:
                handle.write(seed)

    def one_input(data: bytes) -> None:
        try:
            parse(data)
        except allowed:
            pass

    args = [sys.argv[0], corpus, *sys.argv[1:]]
    atheris.Setup(args, one_input)
    atheris.Fuzz()


def vectors() -> dict:
    import json
    with open(os.path.join(ROOT, "docs", "vectors", "format-v1.json")) as handle:
        return json.load(handle)
