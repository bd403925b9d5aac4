"""Small tensor helpers that give bit-identical results wherever an element sits in a tensor.

Torch's vectorized kernels compute ``sin``/``exp``/``pow`` with SIMD approximations in the body of a
tensor and with libm in its tail, so the same number can round differently depending on the batch it
is in. The renderer promises that image ``i`` does not depend on its batch, so everything here uses
only correctly rounded operations (``+ - * /``, ``sqrt``, ``floor``, comparisons) in a fixed order:
no reductions over float dimensions, no ``matmul`` (whose blocking depends on the shape), and
polynomial ``sin``/``cos``. As a bonus the CPU and CUDA paths agree to the last bit on most pixels.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "sincos", "dot3", "cross3", "norm3", "normalize3", "matvec3", "matmul3", "transpose3", "rot_x", "rot_y", "rot_z",
    "euler_zxy", "deg",
]

_TWO_PI = 2.0 * math.pi
_INV_TWO_PI = 1.0 / _TWO_PI
# Taylor coefficients of sin on [-pi/2, pi/2]; the truncation error is below 4e-8.
_SIN_COEFFS = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(6))


def deg(values: float) -> float:
    """Degrees to radians (for readable tables)."""
    return values * math.pi / 180.0


def _sin_reduced(x: Tensor) -> Tensor:
    """sin(x) for x in [-pi/2, pi/2] (odd polynomial, Horner form)."""
    x2 = x * x
    acc = torch.full_like(x, _SIN_COEFFS[-1])
    for c in _SIN_COEFFS[-2::-1]:
        acc = acc * x2 + c
    return acc * x


def sincos(x: Tensor) -> tuple[Tensor, Tensor]:
    """(sin x, cos x) from basic arithmetic only, accurate to ~1e-7 for |x| < 100."""
    # Reduce to [-pi, pi], then fold [pi/2, pi] onto [0, pi/2] with sin(pi - x) = sin(x).
    x = x - torch.floor(x * _INV_TWO_PI + 0.5) * _TWO_PI
    half_pi = 0.5 * math.pi
    s_arg = torch.where(x > half_pi, math.pi - x, torch.where(x < -half_pi, -math.pi - x, x))
    # cos(x) = sin(pi/2 - |x|) with pi/2 - |x| in [-pi/2, pi/2].
    c_arg = half_pi - torch.abs(x)
    return _sin_reduced(s_arg), _sin_reduced(c_arg)


def dot3(a: Tensor, b: Tensor) -> Tensor:
    """Dot product over the last axis (size 3), summed in a fixed order."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def cross3(a: Tensor, b: Tensor) -> Tensor:
    return torch.stack(
        [a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
         a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
         a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], dim=-1)


def norm3(a: Tensor) -> Tensor:
    return torch.sqrt(dot3(a, a))


def normalize3(a: Tensor, eps: float = 1e-20) -> Tensor:
    """Unit vectors (zero vectors stay zero)."""
    return a / torch.sqrt(torch.clamp(dot3(a, a), min=eps)).unsqueeze(-1)


def matvec3(m: Tensor, v: Tensor) -> Tensor:
    """``m @ v`` for [..., 3, 3] x [..., 3] without matmul."""
    return m[..., :, 0] * v[..., 0:1] + m[..., :, 1] * v[..., 1:2] + m[..., :, 2] * v[..., 2:3]


def matmul3(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for [..., 3, 3] matrices without matmul."""
    return a[..., :, 0:1] * b[..., 0:1, :] + a[..., :, 1:2] * b[..., 1:2, :] + a[..., :, 2:3] * b[..., 2:3, :]


def transpose3(m: Tensor) -> Tensor:
    return m.transpose(-1, -2)


def _rot(c: Tensor, s: Tensor, axis: int) -> Tensor:
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    if axis == 0:
        rows = [one, zero, zero, zero, c, -s, zero, s, c]
    elif axis == 1:
        rows = [c, zero, s, zero, one, zero, -s, zero, c]
    else:
        rows = [c, -s, zero, s, c, zero, zero, zero, one]
    return torch.stack(rows, dim=-1).reshape(*c.shape, 3, 3)


def rot_x(angle: Tensor) -> Tensor:
    """Rotation about x by ``angle`` (right-handed): y turns toward z."""
    s, c = sincos(angle)
    return _rot(c, s, 0)


def rot_y(angle: Tensor) -> Tensor:
    """Rotation about y: z turns toward x."""
    s, c = sincos(angle)
    return _rot(c, s, 1)


def rot_z(angle: Tensor) -> Tensor:
    """Rotation about z: x turns toward y."""
    s, c = sincos(angle)
    return _rot(c, s, 2)


def euler_zxy(angles: Tensor) -> Tensor:
    """``Rz(angles[..., 2]) @ Rx(angles[..., 0]) @ Ry(angles[..., 1])`` for [..., 3] angles (x, y, z)."""
    return matmul3(matmul3(rot_z(angles[..., 2]), rot_x(angles[..., 0])), rot_y(angles[..., 1]))
