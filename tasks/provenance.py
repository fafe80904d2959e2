"""What a run's outputs were made with: each step's configuration and the run that made it, and the check that keeps
a rerun from a recorded run from describing its reused outputs with settings they were not made with.

Each step's record in a run's manifest holds `config`, what its cache key covers (its sections by name, and what
the run derives for it from other sections: validate's text rule, promote's model), and `made_by`, the run whose
execution computed the output (a cache entry remembers it). `rnnflow run --from STEP --run ID` and `rnnflow step
STEP --run ID` take the steps before STEP from run ID as they were made: the configuration starts from that run's,
and `--set`, `--preset` or `--config` may change STEP's and later steps' keys only (check_reuse), so the new run's
manifest, report and `rnnflow runs` line say what its reused outputs really are.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import ValidationError

from tasks.config import ConfigError, RunConfig, key_config
from tasks.config_reporting import without_reporting
from tasks.steps import STEPS, WHOLE_CONFIG, step as step_spec


def step_config(name: str, config: RunConfig) -> dict[str, Any]:
    """The configuration step `name` is made with, keyed by section ("encode": {...}), as its cache key covers it."""
    spec = step_spec(name)
    sections = without_reporting(config.as_dict()) if spec.sections == (WHOLE_CONFIG,) else {section: config.section(section) for section in spec.sections}
    made_with = key_config(sections)
    if spec.derived is not None:
        made_with.update(spec.derived(config))
    return made_with


def recorded_step_config(manifest: dict[str, Any], name: str) -> dict[str, Any] | None:
    """What a recorded run's step was made with: its own record, or for runs recorded before steps kept one, the run's
    whole configuration (which then made every step it ran); None when neither can be read."""
    entry = (manifest.get("steps") or {}).get(name) or {}
    if isinstance(entry.get("config"), dict):
        return entry["config"]
    try:
        return step_config(name, RunConfig.model_validate(manifest.get("config") or {}))
    except (ValidationError, TypeError, ValueError):
        return None


def recorded_maker(manifest: dict[str, Any], name: str) -> str | None:
    """The run that computed a recorded step's output: its record's made_by, or for older records the run it was
    reused from, or the run itself when it computed the step (a cached step of an older record: unknown, None)."""
    entry = (manifest.get("steps") or {}).get(name) or {}
    if entry.get("made_by"):
        return str(entry["made_by"])
    if entry.get("reused_from"):
        return str(entry["reused_from"])
    return str(manifest.get("run_id")) if entry.get("status") == "completed" else None


def made_with(manifest: dict[str, Any], name: str, recorded: Callable[[str], dict[str, Any] | None], hops: int = 20) -> dict[str, Any]:
    """{"made_by", "config"} of a recorded step; a step an older run reused (recorded before steps kept their configuration,
    when the run's own configuration could differ from the reused output's) is read from the run it came from (recorded(id))."""
    entry = (manifest.get("steps") or {}).get(name) or {}
    if "config" not in entry and entry.get("reused_from") and hops:
        source = recorded(str(entry["reused_from"]))
        if source is not None and name in (source.get("steps") or {}):
            return made_with(source, name, recorded, hops - 1)
    return {"made_by": recorded_maker(manifest, name), "config": recorded_step_config(manifest, name)}


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs between two configurations."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[tuple[str, Any, Any]] = []
        for key in sorted(set(old) | set(new), key=str):
            found += changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [(prefix.rstrip(".").removeprefix("config."), old, new)]


def check_reuse(source: dict[str, Any], config: RunConfig, reuse: list[str], first: str) -> None:
    """Refuse, in one sentence, a configuration that changes what a step reused from run `source` was made with.

    first is the step the command recomputes from; the message names the keys and the rerun that recomputes them.
    """
    run_id = source.get("run_id")
    for name in reuse:
        if step_spec(name).optional and name not in (source.get("steps") or {}):
            continue  # a run from before the step: the rerun goes on without its output
        recorded = recorded_step_config(source, name)
        if recorded is None:
            raise ConfigError(
                f"Run {run_id}'s recorded configuration cannot be read, so its {name} output cannot be reused as made: "
                f"rerun the whole pipeline with 'rnnflow run'."
            )
        changes = changed_keys(recorded, step_config(name, config))
        if changes:
            shown = "; ".join(f"{key} {_shown(old)} there, {_shown(new)} here" for key, old, new in changes[:3])
            more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
            raise ConfigError(
                f"Run {run_id}'s {name} output was made with other settings than this command gives ({shown}{more}), and a rerun "
                f"from {first} takes it as it was made: recompute it with 'rnnflow run --from {name} --run {run_id} ...', "
                f"or leave those keys as run {run_id} had them."
            )


def _shown(value: Any) -> str:
    return "unset" if value is None else str(value)


def reused_steps(first: str) -> list[str]:
    """The steps a rerun from `first` takes from the recorded run."""
    return list(STEPS[: STEPS.index(first)])


def rerunnable_steps() -> frozenset[str]:
    """The steps `rnnflow step NAME --run ID` can recompute: handed to the store's file checks (verify_run_files,
    require_run_files), which name that fix for a damaged file of one of them and know no step table themselves."""
    return frozenset(name for name in STEPS if step_spec(name).rerun_alone)
