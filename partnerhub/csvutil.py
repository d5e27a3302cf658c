"""CSV helpers shared by every export."""

import json


class Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value):
        return value


def safe_cell(value) -> str:
    """Spreadsheet-safe cell: JSON for structures, formulas neutralised (CSV injection)."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    value = "" if value is None else str(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
