"""An agent lab: an append-only JSON Lines transcript per thread, SQLite checkpoints, clean()
per thread, and a run that resumes from its latest checkpoint after being SIGKILLed.

    python examples/agent_lab.py [DATA_DIR]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time

from kvstore import PersistenceManager

CONFIG = {"persistence": {"categories": {
    "transcript": {"store": "file"},          # <data>/files/transcript:<thread>.jsonl: tail -f it
    "checkpoint": {"store": "database"},      # SQLite
}}}
STEPS = 40


def run(thread: str, slow: float = 0.0) -> int:
    """Run the agent from its latest checkpoint to the end; returns the step it started at."""
    with PersistenceManager.from_config(CONFIG) as pm:
        transcript = pm.log(f"transcript:{thread}")
        state = pm.load(f"checkpoint:{thread}", default={"step": 0, "memory": []})
        start = state["step"]
        for step in range(start, STEPS):
            # Log first, then checkpoint: a kill in between re-runs this step on resume, so a
            # step may appear twice in the transcript, never be missing from it.
            transcript.append({"step": step, "thought": f"thinking about step {step}"})
            state = {"step": step + 1, "memory": (state["memory"] + [step])[-5:]}
            pm.save(f"checkpoint:{thread}", state)
            time.sleep(slow)
        return start


def clean(thread: str) -> None:
    """Forget a thread: its transcript and its checkpoint."""
    with PersistenceManager.from_config(CONFIG) as pm:
        pm.log(f"transcript:{thread}").delete()
        pm.delete(f"checkpoint:{thread}")


def main(data_dir: str) -> None:
    os.environ["KVSTORE_DATA_DIR"] = data_dir
    child = mp.Process(target=run, args=("t1", 0.02))
    child.start()
    time.sleep(0.4)
    os.kill(child.pid, signal.SIGKILL)  # the agent dies mid-run
    child.join()
    with PersistenceManager.from_config(CONFIG) as pm:
        killed_at = pm.load("checkpoint:t1")["step"]
    print(f"killed at step {killed_at} of {STEPS}")
    resumed_from = run("t1")
    print(f"resumed from step {resumed_from}")
    with PersistenceManager.from_config(CONFIG) as pm:
        steps = [record["step"] for _, record in pm.log("transcript:t1").read()]
        print(f"transcript: {len(steps)} entries")
        print(f"every step present: {sorted(set(steps)) == list(range(STEPS))}")
        print(f"checkpoint: step {pm.load('checkpoint:t1')['step']}")
    clean("t1")
    with PersistenceManager.from_config(CONFIG) as pm:
        print(f"after clean: {list(pm.logs('transcript:'))} {pm.exists('checkpoint:t1')}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="agent-lab-"))
