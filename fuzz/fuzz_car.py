"""atheris target: the streaming CAR reader (daemon.car.read), fed in uneven pieces."""
import asyncio

import atheris
from _harness import fuzz, vectors

with atheris.instrument_imports():
    from daemon import car
    from daemon.blocks import Block, FormatError
    from daemon.cid import Cid


def parse(data: bytes) -> None:
    step = 1 + (data[0] % 97 if data else 0)

    async def source():
        for i in range(0, len(data), step):
            yield data[i:i + step]

    async def run():
        _, blocks = await car.read(source())
        async for block in blocks:
            assert block.cid.matches(block.data)

    asyncio.run(run())


def seeds():
    v = vectors()
    blocks = [Block(Cid.parse(c["cid"]), bytes.fromhex(c["hex"])) for c in (*v["chunks"], v["manifest"], v["envelope"])]
    yield car.header([blocks[-1].cid]) + b"".join(car.frame(b) for b in blocks)


if __name__ == "__main__":
    fuzz("car", parse, (FormatError,), seeds())
