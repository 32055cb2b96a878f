"""A stand-in for Slurm's ``srun -n N CMD...`` on one machine (no Slurm needed).

``python fake_srun.py -n N CMD...`` starts N copies of CMD with the environment srun
gives its tasks (``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODEID``,
``SLURM_STEP_NUM_TASKS``, ``SLURM_NTASKS``, ``SLURM_STEP_ID``) on top of its own, as
srun's default ``--export=ALL`` does, plus ``MASTER_ADDR``/``MASTER_PORT`` for the
job's ``init_process_group`` (a job under Slurm sets them itself). No torchrun
variable is set. It forwards SIGTERM and SIGINT to the tasks and exits with the
first non-zero exit code, else 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys


def main() -> int:
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[0] != "-n":
        print("usage: fake_srun.py -n N CMD...", file=sys.stderr)
        return 2
    ntasks, cmd = int(argv[1]), argv[2:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    tasks = []
    for rank in range(ntasks):
        env = {
            **base,
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_STEP_NUM_TASKS": str(ntasks),
            "SLURM_NTASKS": str(ntasks),
            "SLURM_STEP_ID": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        tasks.append(subprocess.Popen(cmd, env=env))

    def forward(signum: int, _frame: object) -> None:
        for t in tasks:
            if t.poll() is None:
                t.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [t.wait() for t in tasks]
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main())
