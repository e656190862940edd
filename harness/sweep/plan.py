"""What a sweep will run, known before it writes anything: its swept keys and groups, its number of
jobs, its experiment, and the checks that refuse a bad sweep in one line (a choice that does not
exist, a bad launcher or sweeper knob, an objective its runs do not log)."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf


def swept_groups(overrides: list[str]) -> set[str]:
    """Config keys/groups that the command line sweeps over (task=a,b -> {'task'})."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()}


def sweep_overrides(hydra_cfg) -> list:
    """The sweep's parsed overrides: the study's grid (hydra.sweeper.params), then the command line's.
    Parsed with the running Hydra's config loader, as its sweeper does: ``task=glob(*)`` lists a group's options."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().hydra.config_loader if GlobalHydra.instance().is_initialized() else None
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    return OverridesParser.create(config_loader=loader).parse_overrides(params + list(hydra_cfg.overrides.task))


def count_jobs(hydra_cfg) -> int | None:
    """How many jobs this sweep launches, computed as Hydra's basic sweeper will (None if unknown)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        grid = len(BasicSweeper.split_arguments(sweep_overrides(hydra_cfg), None)[0])
        trials = hydra_cfg.sweeper.get("n_trials")  # hydra/sweeper=search: each grid point once per trial
        return grid * trials if isinstance(trials, int) and not isinstance(trials, bool) else grid
    except Exception:  # another sweeper (optuna, ...): unknown
        return None


def check_sweep(config: DictConfig) -> None:
    """What Hydra would refuse in a sweep's jobs is one line before the sweep writes anything: Hydra
    composes the jobs only when it launches them, after the parent run is made. A swept option that
    does not exist (``optimizer=adam,nosuch``) is named with the values it came from; then one job of
    each combination of swept group choices is composed (the jobs differ in nothing else Hydra checks:
    an unknown key, a bad value for a typed one), through the sweep's composer, which keeps them for
    the sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from harness import HarnessError
    from harness.config.compose import one_line

    if not GlobalHydra.instance().is_initialized():
        return
    check_plugins(config)
    loader = GlobalHydra.instance().hydra.config_loader
    try:
        parsed = sweep_overrides(config.hydra)
        jobs = BasicSweeper.split_arguments(parsed, None)[0]
    except Exception:  # another sweeper's syntax: Hydra checks its jobs as they come
        return
    groups = set()
    for o in parsed:
        if o.is_delete() or o.is_hydra_override() or o.package is not None or not loader.repository.group_exists(o.key_or_group):
            continue
        groups.add(o.key_or_group)
        if o.is_discrete_sweep():
            options = loader.repository.get_group_options(o.key_or_group)
            for value in o.sweep_string_iterator():
                if value not in options and value != "null":
                    raise HarnessError(
                        f"{o.key_or_group}={value} is not an option (in {o.input_line}); available: {', '.join(sorted(options))}"
                    )
    composed, first = set(), None
    for job in jobs:
        choices = tuple(item for item in job if item.split("=", 1)[0] in groups)
        if choices not in composed:
            composed.add(choices)
            try:
                cfg = loader.load_sweep_config(config, list(job))
            except HydraException as e:
                raise HarnessError(one_line(e)) from None
            first = first if first is not None else cfg
    objective = (config.hydra.get("sweeper") or {}).get("objective")
    if objective and first is not None and str(config.hydra.sweeper.get("_target_", "")).startswith("hydra_plugins.harness_"):
        check_objective(objective, first)


def check_objective(objective: str, cfg: DictConfig) -> None:
    """A search's objective must be a metric its runs log (``val/nosuch`` ran the whole search for nothing)."""
    from omegaconf import open_dict

    from harness import HarnessError
    from harness.config.checks import check_config
    from harness.engine.build import metric_names

    job = cfg.copy()
    with open_dict(job):
        choices = dict(job.hydra.runtime.choices)
        del job["hydra"]
    names = {g: choices.get(g) or "?" for g in ("task", "loss", "optimizer", "schedule")}
    try:
        check_config(job, names)
        logged = metric_names(job, names)
    except HarnessError:
        return  # the job itself is refused as it runs, with its own line
    if objective not in logged:
        raise HarnessError(
            f"hydra.sweeper.objective={objective} is not a metric these runs log; they log "
            f"{', '.join(m for m in logged if not m.startswith('train/'))} (and train/ of each)"
        )


