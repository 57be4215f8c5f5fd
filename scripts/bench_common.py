"""What the benchmark scripts share: the flags that name the network, the batch, the rounds and
the JSON output, and the CPUs a run may use."""
import argparse
import os
import pathlib


def parser(description: str) -> argparse.ArgumentParser:
    """A parser with the shared flags; each script adds its own."""
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--model", default="resnet18")
    arguments.add_argument("--image-size", type=int, default=112)
    arguments.add_argument("--batch-size", type=int, default=32)
    arguments.add_argument("--num-classes", type=int, default=102)
    arguments.add_argument("--rounds", type=int, default=2)
    arguments.add_argument("--output", type=pathlib.Path, help="append a JSON line here")
    return arguments


def allowed_cpus(threads: int | None) -> list[int]:
    """The first `threads` CPUs this process may run on (all of them for None or 0)."""
    return sorted(os.sched_getaffinity(0))[:threads or None]
