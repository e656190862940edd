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

    def declared_text(self, metrics: list[str]) -> str:
        """What the sweep declared before its runs, for the top of the report."""
        metric = ", ".join(metrics) or "the task's primary metric"
        if self.declared is None:
            return (
                f"{self.text()}; metric {metric}; this sweep logged no search space, seeds or budget "
                f"(it predates declarations): its overrides say what it ran"
            )
        space = ", ".join(f"{k}={v}" for k, v in sorted(self.declared.get("space", {}).items())) or "(none)"
        return (
            f"at the sweep's start, before its runs (declaration {self.declaration_hash} on parent run {self.run_id}): "
            f"{self.text()}; metric {metric} (validation for selection, test for the verdicts); "
            f"seeds {self.declared.get('seeds')}; budget "
            + (
                f"{self.declared['steps']} optimizer steps per run (steps: the epochs each batch size takes)"
                if self.declared.get("steps")
                else f"{self.declared.get('epochs')} epochs per run"
            )
            + f"; search space {space}"
            + (
                f"; a confirmation sweep (study.stage=confirm: the selected settings on fresh seeds, at most {self.rounds} round(s))"
                if self.declared.get("stage") == "confirm"
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
