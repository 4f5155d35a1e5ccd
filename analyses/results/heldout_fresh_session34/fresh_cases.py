"""Held-out cases never run before (session 34): the default path on new phi*, laws, sizes.

The ten cases, their phi* and token laws now live in ``analyses/heldout_external.py``
(``FRESH_CASES``, ``--set fresh``), which builds the same data (checked bit for bit in
session 36). This shim keeps the records' command working:
``python fresh_cases.py --out-dir DIR [--cases ...] [--seeds 0 1]``.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import heldout_external as he  # noqa: E402

if __name__ == "__main__":
    he.main(he.build_parser().parse_args(["--set", "fresh", "--seeds", "0", "1", *sys.argv[1:]]))
