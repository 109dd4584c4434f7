"""Two processes x one CPU device (gloo collectives) train exactly like one process.

Spawns tests/multihost_worker.py twice on 127.0.0.1 with a free port; each
feeds its half of fixed global batches for 3 AdamW steps under shard_map over
the 2-process mesh. Process 0's parameters must equal (1e-5) those of a single
process stepping through the same global batches. Bounded by subprocess
timeouts so a stuck collective fails the test instead of hanging CI.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_fixtures import single_device_reference

WORKER = Path(__file__).resolve().parent / "multihost_worker.py"
STEPS = 3
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path, data_root):
    port = _free_port()
    env = dict(os.environ, FOLDNET_DATA=str(data_root), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    out = tmp_path / "params.npz"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "--port", str(port), "--process-id", str(i), "--num-processes", "2",
             "--mode", "shard_map", "--steps", str(STEPS), "--out", str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    # The single-process reference runs meanwhile (cached if test_parallel already ran it).
    ref = single_device_reference(str(data_root), STEPS)
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        logs = [p.communicate()[0] for p in procs]
        pytest.fail("multi-process workers timed out:\n" + "\n----\n".join(logs))
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"worker {i} exited {p.returncode}:\n{log}"
    # Both processes saw the same (pmean-ed) global loss every step.
    loss_lines = [[l.split("loss ")[1] for l in log.splitlines() if " loss " in l] for log in logs]
    assert len(loss_lines[0]) == STEPS and loss_lines[0] == loss_lines[1], logs
    assert float(loss_lines[0][-1]) == pytest.approx(ref["losses"][-1], rel=1e-5)

    got = np.load(out)
    assert set(got.files) - {"loss"} == set(ref["flat"])
    for k, v in ref["flat"].items():
        np.testing.assert_allclose(got[k], v, atol=1e-5, rtol=0, err_msg=k)


def test_settings_come_from_config_then_jax_env(monkeypatch):
    from foldnet.train.distributed import resolve_settings
    from foldnet.train.parallel import ParallelConfig

    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert resolve_settings(ParallelConfig(distributed=True)) == ("10.0.0.1:1234", 4, 3)
    cfg = ParallelConfig(distributed=True, coordinator_address="h:1", num_processes=2, process_id=0)
    assert resolve_settings(cfg) == ("h:1", 2, 0)
    monkeypatch.setenv("JAX_PROCESS_ID", "7")
    with pytest.raises(ValueError, match=r"process_id 7 is not in \[0, 4\)"):
        resolve_settings(ParallelConfig(distributed=True))
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        resolve_settings(ParallelConfig(distributed=True))
