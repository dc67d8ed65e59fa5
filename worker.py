"""Starts Vespa from Vast's own start_server.sh.

With PYWORKER_REPO pointing at Vespa's repository, Vast's bootstrap clones it and runs
`python3 -m worker` in the clone. This runs the repository's start_server.sh (TLS
certificate, the vespa binary, `vespa worker`), forwards SIGTERM and SIGINT to it so the
worker drains, and exits with its code. Standard library only, Python 3.8+.
"""

import os
import signal
import subprocess
import sys


def main() -> int:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "start_server.sh")
    child = subprocess.Popen(["bash", script])

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()  # retried after a handled signal (PEP 475)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
