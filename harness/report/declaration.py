"""What a study declared before its runs (what it compares, what it tunes per method, its margin), written
on the sweep's parent run as tags and read back from there by the report; and the run table's names for it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


def label(factor: str) -> str:
    """A run table's column as a study names it: ``param:optimizer.lr`` -> ``optimizer.lr``."""
    return factor[len("param:") :] if factor.startswith("param:") else factor


@dataclass
class Declaration:
    compare: list[str]
    tune: list[str] = field(default_factory=list)
    run_id: str | None = None  # the sweep parent that declared it
    overrides: str = ""  # that sweep's command-line overrides (a cut budget shows here)
    margin: object = None  # study.margin: a number, 'N%', a mapping metric -> either, or None
    post_hoc: bool = False  # the margin was given to the report, after the runs, not declared by the sweep
    declared: dict | None = None  # the sweep's whole declaration (space, seeds, budget), if it logged one
    declaration_hash: str = ""

    @classmethod
    def from_tags(cls, tags: dict[str, str], run_id: str | None = None) -> Declaration | None:
        compare = json.loads(tags.get("harness.compare") or "[]")
        margin = json.loads(tags["harness.margin"]) if tags.get("harness.margin") else None
        if not compare:
            return None
        declared = json.loads(tags["harness.declaration"]) if tags.get("harness.declaration") else None
        tune = list(json.loads(tags.get("harness.tune") or "[]"))
        return cls(
            list(compare),
            tune,
            run_id,
            tags.get("overrides", ""),
            margin,
            False,
            declared,
            tags.get("harness.declaration_hash", ""),
        )

    def declared_text(self, metrics: list[str], sweeps: list[Declaration] | None = None) -> str:
        """What the study declared before its runs, for the top of the report. ``sweeps``: the declarations of
        the study's sweeps, oldest first (selection, then confirmation rounds); the first one's declaration
        and budget are stated, the search space of its selection sweeps, and the seeds of every sweep."""
        metric = ", ".join(metrics) or "the task's primary metric"
        if self.declared is None:
            return (
                f"{self.text()}; metric {metric}; this sweep logged no search space, seeds or budget "
                f"(it predates declarations): its overrides say what it ran"
            )
        sweeps = [d for d in (sweeps or [self]) if d.declared is not None] or [self]
        declared = [d.declared or {} for d in sweeps]
        first = declared[0]
        stage = lambda d: "confirmation" if d.get("stage") == "confirm" else "selection"  # noqa: E731
        selection = [d for d in declared if stage(d) == "selection"] or [first]
        spaces = list(dict.fromkeys(search_space(d.get("space", {})) for d in selection))
        space = (
            spaces[0]
            if len(spaces) == 1
            else f"in {len(spaces)} selection sweeps: " + "; ".join(f"({i}) {s}" for i, s in enumerate(spaces, 1))
        )
        seeds = list(dict.fromkeys(f"{seed_list(d.get('seeds'))} ({stage(d)})" for d in declared))
        more = f", the first of the study's {len(sweeps)} sweeps" if len(sweeps) > 1 else ""
        return (
            f"at the sweep's start, before its runs (declaration {sweeps[0].declaration_hash} on parent run "
            f"{sweeps[0].run_id}{more}): {self.text()}; metric {metric} (validation for selection, test for the "
            f"verdicts); seeds {', '.join(seeds)}; budget "
            + (
                f"{first['steps']} optimizer steps per run (steps: the epochs each batch size takes)"
                if first.get("steps")
                else f"{first.get('epochs')} epochs per run"
            )
            + f"; search space {space}"
            + (
                f"; then the selected settings on fresh seeds (study.stage=confirm), at most {self.rounds} round(s)"
                if any(stage(d) == "confirmation" for d in declared)
                else ""
            )
        )

    @property
    def rounds(self) -> int:
        """The declared cap on confirmation rounds (study.rounds; 1 where none was declared)."""
        try:
            return max(1, int((self.declared or {}).get("rounds", 1)))
        except (TypeError, ValueError):
            return 1

    def tags(self) -> dict[str, str]:
        out = {"harness.compare": json.dumps(self.compare), "harness.tune": json.dumps(self.tune)}
        return out | ({"harness.margin": json.dumps(self.margin)} if self.margin is not None else {})

    def text(self) -> str:
        tuned = ", ".join(self.tune) if self.tune else "nothing (each method has one setting)"
        return f"compares {', '.join(self.compare)}; tunes {tuned} per method; {self.margin_text()}"

    def margin_text(self) -> str:
        if self.margin is None:
            return "no margin declared, so no method can be shown equivalent or non-inferior (better / worse / undecided only)"
        shown = ", ".join(f"{k}: {v}" for k, v in self.margin.items()) if isinstance(self.margin, dict) else str(self.margin)
        when = (
            "given to the report after the runs (post hoc: read its equivalences as exploratory)"
            if self.post_hoc
            else "declared by the sweep before its runs"
        )
        return f"margin {shown} ({when})"


def seed_list(seeds: object) -> str:
    """A sweep's seeds as declared, a run of consecutive integers shortened: ``5,6,...,14`` -> ``5-14``."""
    parts = [p.strip() for p in str(seeds).split(",")]
    if len(parts) > 2 and all(p.lstrip("-").isdigit() for p in parts):
        numbers = [int(p) for p in parts]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(parts)


def search_space(space: dict) -> str:
    """A sweep's declared space as a report states it: the knobs that change results, without those shown
    apart (seeds, the budget) and those that change none (where the data and the store are, threads,
    progress, the study's own knobs: ``Role.hash`` in the schema)."""

    def kept(key: str) -> bool:
        return key.lstrip("+~") not in ("seed", "epochs", "steps", "experiment") and changes_results(key)

    return ", ".join(f"{k}={v}" for k, v in sorted(space.items()) if kept(k)) or "(none)"


def changes_results(key: str) -> bool:
    """Whether an override's key names a knob that changes a run's result (``Role.hash`` in the schema): not where
    the data and the store are, threads, progress, the study's own knobs (study.*, tracking.*) or Hydra's (the
    launcher). A key the schema does not know (a user's own) counts as one that does."""
    from harness.config.schema import role

    key = key.lstrip("+~")
    if key.startswith("hydra"):
        return False
    try:
        return role(key).hash
    except KeyError:
        return True
