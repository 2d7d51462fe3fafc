"""The gateway's CPU per delivered access unit (``gateway_passthrough``'s first
figure), two checkouts of streamd interleaved against the same Redis, units and
raw paced send, so a busy or drifting machine moves both alike: how a change to
the passthrough path moved its cost, and each checkout's ratio to a raw send.

Usage: python -m benchmarks.gateway_passthrough_ab OLD_CHECKOUT NEW_CHECKOUT
           [--rounds 3] [--seconds 8] [--viewers 2] [--rate 100]

Each checkout's daemon runs with that checkout on ``PYTHONPATH`` (as
``camera_ab``); a raw send and a bare asyncio forwarder (the floor of any
asyncio gateway: ``gateway_passthrough.asyncio_floor_per_unit``) are measured
in every round, medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._redis import redis_server
from benchmarks.gateway_passthrough import (
    CLIP,
    asyncio_floor_per_unit,
    clip_units,
    raw_send_per_unit,
)
from tests.cameras import make_clip

# The daemon's CPU from its CPU-time clock (ns), whatever the checkout's
# benchmarks read (main's count 10 ms ticks: 6 µs per unit in an 8 s run).
_RUN_ONE = """
import ctypes, json, pickle, sys, time
import benchmarks.gateway_passthrough as gp
libc = ctypes.CDLL(None)
def cpu_seconds(pid):
    clock = ctypes.c_int()
    if libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        raise OSError("no CPU clock for the daemon")
    return time.clock_gettime(clock.value)
gp.cpu_seconds = cpu_seconds
gateway_per_unit = gp.gateway_per_unit
with open(sys.argv[2], "rb") as f:
    units = pickle.load(f)
cost, delivered = gateway_per_unit(int(sys.argv[1]), units, viewers=int(sys.argv[3]),
                                   rate=float(sys.argv[4]), seconds=float(sys.argv[5]))
print(json.dumps([cost, delivered]))
"""


def run_one(checkout: str, port: int, units: Path, args: argparse.Namespace) -> tuple[float, int]:
    """(CPU seconds per delivered unit, units delivered) of ``checkout``'s daemon."""
    env = dict(os.environ, PYTHONPATH=checkout)
    argv = [str(port), str(units), str(args.viewers), str(args.rate), str(args.seconds)]
    out = subprocess.run(
        [sys.executable, "-c", _RUN_ONE, *argv],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    cost, delivered = json.loads(out.stdout.strip().splitlines()[-1])
    return float(cost), int(delivered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkouts", nargs=2, help="two streamd checkouts: old, new")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--viewers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    costs: dict[str, list[float]] = {c: [] for c in args.checkouts}
    ratios: dict[str, list[float]] = {c: [] for c in args.checkouts}
    raws: list[float] = []
    floors: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, redis_server() as port:
        folder = Path(tmp)
        units = clip_units(make_clip(folder, CLIP), "gw")
        pickled = folder / "units.pickle"
        pickled.write_bytes(pickle.dumps(units))
        for round_no in range(args.rounds):
            order = args.checkouts if round_no % 2 == 0 else args.checkouts[::-1]
            raw = raw_send_per_unit(
                units, fanout=args.viewers, rate=args.rate, seconds=args.seconds
            )
            raws.append(raw)
            floor = asyncio_floor_per_unit(
                port, units, viewers=args.viewers, rate=args.rate, seconds=args.seconds
            )
            floors.append(floor)
            print(
                f"round {round_no}: raw {raw * 1e6:.1f} µs, bare asyncio forwarder "
                f"{floor * 1e6:.1f} µs ({floor / raw:.2f} x raw)",
                flush=True,
            )
            for checkout in order:
                cost, delivered = run_one(checkout, port, pickled, args)
                costs[checkout].append(cost)
                ratios[checkout].append(cost / raw)
                print(
                    f"round {round_no} {checkout}: {cost * 1e6:.1f} µs per delivered unit "
                    f"({delivered} delivered), raw {raw * 1e6:.1f} µs, ratio {cost / raw:.2f}",
                    flush=True,
                )
    print(f"medians ({os.getloadavg()[0]:.1f} load average at the end):")
    old, new = args.checkouts
    for checkout in args.checkouts:
        cost = statistics.median(costs[checkout])
        ratio = statistics.median(ratios[checkout])
        print(f"  {checkout:30s} {cost * 1e6:7.1f} µs  ratio to raw send {ratio:.2f}")
    print(f"  raw paced send {statistics.median(raws) * 1e6:.1f} µs")
    floor_ratio = statistics.median(f / r for f, r in zip(floors, raws, strict=True))
    floor = statistics.median(floors)
    print(f"  bare asyncio forwarder {floor * 1e6:.1f} µs ({floor_ratio:.2f} x raw)")
    paired = statistics.median(n / o for n, o in zip(costs[new], costs[old], strict=True))
    print(f"  new / old: {paired:.2f} (median of the rounds' pairs)")


if __name__ == "__main__":
    main()
