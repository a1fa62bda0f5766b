#!/usr/bin/env python3
"""Run a reference processor from the repository, with its library ``emmref`` importable.

    python processors/launch.py processors/exi/processor.py

Python puts the folder of the script it runs first on ``sys.path``: for this
launcher that is ``processors/``, where ``emmref`` lives, so the processor
imports ``emmref`` as it does in its image (where ``emmref`` is installed on
``PYTHONPATH``, see ``processors/Containerfile``). No processor edits
``sys.path``. The processor runs as ``__main__`` with ``sys.argv`` starting
at its own path, and its exit status is the launcher's.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 2 or not Path(sys.argv[1]).is_file():
        sys.exit(f"usage: {Path(sys.argv[0]).name} <processor.py> [arguments...] "
                 f"(got {' '.join(sys.argv[1:]) or 'nothing'})")
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
