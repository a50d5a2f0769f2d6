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


#: A way of running that may call people already called: a new results file, starting over,
#: the ledger's window or the ledger itself turned off, resending rows whose answer was lost.
_CALLS_AGAIN = re.compile(
    r"--fresh|--skip-recent 0|--no-history|no_history = true|--retry-uncertain"
    r"|(?:new|another|its own|different) `?--output|a path that does not exist yet"
)
#: ... and the words that say, in the same sentence, whether it does.
_SAYS_SO = re.compile(r"\bagain\b|twice|second time|sends nothing|calls nobody", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    """Sentences of prose and list items, and whole table rows (a row reads as one sentence);
    code blocks left out."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    found: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        rows = block.splitlines() if block.lstrip().startswith("|") else [block]
        for row in rows:
            flat = " ".join(row.split())
            found += re.split(r"(?<=[.!?;:])\s+(?=[A-Z`(])|\s+- (?=\*\*|`|[A-Z])", flat)
    return found


#: Loader text that tells the user what to run: hints, ``--help`` texts, and "run with --x" advice.
_ADVICE = re.compile(r"\b(?:run|resend|rerun|give|use|add)\b[^.;]*--[a-z]")


def _text_of(node: ast.expr, names: dict[str, str]) -> str | None:
    """The text an expression spells: literals, f-strings (``…`` for each value), ``+``, constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text_of(v, names) or "…" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return (_text_of(node.left, names) or "…") + (_text_of(node.right, names) or "…")
    if isinstance(node, ast.Name):
        return names.get(node.id)
    return None


def _loader_advice() -> list[str]:
    advice: list[str] = []
    for path in sorted((ROOT / "loader").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            target.id: text
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name) and (text := _text_of(node.value, {})) is not None
        }
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if id(node) in docstrings:
                continue
            if isinstance(node, ast.keyword) and node.arg in ("hint", "help"):
                text = _text_of(node.value, names)
                advice += [text] if text else []
            elif isinstance(node, ast.Constant | ast.JoinedStr):
                text = _text_of(node, names)
                advice += [text] if text and _ADVICE.search(text) else []
    return advice


def test_every_passage_and_hint_suggesting_a_way_to_run_says_if_it_calls_people_again() -> None:
    """Issue 13: no README passage or loader hint may point at a way of running that calls
    people again without saying so in the same sentence."""
    docs = [s for name in ("README.md", "SECURITY.md") for s in _sentences((ROOT / name).read_text("utf-8"))]
    silent = [s for s in docs + _loader_advice() if _CALLS_AGAIN.search(s) and not _SAYS_SO.search(s)]
    assert silent == []
