"""Checks callkeeper's OpenAI HTTP requests against the openai package's own request types.

Reads a JSON list on stdin, each {"endpoint": "audio.transcriptions" | "chat.completions",
"params": {...}}: the parameters of a request callkeeper sent (core/tests/suite/
openai_requests_conformance.rs collects them from a fake OpenAI over loopback; a multipart
form's `name[]` fields as one list, its file as (filename, bytes)). Each parameter is
validated by pydantic against its type in the SDK's TypedDict for the endpoint (`TranscriptionCreateParamsNonStreaming`,
`CompletionCreateParamsNonStreaming`), and every key, at any depth, must be one the types
declare: a TypedDict ignores keys it does not know, and a key the API does not know is at best
ignored by it too. Prints a JSON summary; exits 1 on any failure.
"""

import json
import sys
import typing

from pydantic import TypeAdapter
from openai.types.audio.transcription_create_params import TranscriptionCreateParamsNonStreaming
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

TYPES = {
    "audio.transcriptions": TranscriptionCreateParamsNonStreaming,
    "chat.completions": CompletionCreateParamsNonStreaming,
}


def unwrap(kind):
    """Required[X], NotRequired[X], Annotated[X, …] → X."""
    while typing.get_origin(kind) in (typing.Required, typing.NotRequired, typing.Annotated):
        kind = typing.get_args(kind)[0]
    return kind


def is_typed_dict(kind):
    return isinstance(kind, type) and issubclass(kind, dict) and hasattr(kind, "__annotations__")


def undeclared(value, kind, path):
    """The keys of `value`, at any depth, that `kind` does not declare."""
    kind = unwrap(kind)
    if is_typed_dict(kind) and isinstance(value, dict):
        hints = typing.get_type_hints(kind, include_extras=True)
        found = [f"{path}.{key}" for key in value if key not in hints]
        for key, item in value.items():
            if key in hints:
                found += undeclared(item, hints[key], f"{path}.{key}")
        return found
    origin = typing.get_origin(kind)
    if origin is typing.Union:
        members = [m for m in typing.get_args(kind) if unwrap(m) is not type(None)]
        # The member the value is: the first that validates and declares every key.
        best = None
        for member in members:
            try:
                TypeAdapter(member).validate_python(value)
            except Exception:
                continue
            found = undeclared(value, member, path)
            if not found:
                return []
            best = found if best is None else best
        return best or []
    if origin in (list, typing.List, tuple) or (origin is not None and getattr(origin, "__name__", "") in ("Iterable", "Sequence")):
        args = typing.get_args(kind)
        if args and isinstance(value, list):
            return [k for i, item in enumerate(value) for k in undeclared(item, args[0], f"{path}[{i}]")]
    return []


def main():
    requests = json.load(sys.stdin)
    failures, keys = [], 0
    for request in requests:
        kind = TYPES[request["endpoint"]]
        params = request["params"]
        hints = typing.get_type_hints(kind, include_extras=True)
        missing = [key for key in kind.__required_keys__ if key not in params]
        failures += [f"{request['endpoint']}: the required {key} is missing" for key in missing]
        for key, value in params.items():
            # The file is bytes in a form part (the SDK's FileTypes has no pydantic schema).
            if key in hints and key != "file":
                try:
                    checked = TypeAdapter(unwrap(hints[key])).validate_python(value)
                    # pydantic checks an Iterable's items only as they are read.
                    if not isinstance(checked, (str, bytes, dict, list, tuple)) and hasattr(checked, "__iter__"):
                        list(checked)
                except Exception as e:
                    failures.append(f"{request['endpoint']}.{key}: {e}")
        extra = undeclared(params, kind, request["endpoint"])
        failures += [f"{key}: not a parameter the openai package's types declare" for key in extra]
        keys += len(params)
    print(json.dumps({"requests": len(requests), "top_level_parameters": keys, "failures": failures}, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
