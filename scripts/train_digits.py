"""Train the digits CNN on the 4,000 training digits and save its weights to assets/digits_cnn.pt.

Usage: .venv/bin/python scripts/train_digits.py [--epochs N] [--seed S] [--threads T] [--output PATH]

The run is deterministic for a given seed and thread count. It prints the held-out accuracy on
the 1,000 held-out digits and the training time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# OpenMP's busy-waiting makes CPU timings swing on small machines, and it must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pruning.models.digits import (  # noqa: E402
    WEIGHTS_FILE,
    DigitsCNN,
    evaluate,
    holdout_split,
    train,
    train_split,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training split (default: 30)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the initial weights, batch order and shifts (default: 0)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads, which change the exact weights (default: 2)"
    )
    parser.add_argument(
        "--output", type=Path, default=WEIGHTS_FILE, help=f"weights file to write (default: {WEIGHTS_FILE})"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"invalid --epochs {args.epochs}: use at least 1")
    if args.threads < 1:
        parser.error(f"invalid --threads {args.threads}: use at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_images, train_labels = train_split()
    test_images, test_labels = holdout_split()
    model = DigitsCNN()
    print(
        f"training on {len(train_labels)} digits for {args.epochs} epochs, "
        f"seed {args.seed}, {args.threads} threads"
    )

    def report(fraction: float) -> None:
        epoch = round(fraction * args.epochs)
        if epoch % 5 == 0 or epoch == args.epochs:
            accuracy = evaluate(model, test_images, test_labels)
            elapsed = time.perf_counter() - started
            print(f"epoch {epoch:3d}: held-out accuracy {accuracy:.2%} after {elapsed:.1f} s")

    started = time.perf_counter()
    train(model, train_images, train_labels, epochs=args.epochs, seed=args.seed, progress=report)
    seconds = time.perf_counter() - started

    accuracy = evaluate(model, test_images, test_labels)
    print(f"held-out accuracy {accuracy:.2%} on {len(test_labels)} digits")
    print(f"training took {seconds:.1f} s, including the evaluations every 5 epochs")

    # Parameters and BatchNorm statistics are saved as float32, and num_batches_tracked stays int64.
    state = {}
    for name, tensor in model.state_dict().items():
        state[name] = tensor.detach().float() if tensor.is_floating_point() else tensor
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.output)
    print(f"saved {args.output} ({args.output.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
