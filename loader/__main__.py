"""``python -m loader`` is the same as ``callkaro-loader``."""

import sys

from loader.cli import entry

sys.exit(entry())
