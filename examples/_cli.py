"""What every example's command line shares: its description and ``--threads``."""

from __future__ import annotations

import argparse

import torch


def parser(doc: str, prog: str) -> argparse.ArgumentParser:
    """An argument parser described by the first line of ``doc``, with ``--threads``."""
    p = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: small steps run fastest on one thread, and a "
                        "shared CPU can make torch's default pool 5-80x slower); 0 keeps torch's default")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, apply ``--threads`` and print the setting."""
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()} ({'--threads 0: torch default' if args.threads <= 0 else '--threads'})")
    return args
