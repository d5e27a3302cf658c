"""What a webhook body must be before anything reads it: JSON of a bounded size and nesting,
numbers finite, strings without NUL or other control characters (PostgreSQL refuses NUL, and
nothing downstream wants the rest). Garbage is answered 400 by the caller; nothing of it is
stored. Shared by every CRM webhook (the Stripe endpoint is parsed by the Stripe SDK)."""

import json
import re

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class BadPayload(ValueError):
    pass


def _no_constants(name):
    raise BadPayload(f"{name} is not a number")


def parse(body: bytes):
    """The body as JSON, cleaned; raises BadPayload."""
    if len(body) > MAX_BYTES:
        raise BadPayload("body too large")
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadPayload("not JSON") from exc
    if _depth(data) > MAX_DEPTH:
        raise BadPayload("nested too deeply")
    return _clean(data)


def _depth(data) -> int:
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _clean(node):
    if isinstance(node, str):
        return _CONTROL.sub("", node)
    if isinstance(node, dict):
        return {_CONTROL.sub("", str(k)): _clean(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node
