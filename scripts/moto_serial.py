"""moto_server, one request at a time.

moto's DynamoDB has no locks: under its threaded server two concurrent conditional writes can
both pass their condition, which real DynamoDB never allows, and the store contract's race test
then fails now and then. Served one request at a time, moto's writes are atomic as DynamoDB's are.
callkeeper makes no long-polling request (SQS receives do not wait), so nothing blocks the server.
"""

import os
import sys

host, port = sys.argv[1], int(sys.argv[2])
# moto names its SQS queue URLs by this port, as its own launcher sets it.
os.environ.setdefault("MOTO_PORT", str(port))

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

run_simple(host, port, DomainDispatcherApplication(create_backend_app), threaded=False)
