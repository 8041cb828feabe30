"""A LangGraph agent that asks a human before it acts, and is resumed by another process.

The first process runs the graph until its interrupt ("may I send this email?") and exits.
A second process, started later, finds the thread waiting in kvstore, answers, and the graph
runs to its end. Checkpoints live in the ``checkpoint`` category of a PersistenceManager
(SQLite under DATA_DIR): no expiry, and any number of processes may share the file.

    python examples/langgraph_agent.py [DATA_DIR]      # needs: pip install 'kvstore[langgraph]' langgraph
"""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import tempfile
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from kvstore import PersistenceManager
from kvstore.contrib.langgraph import KVStoreSaver

CONFIG = {"persistence": {"categories": {"checkpoint": {"store": "database"}}}}
THREAD = {"configurable": {"thread_id": "support-42"}}


class State(TypedDict):
    request: str
    log: Annotated[list[str], operator.add]


def draft(state: State) -> dict[str, Any]:
    return {"log": [f"drafted a reply to {state['request']!r}"]}


def approve(state: State) -> dict[str, Any]:
    answer = interrupt({"question": "may I send this email?", "draft": state["log"][-1]})
    return {"log": [f"human said {answer!r}"]}


def send(state: State) -> dict[str, Any]:
    sent = state["log"][-1].endswith("'yes'")
    return {"log": ["email sent" if sent else "email discarded"]}


def graph(pm: PersistenceManager) -> Any:
    builder = StateGraph(State)
    for name, node in (("draft", draft), ("approve", approve), ("send", send)):
        builder.add_node(name, node)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "approve")
    builder.add_edge("approve", "send")
    builder.add_edge("send", END)
    return builder.compile(checkpointer=KVStoreSaver(pm, category="checkpoint"))


def start() -> None:
    """First process: run until the graph asks its question."""
    with PersistenceManager.from_config(CONFIG) as pm:
        result = graph(pm).invoke({"request": "refund order 1017", "log": []}, THREAD)
        print(f"[pid {os.getpid()}] waiting for a human: {result['__interrupt__'][0].value}")


def resume(answer: str) -> None:
    """A later process: find the waiting thread in kvstore, answer, run to the end."""
    with PersistenceManager.from_config(CONFIG) as pm:
        agent = graph(pm)
        waiting = agent.get_state(THREAD)
        print(f"[pid {os.getpid()}] found thread waiting at {waiting.next}")
        final = agent.invoke(Command(resume=answer), THREAD)
        print(f"[pid {os.getpid()}] done: {final['log']}")
        history = list(agent.get_state_history(THREAD))
        print(f"checkpoints: {len(history)}, latest step {history[0].metadata['step']}")
        print("checkpoint keys:", sum(1 for _ in pm.keys("checkpoint:")))


def main(data_dir: str) -> None:
    env = dict(os.environ, KVSTORE_DATA_DIR=data_dir)
    for step in (["start"], ["resume", "yes"]):  # two separate processes, one after the other
        subprocess.run([sys.executable, __file__, data_dir, *step], env=env, check=True)


if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="kvstore-langgraph-")
    if len(sys.argv) > 2:
        os.environ["KVSTORE_DATA_DIR"] = folder
        if sys.argv[2] == "start":
            start()
        else:
            resume(sys.argv[3])
    else:
        main(folder)
