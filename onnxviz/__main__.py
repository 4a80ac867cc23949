"""``python -m onnxviz`` — the same as the ``onnxviz`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
