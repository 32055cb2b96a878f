"""Launch a job as two torchrun "nodes" on this one host: what a 2-node job's launchers do.

    python two_nodes.py NPROC_PER_NODE SCRIPT [ARGS...]

Starts ``torch.distributed.run --nnodes 2 --node-rank K`` for K = 0 and 1 with a
static rendezvous on 127.0.0.1, so each worker gets the ``GROUP_RANK`` (node index)
and ``LOCAL_RANK`` torchrun sets on a real node; exits with the first non-zero code.
"""

from __future__ import annotations

import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> int:
    nproc, script, *args = sys.argv[1:]
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={k}",
                f"--nproc-per-node={nproc}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                script,
                *args,
            ]
        )
        for k in (0, 1)
    ]
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main())
