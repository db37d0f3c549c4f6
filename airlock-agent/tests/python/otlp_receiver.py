#!/usr/bin/env python3
"""A real OTLP/gRPC logs receiver for the export tests: implements
opentelemetry.proto.collector.logs.v1.LogsService (the `opentelemetry-proto`
package from PyPI) on grpcio, on a loopback port, and appends every request
it receives to a file as one JSON object per line (protobuf's JSON mapping,
field names as in the .proto).

Usage: otlp_receiver.py PORT OUT. PORT 0 picks a free port. Prints
`listening PORT` on stdout once it accepts calls; runs until SIGTERM.
"""

import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):
        line = json.dumps(json_format.MessageToDict(request, preserving_proto_field_name=True))
        with self.lock:
            with open(self.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(out), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        print(f"cannot bind 127.0.0.1:{port}", file=sys.stderr)
        return 1
    server.start()
    print(f"listening {bound}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
