"""Makes the Twilio REST requests callkeeper makes, with twilio-python's own client.

core/tests/suite/twilio_rest_conformance.rs makes each request with callkeeper's client against
a fake Twilio on loopback, then runs this script against the same fake: one JSON object on stdin,
{"base": "http://127.0.0.1:PORT", "account": "AC…", "token": "…", "inputs": {…}} with the same
inputs, and each request twilio-python sends carries an `X-Conformance-Op` header naming the
operation, so the test can set the two clients' requests side by side (method, path, query and
form fields). Prints a JSON list of the operations it made; exits 1 if twilio-python failed one.
"""

import json
import sys
from datetime import date

from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

API = "https://api.twilio.com"


class ToTheFake(TwilioHttpClient):
    """twilio-python's own HTTP client, sent to the fake instead of api.twilio.com."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.operation = None

    def request(self, method, url, params=None, data=None, headers=None, **kwargs):
        if not url.startswith(API):
            raise ValueError(f"twilio-python asked for {url}, not Twilio's API")
        headers = dict(headers or {})
        headers["X-Conformance-Op"] = self.operation
        return super().request(method, self.base + url[len(API):], params=params, data=data, headers=headers, **kwargs)


def main():
    setup = json.load(sys.stdin)
    http = ToTheFake(setup["base"])
    client = Client(setup["account"], setup["token"], http_client=http)
    i = setup["inputs"]
    call = client.calls(i["call_sid"])
    recording = client.recordings(i["recording_sid"])
    operations = [
        ("calls.update twiml", lambda: call.update(twiml=i["twiml"])),
        ("calls.update url", lambda: call.update(url=i["url"], method="POST")),
        ("calls.update completed", lambda: call.update(status="completed")),
        ("calls.fetch", lambda: call.fetch()),
        (
            "calls.create",
            lambda: client.calls.create(
                to=i["to"],
                from_=i["from"],
                url=i["url"],
                method="POST",
                status_callback=i["status_callback"],
                status_callback_method="POST",
                status_callback_event=i["status_callback_events"],
                record=True,
                recording_channels=i["recording_channels"],
                recording_status_callback=i["recording_status_callback"],
                machine_detection=i["machine_detection"],
                timeout=i["timeout"],
            ),
        ),
        ("recordings.list", lambda: client.recordings.list(date_created_after=date.fromisoformat(i["since"]), page_size=1000)),
        ("recordings.fetch", lambda: recording.fetch()),
        ("recordings.delete", lambda: recording.delete()),
        (
            "messages.create",
            lambda: client.messages.create(
                to=i["whatsapp_to"],
                from_=i["whatsapp_from"],
                body=i["body"],
                media_url=i["media_urls"],
                status_callback=i["message_status_callback"],
            ),
        ),
        (
            "messages.create (template)",
            lambda: client.messages.create(
                to=i["whatsapp_to"],
                from_=i["whatsapp_from"],
                content_sid=i["content_sid"],
                content_variables=i["content_variables"],
                status_callback=i["message_status_callback"],
            ),
        ),
        ("accounts.fetch", lambda: client.api.v2010.accounts(setup["account"]).fetch()),
        ("incoming_phone_numbers.list", lambda: client.incoming_phone_numbers.list(phone_number=i["number"], page_size=1000)),
        ("incoming_phone_numbers.update", lambda: client.incoming_phone_numbers(i["number_sid"]).update(**i["number_fields"])),
    ]
    done = []
    for name, operation in operations:
        http.operation = name
        try:
            operation()
        except Exception as e:  # the fake answered something twilio-python could not read
            print(json.dumps({"failed": name, "error": repr(e)}))
            sys.exit(1)
        done.append(name)
    print(json.dumps(done))


if __name__ == "__main__":
    main()
