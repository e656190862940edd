"""Each job of a sweep composed once, and cheaply.

Hydra composes every job of a sweep twice in the launching process (the sweeper validates the
batch, then the launcher composes each job again), at ~0.08 s a composition here. ``ComposeOnce``
wraps Hydra's config loader for the whole sweep (``install``, called by the sweep callback before
the sweeper is built, so that every launcher gets it):
- a job's config composed for the validation is handed to the launcher (composed once);
- jobs that differ from an already composed job only in plain values (``seed=3``,
  ``optimizer.lr=0.1``: keys that exist in the config and are not config groups) are derived from
  it: a copy with those values set as Hydra sets them (``_apply_overrides_to_config``), and its
  ``hydra.overrides.task`` and ``override_dirname`` rewritten. Anything else (a group choice, ``+``,
  ``~``, a ``hydra.`` override) is composed in full. tests/test_compose.py checks derived configs
  against full compositions.
"""

from __future__ import annotations

import copy
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

MEMO_SIZE = 1024  # composed configs kept for the launcher's second call (more are derived again, cheaply)


class ComposeOnce:
    def __init__(self, loader):
        self._loader = loader
        self._memo: dict[tuple, DictConfig] = {}
        self._templates: dict[tuple, DictConfig] = {}

    def __getstate__(self) -> dict:  # a launcher that ships the loader to workers ships no cache
        return {"_loader": self._loader, "_memo": {}, "_templates": {}}

    def __getattr__(self, name: str) -> Any:
        loader = self.__dict__.get("_loader")
        if loader is None:  # a copy or an unpickled one, before its state is set
            raise AttributeError(name)
        return getattr(loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = tuple(sweep_overrides)
        if key in self._memo:
            cfg = self._memo.pop(key)
            if OmegaConf.is_missing(cfg.hydra.job, "id"):  # as composed: only the sweeper's validation saw it
                return cfg
            # a launcher has it (it set hydra.job.id): the same job twice in a sweep (seed=0,0), or a sweeper
            # that does not validate; the second gets its own config, not the first one's object
        cfg = self._derive(master_config, list(sweep_overrides))
        if len(self._memo) < MEMO_SIZE:  # when full, keep what is there: evicting the oldest would evict, in a batch
            self._memo[key] = cfg  # larger than the memo, each job just before the launcher asks for it
        return cfg

    def _derive(self, master: DictConfig, overrides: list[str]) -> DictConfig:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.override_parser.types import OverrideType

        parsed = OverridesParser.create().parse_overrides(overrides)
        values = [
            o
            for o in parsed
            if o.type == OverrideType.CHANGE
            and o.package is None
            and not o.is_hydra_override()
            and not isinstance(o.value(), dict)
            and not self._loader.repository.group_exists(o.key_or_group)
        ]
        plain = {id(o) for o in values}
        structure = tuple(f"{o.key_or_group}=" if id(o) in plain else o.input_line for o in parsed)
        template = self._templates.get(structure)
        if template is None or not all(_is_leaf(template, o.key_or_group) for o in values):
            cfg = self._loader.load_sweep_config(master, overrides)
            if all(_is_leaf(cfg, o.key_or_group) for o in values):
                self._templates[structure] = copy.deepcopy(cfg)
            return cfg
        return _with_values(template, master, parsed, values)


def _is_leaf(cfg: DictConfig, key: str) -> bool:
    node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    return node is not None and not isinstance(node, DictConfig) or _exists_as_null(cfg, key)


def _exists_as_null(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    child = node._get_node(leaf) if isinstance(node, DictConfig) and leaf in node else None
    return child is not None and child._is_none()


def _with_values(template: DictConfig, master: DictConfig, parsed: list, values: list) -> DictConfig:
    """A copy of a composed job with other plain values, as Hydra would have composed it."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

    cfg = copy.deepcopy(template)
    with read_write(cfg):
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in task]
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys
            )
    OmegaConf.copy_cache(from_config=master, to_config=cfg)
    return cfg


def one_line(e: Exception) -> str:
    """Hydra's composition errors (unknown option or key, bad override syntax) as one line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("\t")]
    message = lines[0] if lines else type(e).__name__
    options = getattr(e, "options", None)
    if options:
        message += f"; available: {', '.join(options)}"
        if "Could not find 'task/" in message or "Could not find 'experiment/" in message:
            message += " (a task or study of your own: add hydra.searchpath=[file://YOUR_CONF_DIR], see docs/own-task.md)"
    elif message.startswith("Error merging override") and e.__cause__ is not None:
        message += f": {str(e.__cause__).splitlines()[0]}"  # the reason: "Value 'maybe' is not a valid bool (type str)"
    elif len(lines) > 1 and lines[1].startswith("To append"):
        message += f" No such key in the config (to add one: {lines[1].split(' use ', 1)[-1]})"
    return message.replace("In 'config': ", "")


def install() -> None:
    """Wrap the running Hydra's config loader, before the sweeper and launcher are built from it."""
    from hydra.core.global_hydra import GlobalHydra

    hydra = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    if hydra is not None and not isinstance(hydra.config_loader, ComposeOnce):
        hydra.config_loader = ComposeOnce(hydra.config_loader)
