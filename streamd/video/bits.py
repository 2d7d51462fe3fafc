"""RBSP bit reading and writing with exp-Golomb codes (H.264 7.2, 9.1), sans-I/O."""

from __future__ import annotations

from streamd.errors import StreamdError

# ue(v) in H.264/H.265 fits 32 bits; more leading zeros is a corrupt stream,
# refused before it costs a huge shift.
_MAX_LEADING_ZEROS = 31


class BitstreamError(StreamdError, ValueError):
    """An RBSP that ends early or holds an impossible value."""


class BitReader:
    def __init__(self, rbsp: bytes) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._size = len(rbsp) * 8
        self.pos = 0

    @property
    def remaining(self) -> int:
        return self._size - self.pos

    def u(self, bits: int) -> int:
        if bits == 0:
            return 0
        if self.pos + bits > self._size:
            raise BitstreamError("read past the end")
        self.pos += bits
        return (self._value >> (self._size - self.pos)) & ((1 << bits) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > _MAX_LEADING_ZEROS:
                raise BitstreamError("exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)

    def trailing_bits(self) -> None:
        """rbsp_trailing_bits and nothing after them."""
        if self.remaining <= 0 or self.u(1) != 1:
            raise BitstreamError("missing rbsp_stop_one_bit")
        if self.remaining >= 8 or self.u(self.remaining) != 0:
            raise BitstreamError("data after rbsp_trailing_bits")


class BitWriter:
    def __init__(self) -> None:
        self._value = 0
        self._size = 0

    def u(self, bits: int, value: int) -> None:
        if value < 0 or value >> bits:
            raise ValueError(f"{value} does not fit {bits} bits")
        self._value = (self._value << bits) | value
        self._size += bits

    def flag(self, value: bool) -> None:
        self.u(1, int(value))

    def ue(self, value: int) -> None:
        if not 0 <= value < (1 << (_MAX_LEADING_ZEROS + 1)) - 1:
            raise ValueError(f"ue({value}) out of range")
        code = value + 1
        self.u(code.bit_length() * 2 - 1, code)  # the leading zeros come for free

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        """The bits written, then rbsp_trailing_bits."""
        self.u(1, 1)
        pad = -self._size % 8
        self.u(pad, 0)
        return self._value.to_bytes(self._size // 8, "big")
