"""Writes the sample events in this folder: one per function, as API Gateway (HTTP API, payload
2.0), SQS and EventBridge Scheduler deliver them. The webhook events carry form bodies base64
encoded, as API Gateway passes Twilio's posts, signed by twilio-python's RequestValidator with
the test auth token over the URL Twilio would call. scripts/test.sh checks the files are what
this script writes; tests/lambda_events.rs runs every function binary on them.

    python events/gen_events.py events/
"""

import base64
import json
import sys
import urllib.parse
from pathlib import Path

from twilio.request_validator import RequestValidator

AUTH_TOKEN = "events-test-auth-token"  # what TWILIO_AUTH_TOKEN must be for these signatures
API_ID = "abc123def4"
REGION = "eu-west-1"
HOST = f"{API_ID}.execute-api.{REGION}.amazonaws.com"
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
CALL_IN = "CA1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a"
CALL_OUT = "CA2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b"
STREAM = "MZ3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c"
RECORDING = "RE4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d"
# A recording the test writes to the store itself, with a URL on its fake Twilio.
SEEDED_RECORDING = "RE5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
MESSAGE_IN = "SM6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f"
MESSAGE_OUT = "SM7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a"
CALLER = "+972501234567"
BUSINESS = "+97231234567"
WHATSAPP_NUMBER = "+14155238886"
EPOCH_MS = 1795428000000  # 2026-11-23T10:00:00Z
TIME = "23/Nov/2026:10:00:00 +0000"