def check_plugins(config: DictConfig) -> None:
    """The harness's own launcher and sweeper check their knobs (``max_members=0``, ``n_trials=0``, a
    NaN search bound) here, before the parent run is made; other plugins check theirs as they start."""
    from hydra.utils import instantiate

    from harness import HarnessError

    for part in ("launcher", "sweeper"):
        node = config.hydra.get(part)
        if node is None or not str(node.get("_target_", "")).startswith("hydra_plugins.harness_"):
            continue
        try:
            plugin = instantiate(node, _convert_="all")
        except Exception as e:
            raise HarnessError(f"hydra.{part}: {str(e.__cause__ or e).splitlines()[0]}") from None
        plugin.check()


def swept_keys(hydra_cfg) -> list[str]:
    """The keys a sweep varies (more than one value, from the command line or the study's grid), in order."""
    try:
        parsed = sweep_overrides(hydra_cfg)
    except Exception:  # another sweeper's syntax: name runs by all their overrides
        return []
    keys = []
    for o in parsed:
        if not o.is_sweep_override() or (o.is_discrete_sweep() and len(list(o.sweep_string_iterator())) < 2):
            continue
        key = o.get_key_element().lstrip("+~")
        if key not in keys:
            keys.append(key)
    return keys + [k for k in (hydra_cfg.sweeper.get("space") or {}) if k not in keys]  # hydra/sweeper=search


def study_tags(config: DictConfig) -> dict[str, str]:
    """The study's declaration (what it compares, what it tunes per method) for the parent run, where the report reads it."""
    study = config.get("study") or {}
    compare, tune = list(study.get("compare") or []), list(study.get("tune") or [])
    if not compare:
        return {}
    tags = {"harness.compare": json.dumps(compare), "harness.tune": json.dumps(tune)}
    margin = study.get("margin")
    if margin is not None:  # declared before the runs: the report reads it from here
        tags["harness.margin"] = json.dumps(OmegaConf.to_container(margin) if isinstance(margin, DictConfig) else margin)
    declared = declaration(config, compare, tune, margin)
    tags["harness.declaration"] = json.dumps(declared, sort_keys=True)[:5000]
    tags["harness.declaration_hash"] = hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()[:16]
    return tags


def declaration(config: DictConfig, compare: list, tune: list, margin) -> dict:
    """What a study declares before its runs, as the sweep starts: the methods, the tuned knobs, the margin,
    the search space (the sweeper's grid or search space, the seeds among it) and the budget (epochs, or steps)."""
    hydra = config.get("hydra")
    sweeper = hydra.sweeper if hydra is not None else {}
    space = {str(k): str(v) for part in ("params", "space") for k, v in (sweeper.get(part) or {}).items()}
    for o in list(hydra.overrides.task) if hydra is not None else []:  # the command line's sweeps and values win
        key, _, value = str(o).partition("=")
        space[key.lstrip("+~")] = value
    steps = space.get("steps", config.get("steps"))
    return {
        **({"steps": str(steps)} if steps is not None and str(steps) != "null" else {}),  # a budget in steps instead
        "compare": compare,
        "tune": tune,
        "margin": OmegaConf.to_container(margin) if isinstance(margin, DictConfig) else margin,
        "space": space,
        "seeds": space.get("seed", str(config.get("seed"))),
        "stage": str((config.get("study") or {}).get("stage", "select")),
        "rounds": int((config.get("study") or {}).get("rounds", 1)),
        "epochs": space.get("epochs", str(config.get("epochs"))),
    }
