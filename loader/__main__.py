"""``python -m loader`` is the same as ``callkaro-loader``."""

import sys

from loader.cli import main

sys.exit(main())
