"""A persona-evolution store: each generation saved whole, listed in order, the latest loaded,
and a transcript (a log) per generation.

    python examples/persona_evolution.py [DATA_DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field

from kvstore import PersistenceManager

CONFIG = {"persistence": {"categories": {
    "generation": {"store": "database"},          # whole persona per generation, permanent
    "transcript": {"store": "file"},              # one JSON Lines file per generation
}}}


@dataclass
class Persona:
    generation: int
    traits: dict[str, float]
    parents: list[int] = field(default_factory=list)


def generation_key(n: int) -> str:
    return f"generation:{n:06d}"  # zero-padded: sorted keys are generation order


def evolve(pm: PersistenceManager, parent: Persona) -> Persona:
    child = Persona(parent.generation + 1,
                    {k: round(v * 1.1, 3) for k, v in parent.traits.items()},
                    parents=[parent.generation])
    log = pm.log(f"transcript:gen-{child.generation}")
    log.append({"role": "system", "text": f"evolved from generation {parent.generation}"})
    log.append({"role": "persona", "text": f"my curiosity is now {child.traits['curiosity']}"})
    pm.save(generation_key(child.generation), child)
    return child


def latest(pm: PersistenceManager) -> Persona | None:
    last = None
    for last in pm.keys("generation:"):  # sorted: the last key is the newest generation
        pass
    return None if last is None else pm.load(last, as_type=Persona)


def main(data_dir: str) -> None:
    os.environ["KVSTORE_DATA_DIR"] = data_dir
    with PersistenceManager.from_config(CONFIG) as pm:
        current = latest(pm) or Persona(0, {"curiosity": 1.0, "patience": 0.5})
        if current.generation == 0:
            pm.save(generation_key(0), current)
        for _ in range(3):
            current = evolve(pm, current)
        generations = list(pm.keys("generation:"))
        print(f"generations: {len(generations)} ({generations[0]} .. {generations[-1]})")
        newest = latest(pm)
        assert newest is not None
        print(f"latest: generation {newest.generation}, traits {newest.traits}")
        transcript = pm.log(f"transcript:gen-{newest.generation}").read()
        print(f"transcript of generation {newest.generation}: {len(transcript)} records, "
              f"first: {transcript[0][1]['text']!r}")
        print(f"transcripts: {', '.join(pm.logs('transcript:'))}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="persona-"))
