"""`python -m benchmarks` (or `make bench`): every benchmark prints its ratio against an in-process baseline."""

from __future__ import annotations

import json

from benchmarks import pricing_batch, receiver_normalize


def main() -> None:
    results = {
        "receiver_normalize": receiver_normalize.run(),
        "pricing_batch": pricing_batch.run(),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
