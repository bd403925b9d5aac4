"""Counter-based random numbers: every value is a hash of (seed, image index, stream name, counter).

Image ``i`` therefore gets the same numbers whether it is rendered alone, in a batch, in another
order, in a DataLoader worker or on another device. All arithmetic is integer (int64 holding 32-bit
values; every product stays below 2**63), so CPU and CUDA agree exactly and no host sync is needed.
"""
from __future__ import annotations

import math
import zlib
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["hash32", "Rng", "Draws", "choice_from"]

_MASK = 0xFFFFFFFF
_MUL = 0x045D9F3B  # < 2**27, so (x < 2**32) * _MUL never overflows int64


def hash32(x: Tensor) -> Tensor:
    """A 32-bit integer hash with full avalanche (values in [0, 2**32) stored as int64)."""
    x = (((x >> 16) ^ x) * _MUL) & _MASK
    x = (((x >> 16) ^ x) * _MUL) & _MASK
    return (x >> 16) ^ x


def _stream_id(name: str) -> int:
    return zlib.crc32(name.encode("utf-8")) & _MASK


class Rng:
    """Random streams for a batch of images. ``rng.uniform("pose", (P, 40))`` -> [B, P, 40] in [0, 1).

    Every call names its stream, so adding a new random quantity never shifts the others.
    """

    def __init__(self, seed: int, image_ids: Tensor) -> None:
        ids = image_ids.to(torch.int64)
        seed_key = hash32(torch.tensor((seed & _MASK) ^ 0x3C6EF372, dtype=torch.int64)).item()
        seed_hi = hash32(torch.tensor(((seed >> 32) & _MASK) ^ 0x1B873593, dtype=torch.int64)).item()
        self.device = ids.device
        self.key = hash32(hash32(ids & _MASK) ^ seed_key) ^ hash32((ids >> 32) & _MASK ^ seed_hi)

    @property
    def batch_size(self) -> int:
        return int(self.key.shape[0])

    def bits(self, stream: str, shape: Sequence[int] = ()) -> Tensor:
        """[B, *shape] hashes in [0, 2**32)."""
        shape = tuple(int(s) for s in shape)
        n = math.prod(shape) if shape else 1
        stream_key = hash32(self.key ^ _stream_id(stream))  # [B]
        counter = hash32(torch.arange(n, device=self.device, dtype=torch.int64) + 0x2545F491)
        out = hash32(hash32(stream_key[:, None] ^ counter[None, :]))
        return out.reshape(self.batch_size, *shape)

    def uniform(self, stream: str, shape: Sequence[int] = (), low: float = 0.0, high: float = 1.0) -> Tensor:
        """[B, *shape] float32 uniform in [low, high) (24-bit resolution)."""
        u = (self.bits(stream, shape) >> 8).to(torch.float32) * (1.0 / 16777216.0)
        if low != 0.0 or high != 1.0:
            u = u * (high - low) + low
        return u

    def normal(self, stream: str, shape: Sequence[int] = ()) -> Tensor:
        """[B, *shape] approximately standard normal (Irwin-Hall of 4 uniforms: bounded at +-3.46)."""
        shape = tuple(shape)
        u = self.uniform(stream, shape + (4,))
        return (u[..., 0] + u[..., 1] + u[..., 2] + u[..., 3] - 2.0) * math.sqrt(3.0)

    def randint(self, stream: str, shape: Sequence[int], low: int, high: int) -> Tensor:
        """[B, *shape] int64 uniform in [low, high)."""
        u = self.uniform(stream, shape)
        return torch.clamp(torch.floor(u * (high - low)).to(torch.int64) + low, low, high - 1)

    def choice(self, stream: str, shape: Sequence[int], probs: Sequence[float]) -> Tensor:
        """[B, *shape] int64 index drawn with the given (unnormalized) probabilities."""
        total = float(sum(probs))
        edges, acc = [], 0.0
        for p in probs[:-1]:
            acc += p / total
            edges.append(acc)
        u = self.uniform(stream, shape)
        out = torch.zeros_like(u, dtype=torch.int64)
        for e in edges:
            out = out + (u >= e).to(torch.int64)
        return out

    def bernoulli(self, stream: str, shape: Sequence[int], p: "float | Tensor") -> Tensor:
        """[B, *shape] bool, True with probability ``p``."""
        return self.uniform(stream, shape) < p


class Draws:
    """Many named uniform draws for a batch in one hashing call.

    ``d = Draws(rng, "human", (P,), [("sex", 1), ("prop", 6), ...])`` draws every column at once;
    ``d.u("sex")`` -> [B, P], ``d.u("prop")`` -> [B, P, 6], ``d.normal("h")`` (a name declared with
    4 columns) -> approximately standard normal. Columns are fixed by the declaration order, so
    declare new names at the end to keep existing data unchanged.
    """

    def __init__(self, rng: Rng, stream: str, shape: Sequence[int], names: Sequence[tuple[str, int]]) -> None:
        self._cols: dict[str, tuple[int, int]] = {}
        start = 0
        for name, count in names:
            if name in self._cols:
                raise ValueError(f"duplicate draw name {name!r}")
            self._cols[name] = (start, count)
            start += count
        self.values = rng.uniform(stream, tuple(shape) + (start,))

    def u(self, name: str, low: float = 0.0, high: float = 1.0) -> Tensor:
        start, count = self._cols[name]
        v = self.values[..., start] if count == 1 else self.values[..., start:start + count]
        return v if (low == 0.0 and high == 1.0) else v * (high - low) + low

    def normals(self, name: str) -> Tensor:
        """[..., k] approximately standard normals from a name declared with 4k columns."""
        start, count = self._cols[name]
        v = self.values[..., start:start + count]
        v = v.reshape(*v.shape[:-1], count // 4, 4)
        return (v[..., 0] + v[..., 1] + v[..., 2] + v[..., 3] - 2.0) * math.sqrt(3.0)

    def normal(self, name: str) -> Tensor:
        """One approximately standard normal from a name declared with 4 columns."""
        return self.normals(name)[..., 0]

    def choice(self, name: str, probs: Sequence[float]) -> Tensor:
        """Index drawn with the given (unnormalized) probabilities from a 1-column name."""
        return choice_from(self.u(name), probs)

    def randint(self, name: str, low: int, high: int) -> Tensor:
        return torch.clamp(torch.floor(self.u(name) * (high - low)).to(torch.int64) + low, low, high - 1)


def choice_from(u: Tensor, probs: Sequence[float]) -> Tensor:
    """Map uniforms to category indices with the given (unnormalized) probabilities."""
    total = float(sum(probs))
    out = torch.zeros_like(u, dtype=torch.int64)
    acc = 0.0
    for p in probs[:-1]:
        acc += p / total
        out = out + (u >= acc).to(torch.int64)
    return out
