"""CSV helpers shared by every export."""

import json
import re


class Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value):
        return value


# OWASP "CSV Injection": a cell must not begin with = + - @ tab or a line break (a spreadsheet
# reads it as a formula), and checking the first character is not enough: a field separator
# (comma, semicolon, tab) or a quote inside the cell can start a new cell when the file is read
# with another delimiter or quoting, and the formula then begins there ("Acme;=HYPERLINK(…)").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_FORMULA_AFTER_SEPARATOR = re.compile(r"[,;\t\r\n\"'][ ]*[=+\-@]")


def safe_cell(value) -> str:
    """Spreadsheet-safe cell: JSON for structures, formulas neutralised (CSV injection) by a
    leading single quote wherever a formula could start. Quoting of separators and quotes
    (RFC 4180) is csv.writer's."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    value = "" if value is None else str(value)
    if value[:1] in _FORMULA_START or _FORMULA_AFTER_SEPARATOR.search(value):
        return "'" + value
    return value