def webhook(path, params, request_id):
    url = f"https://{HOST}{path}"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    body = urllib.parse.urlencode(params)
    return {
        "version": "2.0",
        "routeKey": f"POST {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "accept": "*/*",
            "content-length": str(len(body)),
            "content-type": "application/x-www-form-urlencoded",
            "host": HOST,
            "i-twilio-idempotency-token": f"{request_id}-idem",
            "user-agent": "TwilioProxy/1.1",
            "x-amzn-trace-id": f"Root=1-6742dd80-{request_id:0>24}",
            "x-forwarded-for": "54.172.60.1",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
            "x-home-region": "us1",
            "x-twilio-signature": signature,
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": API_ID,
            "domainName": HOST,
            "domainPrefix": API_ID,
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "54.172.60.1", "userAgent": "TwilioProxy/1.1"},
            "requestId": request_id,
            "routeKey": f"POST {path}",
            "stage": "$default",
            "time": TIME,
            "timeEpoch": EPOCH_MS,
        },
        "body": base64.b64encode(body.encode()).decode(),
        "isBase64Encoded": True,
    }


def page(path, request_id):
    """A browser's GET of one of the CRM's pages, with no session."""
    agent = "Mozilla/5.0 (X11; Linux x86_64) Chrome/148.0 Safari/537.36"
    return {
        "version": "2.0",
        "routeKey": "ANY /crm/{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "accept": "text/html",
            "accept-language": "he-IL,he;q=0.9",
            "host": HOST,
            "user-agent": agent,
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": API_ID,
            "domainName": HOST,
            "domainPrefix": API_ID,
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": agent},
            "requestId": request_id,
            "routeKey": "ANY /crm/{proxy+}",
            "stage": "$default",
            "time": TIME,
            "timeEpoch": EPOCH_MS,
        },
        "pathParameters": {"proxy": path.removeprefix("/crm/")},
        "isBase64Encoded": False,
    }


def voice(call_sid, direction, status, extra=None):
    inbound = direction == "inbound"
    params = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": status,
        "Called": BUSINESS if inbound else CALLER,
        "Caller": CALLER if inbound else BUSINESS,
        "Direction": direction,
        "From": CALLER if inbound else BUSINESS,
        "FromCountry": "IL",
        "To": BUSINESS if inbound else CALLER,
        "ToCountry": "IL",
    }
    params.update(extra or {})
    return params


def sqs(queue, message_id, body):
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": f"AQEB{message_id.replace('-', '')}==",
                "body": json.dumps(body, separators=(",", ":")),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": str(EPOCH_MS),
                    "SenderId": "AROAEXAMPLE:recording_done",
                    "ApproximateFirstReceiveTimestamp": str(EPOCH_MS + 20),
                },
                "messageAttributes": {},
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:callkeeper-{queue}",
                "awsRegion": REGION,
            }
        ]
    }


def events():
    yield "incoming_call", webhook("/webhook/incoming_call", voice(CALL_IN, "inbound", "ringing"), "inc1")
    yield "outbound_call", webhook("/webhook/outbound_call", voice(CALL_OUT, "outbound-api", "in-progress"), "out1")
    stream = {"StreamSid": STREAM, "StreamName": STREAM, "StreamEvent": "stream-started", "Timestamp": "2026-11-23T10:00:01.120Z"}
    yield "stream_status", webhook("/webhook/stream_status", {"AccountSid": ACCOUNT, "CallSid": CALL_IN, **stream}, "sst1")
    yield "stream_ended", webhook("/webhook/stream_ended", voice(CALL_IN, "inbound", "in-progress"), "end1")
    recording = {
        "AccountSid": ACCOUNT,
        "CallSid": CALL_IN,
        "RecordingSid": RECORDING,
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}",
        "RecordingStatus": "completed",
        "RecordingDuration": "42",
        "RecordingChannels": "2",
        "RecordingSource": "StartCallRecordingTwiML",
        "RecordingStartTime": "Mon, 23 Nov 2026 10:00:00 +0000",
        "ErrorCode": "0",
    }
    yield "recording_done", webhook("/webhook/recording_done", recording, "rec1")
    yield "transcribe", sqs("transcription", "0e6d3b9a-1c2f-4a57-9d3e-5b8f7c6a4e21",
                            {"kind": "transcribe", "call_sid": CALL_IN, "recording_sid": SEEDED_RECORDING})
    whatsapp = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "Body": "שלום, אני מחפש דירה בתל אביב",
        "From": f"whatsapp:{CALLER}",
        "MessageSid": MESSAGE_IN,
        "MessageType": "text",
        "NumMedia": "0",
        "NumSegments": "1",
        "ProfileName": "Dana",
        "SmsMessageSid": MESSAGE_IN,
        "SmsSid": MESSAGE_IN,
        "SmsStatus": "received",
        "To": f"whatsapp:{WHATSAPP_NUMBER}",
        "WaId": CALLER.lstrip("+"),
    }
    yield "whatsapp_inbound", webhook("/webhook/whatsapp/inbound", whatsapp, "wai1")
    yield "reply", sqs("replies", "5a0c9e47-8b13-4f62-a7d9-3c1e2b4f6d80",
                       {"kind": "whatsapp_reply", "message_sid": MESSAGE_IN, "contact": CALLER})
    status = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "ChannelPrefix": "whatsapp",
        "From": f"whatsapp:{WHATSAPP_NUMBER}",
        "MessageSid": MESSAGE_OUT,
        "MessageStatus": "delivered",
        "SmsSid": MESSAGE_OUT,
        "SmsStatus": "delivered",
        "To": f"whatsapp:{CALLER}",
    }
    yield "whatsapp_status", webhook("/webhook/whatsapp/status", status, "was1")
    yield "crm", page("/crm/calls", "crm1")
    # What incoming_call raises for the call above, as the events queue delivers it.
    yield "deliver_events", sqs("events", "7c2e4f9a-3b1d-4e8a-9f60-2d5c8b1a7e34", {
        "kind": "deliver_event",
        "event": {"id": f"call.started:{CALL_IN}", "type": "call.started", "created_at": EPOCH_MS,
                  "data": {"call": {"call_sid": CALL_IN, "from": CALLER, "to": BUSINESS, "direction": "inbound"}}},
    })
    # EventBridge Scheduler's envelope; the watchdog does not read it.
    yield "watchdog", {
        "version": "0",
        "id": "8d7e9c52-0b3a-4f1e-9a6d-2c5b7e1f3a90",
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "123456789012",
        "time": "2026-11-23T10:01:00Z",
        "region": REGION,
        "resources": [f"arn:aws:scheduler:{REGION}:123456789012:schedule/default/callkeeper-WatchdogFunctionEveryMinute"],
        "detail": "{}",
    }


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
    for name, event in events():
        (out / f"{name}.json").write_text(json.dumps(event, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
