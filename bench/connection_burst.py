#!/usr/bin/env python3
"""What a burst of concurrent connections leaves resident in `sqi ingest`.

Opens CONNECTIONS keep-alive connections at once, posts five 20-event batches
on each, closes them all, waits, and prints the ingest's RSS and anonymous RSS
before, with the connections open, and after. Run it a few times in a row:
the first burst sets the high-water mark, the later ones show whether it
stays. BENCHMARKS.md (soak) has the recipe and the figures.

usage: bench/connection_burst.py PORT PID [CONNECTIONS]   (default 256)
"""

import http.client
import json
import sys
import threading
import time
import uuid


def memory(pid: int) -> str:
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return f"RSS {fields['VmRSS']}, anonymous {fields['RssAnon']}"


def batch() -> str:
    now = int(time.time() * 1000)
    events = [
        {
            "event_id": str(uuid.uuid4()),
            "publisher": "burst.example",
            "type": "share",
            "channel": "facebook",
            "url": "https://burst.example/story/1",
            "ts": now,
        }
        for _ in range(20)
    ]
    return json.dumps({"events": events})


def main() -> None:
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    opened, failures, lock = [], [], threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(5):
            connection.request("POST", "/v1/events", batch(), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                with lock:
                    failures.append(response.status)
        with lock:
            opened.append(connection)

    print(f"before:                  {memory(pid)}")
    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(2)
    print(f"{len(opened)} connections open: {memory(pid)}")
    for connection in opened:
        connection.close()
    time.sleep(15)
    print(f"15 s after closing:      {memory(pid)}")
    if failures:
        sys.exit(f"{len(failures)} requests were not accepted (statuses {sorted(set(failures))})")


if __name__ == "__main__":
    main()
