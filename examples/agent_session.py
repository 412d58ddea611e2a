"""An agent's session in a task: a shell to work in, a service it runs, reached from the host.

    python examples/agent_session.py [ENVIRONMENT]

What a coding agent does in a terminal, through the SDK (the CLI's ``pyro task shell`` and
``pyro task service``, and the MCP ``task_shell_*``/``task_service_*`` tools are the same
calls): it opens a shell and writes a page, starts a web server as a named service that
pyro waits for, and the host reaches it on 127.0.0.1 through a published port. An edit made
in the shell shows up in the next request; the service's log shows both. debian:12 has no
python3, so the server is a few lines of Perl.
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.request

from pyro import Pyro
from pyro.errors import PyroError

GUEST_PORT = 8000
#: Serves site/index.html to every request, logging each request line.
SERVER = (
    "use IO::Socket::INET; $| = 1;"
    f" $s = IO::Socket::INET->new(LocalPort => {GUEST_PORT}, Listen => 5, ReuseAddr => 1)"
    ' or die "cannot listen: $!\\n"; print "listening\\n";'
    ' while ($c = $s->accept) { $r = <$c>; print "request: $r";'
    " while (($l = <$c>) && $l !~ /^\\r?\\n$/) {}"
    ' open(F, "<", "index.html"); { local $/; $b = <F> // "" } close F;'
    ' print $c "HTTP/1.0 200 OK\\r\\nContent-Length: " . length($b) . "\\r\\n\\r\\n$b"; close $c }'
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def shell_until(pyro: Pyro, task_id: str, marker: str, cursor: int) -> int:
    """Read the shell from ``cursor`` until ``marker`` shows up; returns the next cursor."""
    seen = ""
    deadline = time.monotonic() + 60
    while marker not in seen:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the shell never printed {marker!r}: {seen[-300:]!r}")
        got = pyro.read_task_shell(task_id, "dev", cursor, wait_s=5)
        seen, cursor = seen + got.text, got.cursor
    return cursor


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return f"{reply.status} {reply.read().decode().strip()}"


def main(environment: str = "debian:12") -> int:
    pyro = Pyro()
    host_port = free_port()
    try:
        task = pyro.create_task(environment, publish=[(host_port, GUEST_PORT)])
    except PyroError as exc:
        print(f"error: {exc.summary}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    try:
        pyro.open_task_shell(task.id, "dev")
        pyro.write_task_shell(
            task.id,
            "dev",
            "mkdir -p site && cd site && echo 'hello from the task' > index.html"
            " && echo made-$((40+2))\n",
        )
        cursor = shell_until(pyro, task.id, "made-42", 0)
        web = pyro.start_task_service(
            task.id, "web", ["perl", "-e", SERVER], cwd="site",
            ready_port=GUEST_PORT, ready_http="/",
        )  # fmt: skip
        print(f"task {task.id}: shell dev open, service web {web.state} (pid {web.pid})")
        url = f"http://127.0.0.1:{host_port}/"
        print(f"host GET 127.0.0.1 (published) -> {get(url)}")
        pyro.write_task_shell(
            task.id, "dev", "echo 'edited in the shell' > index.html; echo saved-$((6*7))\n"
        )
        shell_until(pyro, task.id, "saved-42", cursor)  # not the echo of the typing
        print(f"after an edit in the shell -> {get(url)}")
        log = pyro.logs_task_service(task.id, "web")
        requests = log.text.count("request: GET / ")
        print(f"service log: {requests} requests (the readiness check's, then the host's)")
        return 0
    except PyroError as exc:
        print(f"error: {exc.summary}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    finally:
        pyro.delete_task(task.id)  # ends its shells and services with it
        print(f"deleted {task.id}")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
