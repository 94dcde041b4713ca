"""Reads Realtime events with the official `openai` package's GA types.

Input: JSON lines `{"side": "client" | "server", "event": {...}}` (the fake Realtime server's wire
record: every shape of event the agent sent it and it sent back), from the files named on the
command line, or stdin. Each client event must validate as `openai.types.realtime.RealtimeClientEvent`
and each server event as `RealtimeServerEvent`, through pydantic; and since the SDK's models keep
fields they do not declare (pydantic `extra="allow"`) rather than refuse them, a field one of its
models does not declare anywhere in the event is a failure too, except the few the API is
documented to send that the SDK's types leave out (DOCUMENTED_EXTRA). Prints a JSON summary;
exits 1 on any failure, or when there was nothing to read (unless --allow-empty).
"""

import json
import os
import sys
import typing
from collections import Counter

import pydantic
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

UNIONS = {"client": RealtimeClientEvent, "server": RealtimeServerEvent}
ADAPTERS = {side: pydantic.TypeAdapter(union) for side, union in UNIONS.items()}

# Fields the API sends that the SDK's event types do not declare, each where it is documented
# (../shared/openai-realtime.md quotes the event from OpenAI's Realtime guide): the session object
# of `session.created`/`session.updated` is typed as the *request* session, which has no id.
DOCUMENTED_EXTRA = {
    "session.created": {"session.object", "session.id", "session.expires_at"},
    "session.updated": {"session.object", "session.id", "session.expires_at"},
}


def undeclared(value, path, found):
    """Paths of fields that no SDK model on the way declares."""
    if isinstance(value, pydantic.BaseModel):
        for key in value.model_extra or {}:
            found.append(f"{path}.{key}".lstrip("."))
        for name in type(value).model_fields:
            undeclared(getattr(value, name), f"{path}.{name}", found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            undeclared(item, path, found)
    elif isinstance(value, dict):
        for key, item in value.items():
            undeclared(item, f"{path}.{key}", found)


def member_for(union, kind):
    """The union member whose `type` is `kind`: the class the event's errors are about."""
    for member in typing.get_args(typing.get_args(union)[0]):
        field = member.model_fields.get("type")
        if field is not None and kind in typing.get_args(field.annotation):
            return member.__name__
    return None


def first_errors(error, union, kind):
    """The validation errors of the union member the event's type names, not all 50 members'."""
    name = member_for(union, kind)
    if name is None:
        return f"no event type {kind!r} in the openai package"
    mine = [e for e in error.errors() if e["loc"][:1] == (name,)]
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in mine[:4])


def check(lines):
    failures, counts, kinds = [], Counter(), Counter()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        record = json.loads(line)
        side, event = record["side"], record["event"]
        counts[side] += 1
        kind = event.get("type", "?")
        kinds[f"{side} {kind}"] += 1
        where = f"{side} event {kind!r} (line {number})"
        try:
            model = ADAPTERS[side].validate_python(event)
        except pydantic.ValidationError as error:
            failures.append(f"{where}: not a {side} event the openai package reads: {first_errors(error, UNIONS[side], kind)}")
            continue
        if getattr(model, "type", None) != kind:
            failures.append(f"{where}: read as {type(model).__name__} of type {getattr(model, 'type', None)!r}")
        found = []
        undeclared(model, "", found)
        allowed = DOCUMENTED_EXTRA.get(kind, set()) if side == "server" else set()
        unknown = [path for path in found if path not in allowed]
        if unknown:
            failures.append(f"{where}: fields the openai package's {type(model).__name__} does not declare: {unknown}")
    return failures, counts, kinds


def main():
    args = sys.argv[1:]
    # A filtered test run may have opened no Realtime session (and its shell glob matched nothing).
    allow_empty = "--allow-empty" in args
    names = [name for name in args if name != "--allow-empty"]
    if names:
        lines = [line for name in names if not (allow_empty and not os.path.exists(name)) for line in open(name, encoding="utf-8")]
    else:
        lines = sys.stdin.readlines()
    failures, counts, kinds = check(lines)
    import openai

    summary = {
        "openai": openai.__version__,
        "client_events": counts["client"],
        "server_events": counts["server"],
        "types": sorted(kinds),
        "failures": failures,
    }
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    if not allow_empty and (not counts["client"] or not counts["server"]):
        print("no events to read: the wire record is empty", file=sys.stderr)
        sys.exit(1)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
