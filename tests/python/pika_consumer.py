"""A consumer written without our crate: pika, the standard Python client
of RabbitMQ, reads what a gateway published and checks it against the
events the store holds (exported as JSON by tests/test_brokers.rs).

    pika_consumer.py AMQP_URL EXCHANGE EXPECTED_JSON

Prints `ready` once its queue is bound, then `ok N` after checking N
messages, or `failed: ...` lines and exits with 1.
"""

import json
import sys

import pika


def main():
    url, exchange, expected_path = sys.argv[1:4]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(queue=queue, exchange=exchange, routing_key="#")
    print("ready", flush=True)
    sys.stdin.readline()  # the events are committed; the gateway publishes them

    with open(expected_path) as file:
        expected = {event["id"]: event for event in json.load(file)}
    failures = []
    seen = {}
    received = 0
    for method, properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=30):
        if method is None:
            failures.append("timed out after %d messages" % received)
            break
        received += 1
        headers = properties.headers or {}
        event = expected.get(properties.message_id)
        if event is None:
            failures.append("unknown message id %r" % properties.message_id)
            continue
        checks = [
            ("cloudEvents_id", headers.get("cloudEvents_id"), event["id"]),
            ("type", properties.type, event["name"]),
            ("cloudEvents_type", headers.get("cloudEvents_type"), event["name"]),
            ("cloudEvents_source", headers.get("cloudEvents_source"), event["aggregate_type"]),
            ("cloudEvents_subject", headers.get("cloudEvents_subject"), event["aggregate_id"]),
            ("cloudEvents_specversion", headers.get("cloudEvents_specversion"), "1.0"),
            ("routing key", method.routing_key, "%s.%s" % (event["aggregate_type"], event["name"])),
            ("content_type", properties.content_type, "application/json"),
            ("body", json.loads(body), json.loads(event["payload"])),
        ]
        for what, got, want in checks:
            if got != want:
                failures.append("%s of %s: %r, expected %r" % (what, event["id"], got, want))
        sequence = int(headers.get("cloudEvents_sequence", "0"))
        if sequence != event["sequence"]:
            failures.append("sequence of %s: %r, expected %r" % (event["id"], sequence, event["sequence"]))
        stream = (event["aggregate_type"], event["aggregate_id"])
        if sequence <= seen.get(stream, 0):
            failures.append("stream %r: sequence %d after %d" % (stream, sequence, seen[stream]))
        seen[stream] = max(sequence, seen.get(stream, 0))
        if received == len(expected):
            break
    connection.close()
    if failures:
        for failure in failures:
            print("failed:", failure, flush=True)
        sys.exit(1)
    print("ok %d" % received, flush=True)


if __name__ == "__main__":
    main()
