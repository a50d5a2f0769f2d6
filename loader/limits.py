"""The limits on what the loader will read, in one place.

A contacts sheet is small and regular: tens of columns, short cells. A
file far outside that shape is either a mistake (a transposed export, a
log file with the wrong name) or an attack (a decompression bomb), and is
refused as a whole with one line saying which limit it broke, before it
can exhaust memory. The numbers:

``MAX_CELL_CHARS`` (32,767)
    The longest cell Excel itself can hold. A longer cell cannot have come
    from a spreadsheet and could not be written back into one (the results
    and the error report are spreadsheets too).
``MAX_COLUMNS`` (1,000)
    Columns with anything in them. Every column beyond the call fields is
    a metadata key sent with each call; a thousand is far beyond any lead
    sheet, and a sheet with more is almost certainly not a contact list.
``MAX_UNCOMPRESSED_BYTES`` (2 GiB)
    The total size a workbook's zip directory says its parts unpack to. A
    million-row sheet unpacks to well under a gigabyte.
``MAX_COMPRESSION_RATIO`` (100) for parts above ``RATIO_CHECKED_ABOVE_BYTES`` (10 MiB)
    Spreadsheet XML compresses about 5-20 times; a large part that claims
    to unpack more than 100 times bigger is a decompression bomb (the same
    ratio Apache POI refuses).
``MAX_ZIP_MEMBERS`` (10,000)
    Parts in a workbook's zip; real workbooks have tens to hundreds.
``MAX_XML_PROLOG_BYTES`` (64 KiB)
    How far into each XML part the loader looks for a document type
    declaration (``<!DOCTYPE``), which workbooks never have and XML entity
    attacks always do. A prolog longer than this is itself refused.

``MAX_INPUT_BYTES`` (2 GiB, as ``MAX_UNCOMPRESSED_BYTES``)
    The most bytes read from any contacts sheet or do-not-call list, counted
    as they are read (``loader.files``): a file that keeps growing, or a
    device behind a symlink, stops here instead of filling memory.
``MAX_SETTINGS_BYTES`` (1 MiB)
    The most bytes read from ``--config`` or ``.env``: a few lines each.

The limits are checked from the zip directory and the first bytes of each
part, before any spreadsheet library parses the file.
"""

from __future__ import annotations

MAX_CELL_CHARS = 32_767
MAX_COLUMNS = 1_000
MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
MAX_COMPRESSION_RATIO = 100
RATIO_CHECKED_ABOVE_BYTES = 10 * 1024**2
MAX_ZIP_MEMBERS = 10_000
MAX_XML_PROLOG_BYTES = 64 * 1024
MAX_INPUT_BYTES = MAX_UNCOMPRESSED_BYTES
MAX_SETTINGS_BYTES = 1024**2
