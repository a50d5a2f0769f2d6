"""The README's troubleshooting table quotes what the loader really says."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
#: Example values the table shows where the loader fills in a name, a type or a line.
_EXAMPLES = ["--api-key", "to_number", "agent_id", ".pdf", "cp1252", "comma-", "line 2", ".state"]
#: What stands for a value in the table: an ellipsis, a quoted name, a one-letter name (X, N, k),
#: or one of the examples above.
_PLACEHOLDER = re.compile(
    r"…|'[^']*'|\"[^\"]*\"|\([^)]*\)|\b[A-Za-z]\b(?::[A-Z]\b)?|" + "|".join(map(re.escape, _EXAMPLES))
)


def _loader_texts() -> list[str]:
    """Every string the loader's code holds: literals, and the fixed parts of f-strings."""
    texts: list[str] = []
    for path in sorted((ROOT / "loader").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.append(node.value)
    return texts


def _quoted_messages() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    messages: list[str] = []
    for line in table.splitlines():
        if line.startswith("| `"):
            first_cell = line.split(" | ", 1)[0]
            messages += re.findall(r"`([^`]+)`", first_cell)
    return messages


def test_every_message_the_troubleshooting_table_quotes_is_one_the_loader_has() -> None:
    texts = _loader_texts()
    missing = []
    messages = _quoted_messages()
    assert len(messages) > 40
    for message in messages:
        for fragment in _PLACEHOLDER.split(message):
            fragment = fragment.strip(" :,.;")
            if len(fragment) >= 8 and not any(fragment in t for t in texts):
                missing.append((message, fragment))
    assert not missing, missing
