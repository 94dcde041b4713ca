"""Checks TwiML documents against twilio-python's own TwiML classes.

Reads a JSON list of {"name": ..., "twiml": ...} on stdin (every document callkeeper serves, as
tests/api/twiml_conformance.rs collects them from the webhooks), rebuilds each with
twilio-python's VoiceResponse, verb by verb and noun by noun, and compares the two element by
element and attribute by attribute. A verb or noun twilio-python has no method for where it
stands, or an attribute its method does not name (so only its **kwargs would take it), is a
failure too. Prints a JSON summary; exits 1 on any failure.
"""

import inspect
import json
import re
import sys
import xml.etree.ElementTree as ET

from twilio.twiml.voice_response import VoiceResponse

# The noun an element's text is passed as, by element.
TEXT_ARGUMENT = {"Play": "url", "Say": "message", "Number": "phone_number"}


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def rebuild(parent, element, where, failures, counts):
    """Calls the twilio-python method for `element` on `parent`; returns what it built."""
    counts["elements"] += 1
    method = getattr(parent, snake(element.tag), None)
    if method is None or not callable(method):
        failures.append(f"{where}: twilio-python has no <{element.tag}> inside <{type(parent).__name__}>")
        return None
    named = {p for p in inspect.signature(method).parameters if p not in ("self", "kwargs")}
    kwargs = {}
    for attr, value in element.attrib.items():
        counts["attributes"] += 1
        key = snake(attr)
        if key not in named:
            failures.append(f"{where}: <{element.tag} {attr}> is not an attribute twilio-python's {element.tag} takes")
        kwargs[key] = value
    text = (element.text or "").strip()
    if text:
        argument = TEXT_ARGUMENT.get(element.tag)
        if argument is None:
            failures.append(f"{where}: <{element.tag}> has text, which callkeeper's reader does not expect")
        else:
            kwargs[argument] = text
    built = method(**kwargs)
    for child in element:
        rebuild(built, child, f"{where}/{child.tag}", failures, counts)
    return built


def same(ours, theirs, where, failures):
    if ours.tag != theirs.tag:
        failures.append(f"{where}: <{ours.tag}> where twilio-python has <{theirs.tag}>")
        return
    if dict(ours.attrib) != dict(theirs.attrib):
        failures.append(f"{where}: attributes {dict(ours.attrib)} where twilio-python has {dict(theirs.attrib)}")
    if (ours.text or "").strip() != (theirs.text or "").strip():
        failures.append(f"{where}: text {ours.text!r} where twilio-python has {theirs.text!r}")
    if len(ours) != len(theirs):
        failures.append(f"{where}: {len(ours)} children where twilio-python has {len(theirs)}")
    for a, b in zip(ours, theirs):
        same(a, b, f"{where}/{a.tag}", failures)


def main():
    documents = json.load(sys.stdin)
    failures = []
    counts = {"documents": 0, "elements": 0, "attributes": 0}
    for doc in documents:
        counts["documents"] += 1
        ours = ET.fromstring(doc["twiml"].encode("utf-8"))
        where = doc["name"]
        if ours.tag != "Response":
            failures.append(f"{where}: the root is <{ours.tag}>, not <Response>")
            continue
        response = VoiceResponse()
        for verb in ours:
            rebuild(response, verb, f"{where}: {verb.tag}", failures, counts)
        theirs = ET.fromstring(response.to_xml().encode("utf-8"))
        same(ours, theirs, where, failures)
    print(json.dumps({**counts, "failures": failures}, ensure_ascii=False))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
