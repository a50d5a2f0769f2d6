"""pandera, imported without changing the caller's environment.

Importing pandera sets ``SPARK_LOCAL_IP=127.0.0.1`` and
``PYARROW_IGNORE_TIMEZONE=1`` in ``os.environ`` for pyspark's sake, whether or
not pyspark is installed. A notebook that loads a sheet and then starts a
Spark session (or any subprocess) would inherit them: Spark would bind to the
loopback address. They are put back as they were once pandera is loaded.
Every module of the loader imports pandera from here.
"""

from __future__ import annotations

import os

_SET_BY_PANDERA = ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")
_before = {key: os.environ.get(key) for key in _SET_BY_PANDERA}

import pandera.pandas as pa  # noqa: E402 - the environment is read just before
from pandera.typing import Series  # noqa: E402

for _key, _value in _before.items():
    if _value is None:
        os.environ.pop(_key, None)
    else:
        os.environ[_key] = _value

__all__ = ["Series", "pa"]
