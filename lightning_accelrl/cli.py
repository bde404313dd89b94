"""The ``accelrl`` command.

``fit`` runs on LightningCLI (YAML configs, dotted overrides, ``--recipe NAME`` for the shipped recipes);
``recipes`` and ``--help`` answer without importing torch; ``evaluate`` loads a checkpoint and plays episodes.
User errors (bad values, unknown names, unreadable files) print one line and exit with code 2.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).parent / "recipes"

HELP = """usage: accelrl COMMAND [options]

Accelerated deep RL on PyTorch Lightning.

commands:
  fit --recipe NAME [overrides]    train a shipped recipe (see `accelrl recipes list`)
  fit --config FILE.yaml [...]     train from a LightningCLI config; dotted overrides such as
                                   --model.init_args.lr 3e-4 --data.num_envs 16 --trainer.devices 2
  recipes list                     the shipped recipes: name, algorithm, env, budget
  recipes show NAME                print a recipe's YAML (a starting point for your own config)
  evaluate --ckpt PATH|RUN_DIR [--episodes N] [--stochastic] [--seed S] [--num-envs K] [--video DIR]
           [--import MODULE ...] [--env ID | --env-factory MODULE:NAME] [--env-kwargs JSON]
                                   play N episodes with a checkpoint; prints one JSON line;
                                   --video DIR: one MP4 (GIF without ffmpeg) per episode;
                                   --import: your module defining the algorithm/network/env it names;
                                   --env/--env-factory: play another env (or your own env factory)
  plot RUN_DIR [RUN_DIR ...] --out curve.png [--x env_steps|wall_time|both]
           [--y episode_score_mean|eval/return_mean]
                                   learning curves; runs of one config (seeds): mean and min-max
  --version                        print the version

`accelrl fit --help` lists every option of the trainer, the algorithm and the data module.
"""


class UsageError(Exception):
    """A user mistake found by the CLI itself (exit code 2)."""


def _fail(message: str) -> int:
    first = " ".join(str(message).strip().splitlines()[:1]) or "invalid input"
    print(f"accelrl: error: {first}", file=sys.stderr)
    return 2


# ----- recipes (no torch) -------------------------------------------------------------------------------------
def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        names = recipe_names()
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"unknown recipe {name!r}.{hint} Available: {', '.join(names)} (accelrl recipes list)"
        )
    return path


def recipe_info(path: Path) -> dict[str, str]:
    import yaml

    text = path.read_text()
    cfg = yaml.safe_load(text) or {}
    model = cfg.get("model", {}) or {}
    data = cfg.get("data", {}) or {}
    data_args = data.get("init_args", data) if isinstance(data, dict) else {}
    desc = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
    budget = data_args.get("total_env_steps")
    return {
        "name": path.stem,
        "algorithm": str(model.get("class_path", "?")).rsplit(".", 1)[-1],
        "env": str(data_args.get("env", "?")),
        "budget": f"{budget:,} env steps" if isinstance(budget, int) else "?",
        "description": desc,
    }


def cmd_recipes(args: Sequence[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print("usage: accelrl recipes list | accelrl recipes show NAME")
        return 0 if args else 2
    if args[0] == "list":
        from rich.console import Console
        from rich.table import Table

        table = Table(title="accelrl recipes")
        columns = ("name", "algorithm", "env", "budget")
        for col in columns:
            table.add_column(col, no_wrap=True)
        for name in recipe_names():
            info = recipe_info(RECIPES_DIR / f"{name}.yaml")
            table.add_row(*(info[c] for c in columns))
        Console(width=None if sys.stdout.isatty() else 200).print(table)  # pipes: no truncated names
        return 0
    if args[0] == "show" and len(args) == 2:
        print(recipe_path(args[1]).read_text(), end="")
        return 0
    raise UsageError(f"unknown recipes command {' '.join(args)!r}: use `recipes list` or `recipes show NAME`")


def expand_recipe(args: list[str]) -> list[str]:
    """``--recipe NAME`` -> ``--config PATH`` (deterministic: DDP re-launches the command with the same argv)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--recipe" or arg.startswith("--recipe="):
            if "=" in arg:
                name = arg.split("=", 1)[1]
            elif i + 1 < len(args):
                name = args[i + 1]
                i += 1
            else:
                raise UsageError("--recipe needs a name (accelrl recipes list)")
            out += ["--config", str(recipe_path(name))]
        else:
            out.append(arg)
        i += 1
    return out


def _option_value(args: Sequence[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
        if arg == option and i + 1 < len(args):
            return args[i + 1]
    return None


def _check_config_files(args: Sequence[str]) -> None:
    for i, arg in enumerate(args):
        path = (
            arg.split("=", 1)[1]
            if arg.startswith("--config=")
            else (args[i + 1] if arg == "--config" and i + 1 < len(args) else None)
        )
        if path is not None:
            _check_config_file(path)


_YAML_KINDS = {str: "plain text", list: "a list", int: "a number", float: "a number", bool: "a boolean"}


def _check_config_file(path: str) -> None:
    """A config that is missing, not YAML or not a mapping of sections, refused in one line before LightningCLI
    reads it (its own messages quote the file's first line or lose the syntax error's position)."""
    import yaml

    if not Path(path).is_file():
        raise UsageError(f"config file {path!r} " + ("is not a file" if Path(path).exists() else "not found"))
    try:
        content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"config file {path!r} is not a text file: give a YAML config") from None
    except OSError as exc:
        raise UsageError(f"config file {path!r} cannot be read: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UsageError(f"config file {path!r} is not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path!r} is not valid YAML: {exc}") from None
    if content is not None and not isinstance(content, dict):
        kind = _YAML_KINDS.get(type(content), type(content).__name__)
        raise UsageError(
            f"config file {path!r} holds {kind}, not a mapping of sections (trainer:, model:, data:): start from "
            "`accelrl recipes show NAME`"
        )


# ----- fit (LightningCLI) ---------------------------------------------------------------------------------------
def cmd_fit(args: list[str]) -> int:
    args = expand_recipe(args)
    if not any(a in ("-h", "--help") or a.startswith("--print_config") for a in args):
        _check_config_files(args)
        ckpt_path = _option_value(args, "--ckpt_path")
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            from lightning_accelrl.checkpoints import read_checkpoint

            read_checkpoint(ckpt_path)  # LightningCLI reads it while parsing: fail first, with one line
    _quiet_lightning()
    from lightning_accelrl.lightning_cli import run_fit

    run_fit(args)
    return 0


def _quiet_lightning() -> None:
    import logging
    import warnings

    os.environ.setdefault(
        "PYTHONWARNINGS", "ignore::DeprecationWarning"
    )  # inherited by DDP's re-launched ranks
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    # the model summary's size estimate under bf16-mixed: Lightning warns that it counts 32 bits a parameter,
    # which is right for our fp32 weights (only the update's maths runs in bf16)
    warnings.filterwarnings("ignore", message=".*is not supported by the model summary.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Lightning's tip advertising its hosted logger, printed at every Trainer start: not this command's output
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )


# ----- evaluate -----------------------------------------------------------------------------------------------------
def _evaluate_parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="accelrl evaluate", description="Play episodes with a checkpoint.")
    parser.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint written by accelrl fit, or a run folder (runs/NAME): the newest last.ckpt below it",
    )
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument(
        "--stochastic", action="store_true", help="sample actions instead of the policy's mode"
    )
    parser.add_argument("--seed", type=int, default=1_000_003, help="env seed (differs from training seeds)")
    parser.add_argument(
        "--num-envs", type=int, default=None, help="envs stepped together (default: min(episodes, 8))"
    )
    parser.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE first (repeatable): your code that defines the algorithm, network or env the "
        "checkpoint names (a checkpoint never imports code by itself)",
    )
    parser.add_argument("--device", default="cpu")
    env = parser.add_mutually_exclusive_group()
    env.add_argument(
        "--env",
        metavar="ID",
        default=None,
        help="play this Gymnasium id (module:EnvId imports module) instead of the checkpoint's env",
    )
    env.add_argument(
        "--env-factory",
        metavar="MODULE:NAME",
        default=None,
        help="play the envs your function or class MODULE:NAME returns (a run trained on an env factory)",
    )
    parser.add_argument(
        "--env-kwargs",
        metavar="JSON",
        default=None,
        help="keyword arguments of the env, a JSON object: added to the checkpoint's (with --env or "
        "--env-factory: the only ones)",
    )
    parser.add_argument(
        "--video",
        metavar="DIR",
        default=None,
        help="record each episode (one env per episode, episode i seeded seed+i) to DIR/episode_<i>.mp4",
    )
    parser.add_argument(
        "--max-episode-steps", type=int, default=None, help="with --video: cut episodes after this many steps"
    )
    return parser


def cmd_evaluate(args: Sequence[str]) -> int:
    ns = _parse(_evaluate_parser(), args)
    if ns.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {ns.episodes}")
    if ns.num_envs is not None and ns.num_envs < 1:
        raise UsageError(f"--num-envs must be >= 1, got {ns.num_envs}")
    if ns.video is not None:
        _check_video_dir(ns.video)
    _import_modules(ns.imports)
    ns.ckpt = _checkpoint_file(ns.ckpt)
    from lightning_accelrl.evaluation import EnvSource, check_same_spec, evaluate_policy, evaluation_num_envs

    own_env = ns.env is not None or ns.env_factory is not None
    agent, data_hparams = _load_agent(ns.ckpt, ns.device, check_env=not own_env)
    env, env_kwargs, env_name = _evaluation_env(ns, data_hparams)
    vectorization = data_hparams.get("vectorization", "auto")
    if own_env or ns.env_kwargs is not None:  # another env, or keyword arguments that may reshape it
        check_same_spec(agent.env_spec, EnvSource(env, env_kwargs, vectorization), env_name)
    head = {"ckpt": str(ns.ckpt), "env": env_name, "deterministic": not ns.stochastic}
    if ns.video is not None:
        from lightning_accelrl.video import record_episodes

        result = record_episodes(
            agent,
            env,
            ns.episodes,
            ns.video,
            seed=ns.seed,
            deterministic=not ns.stochastic,
            env_kwargs=env_kwargs,
            max_steps=ns.max_episode_steps,
        )
        print(json.dumps({**head, **result}))
        return 0
    from lightning_accelrl import preflight
    from lightning_accelrl.envs import make_env

    num_envs = ns.num_envs if ns.num_envs is not None else evaluation_num_envs(ns.episodes)
    preflight.check_num_envs(num_envs, preflight.in_processes(env, num_envs, vectorization))
    batched = make_env(env, num_envs, ns.seed, 0, vectorization, env_kwargs)
    try:
        result = evaluate_policy(agent, batched, ns.episodes, deterministic=not ns.stochastic)
    finally:
        batched.close()
    print(json.dumps({**head, **result}))
    return 0


def _checkpoint_file(path: str) -> str:
    """``--ckpt``: a checkpoint file, or a folder (``runs/NAME``, ``runs/NAME/version_N``) whose newest
    ``last.ckpt`` below it is taken."""
    folder = Path(path)
    if not folder.is_dir():
        return path
    found = sorted(folder.rglob("last.ckpt"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise UsageError(f"--ckpt {path}: no last.ckpt below this folder; give a checkpoint file")
    return str(found[-1])


def _evaluation_env(ns: Any, data_hparams: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
    """(the env id or factory to play, its keyword arguments, its name in the output): ``--env`` or
    ``--env-factory`` (the user's code, trusted because the user names it), else the checkpoint's env id."""
    extra: dict[str, Any] = {}
    if ns.env_kwargs is not None:
        try:
            extra = json.loads(ns.env_kwargs)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--env-kwargs is not JSON ({exc.msg}): give an object, e.g. '{{\"size\": 7}}'"
            ) from None
        if not isinstance(extra, dict):
            raise UsageError(f"--env-kwargs must be a JSON object, got {type(extra).__name__}")
    if ns.env_factory is not None:
        return _import_factory(ns.env_factory), extra, ns.env_factory
    if ns.env is not None:
        from lightning_accelrl.envs.gym import check_env_id

        check_env_id(ns.env)
        return ns.env, extra, ns.env
    return data_hparams["env"], {**(data_hparams.get("env_kwargs") or {}), **extra}, data_hparams["env"]


def _import_factory(path: str) -> Callable[..., Any]:
    """``--env-factory MODULE:NAME`` (or ``MODULE.NAME``): import MODULE, return its callable NAME."""
    import importlib

    module_name, sep, name = path.rpartition(":")
    if not sep:
        module_name, _, name = path.rpartition(".")
    if not module_name or not name:
        raise UsageError(f"--env-factory {path!r}: give MODULE:NAME, e.g. mypkg.envs:make_env")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--env-factory {path}: {exc}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"--env-factory {path}: module {module_name!r} has no function or class {name!r}")
    return factory


def _import_modules(names: Sequence[str]) -> None:
    """``--import MODULE``: the user's code, trusted because the user names it (never a checkpoint)."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UsageError(f"--import {name}: {exc}") from None


def _load_agent(ckpt: str, device: str, check_env: bool = True) -> tuple[Any, dict[str, Any]]:
    """``checkpoints.load_agent``, its warnings printed as one line each."""
    import warnings

    from lightning_accelrl.checkpoints import CheckpointWarning, load_agent

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointWarning)
        loaded = load_agent(ckpt, device, check_env=check_env)
    for warning in caught:
        if issubclass(warning.category, CheckpointWarning):
            print(f"accelrl: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return loaded


def _check_video_dir(path: str) -> None:
    """Fail before loading anything when the video folder cannot be created or written."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UsageError(f"--video {path!r} is a file, not a directory")
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK):
        raise UsageError(f"--video {path!r}: directory {str(existing)!r} is not writable")
    try:
        import imageio  # noqa: F401
    except ImportError:
        raise UsageError("--video needs imageio: pip install 'lightning-accelrl[video]'") from None


# ----- plot (no torch) ----------------------------------------------------------------------------------------------
def cmd_plot(args: Sequence[str]) -> int:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:  # missing RUN_DIR/--out: one line, exit 2
            raise UsageError(f"plot: {message}")

    parser = Parser(
        prog="accelrl plot",
        description="Learning curves (episode_return_mean vs env steps and wall-clock time) from run folders.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="runs/NAME/version_N, runs/NAME or runs")
    parser.add_argument("--out", required=True, help="image file to write (.png, .pdf, .svg)")
    parser.add_argument("--x", choices=("both", "env_steps", "wall_time"), default="both")
    parser.add_argument(
        "--y",
        choices=("episode_return_mean", "episode_score_mean", "eval/return_mean"),
        default="episode_return_mean",
        help="the return the agent learns from, the unclipped game score (Atari runs), or the evaluations of "
        "the VideoEvaluation callback",
    )
    parser.add_argument(
        "--group-by",
        choices=("config", "name", "none"),
        default="config",
        help="runs drawn as one mean curve with a band: same config up to seeds (default), same logger folder "
        "name, or none",
    )
    parser.add_argument("--spread", choices=("minmax", "std"), default="minmax")
    parser.add_argument("--title", default=None)
    ns = _parse(parser, args)
    from lightning_accelrl.plot import plot_runs

    drawn = plot_runs(ns.runs, ns.out, x=ns.x, group_by=ns.group_by, spread=ns.spread, title=ns.title, y=ns.y)
    groups = ", ".join(f"{k} ({v} run{'s' if v > 1 else ''})" for k, v in drawn["groups"].items())
    print(f"wrote {drawn['out']}: {groups}")
    return 0


def _parse(parser: Any, args: Sequence[str]) -> Any:
    try:
        parser.exit_on_error = False
        return parser.parse_args(list(args))
    except SystemExit as exc:  # --help
        raise SystemExit(exc.code) from None
    except Exception as exc:  # argparse.ArgumentError
        raise UsageError(str(exc)) from None


# ----- entry point --------------------------------------------------------------------------------------------------
COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "fit": cmd_fit,
    "recipes": cmd_recipes,
    "evaluate": cmd_evaluate,
    "plot": cmd_plot,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0 if args else 2
    if args[0] == "--version":
        from lightning_accelrl import __version__

        print(f"accelrl {__version__}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        return _fail(f"unknown command {args[0]!r}; commands: {', '.join(COMMANDS)} (accelrl --help)")
    try:
        return command(args[1:])
    except UsageError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("accelrl: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from lightning_accelrl.errors import ConfigError

        user_error = _user_error(exc)
        if isinstance(exc, ConfigError) or user_error is not None:
            return _fail(user_error or str(exc))
        lost = _lost_peer(exc)
        if lost is not None:
            _fail(lost)
            return 1
        raise


# Trainer flags Lightning refuses for modules that step their own optimizers (every algorithm here), with what
# an RL user sets instead; appended to Lightning's own message
_MANUAL_OPTIMIZATION_HINTS = {
    "gradient clipping": "the algorithms clip their own gradients: set --model.init_args.max_grad_norm instead",
    "gradient accumulation": "each training batch is one update: for larger updates raise --data.batch_size "
    "(replay) or --data.num_envs / --data.rollout_steps (rollouts)",
}


def _user_error(exc: BaseException) -> str | None:
    """A ConfigError, argument error or Lightning misconfiguration (a Trainer flag that cannot apply) anywhere in
    the cause chain (jsonargparse wraps constructor errors); else a class the config names that failed to build
    (jsonargparse's "Problem with given class_path 'X'"), named with the constructor's own error."""
    import re

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from lightning_accelrl.errors import ConfigError

    seen, root, built = exc, exc, None
    while seen is not None:
        found = re.search(r"Problem with given class_path '([^']+)'", str(seen))
        built = built or (found.group(1) if found else None)  # a class the config names that failed to build
        if isinstance(seen, ConfigError):
            return str(seen)
        if type(seen).__name__ == "ArgumentError":
            return _condense_argument_error(str(seen))
        if isinstance(seen, MisconfigurationException):
            message = " ".join(str(seen).split())
            hints = [hint for key, hint in _MANUAL_OPTIMIZATION_HINTS.items() if key in message]
            flag = re.search(r"`(Trainer\([^`]*\))`", message)
            if hints and flag:  # Lightning's "switch to automatic optimization" is not the user's to do here
                message = f"{flag.group(1)} does not apply: {hints[0]}"
            return message
        root, seen = seen, seen.__cause__ or seen.__context__
    if built is not None and root is not exc:  # e.g. a logger's missing package: the root names it
        detail = " ".join(str(root).split()) or type(root).__name__
        return f"{built} from the config cannot be built: {type(root).__name__}: {detail}"
    return None


# gloo's own messages for a peer that is gone, raised without its source path (e.g. from a barrier)
_GLOO_PEER_LOST = (
    "Application timeout caused pair closure",
    "Connection closed by peer",
    "Connection reset by peer",
)


def _lost_peer(exc: BaseException) -> str | None:
    """A collective that failed because another rank or node is gone (its connection reset or closed, or the
    process group's timeout passed): one line per surviving rank instead of a traceback on each."""
    if "torch.distributed" not in sys.modules:
        return None
    import re

    import torch.distributed as dist

    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen)
        gloo = "/gloo/" in text or any(phrase in text for phrase in _GLOO_PEER_LOST)
        if isinstance(seen, dist.DistError) or (isinstance(seen, RuntimeError) and gloo):
            detail = re.sub(r"^\[[^\]]*\]\s*", "", text.strip().splitlines()[0] if text.strip() else "")
            detail = detail.split(". This is typically", 1)[0]
            rank = f"rank {dist.get_rank()}" if dist.is_initialized() else "this rank"
            return (
                f"{rank} lost the distributed run ({type(seen).__name__}: {detail}): another node or rank died or "
                "stopped answering; see its log"
            )
        seen = seen.__cause__ or seen.__context__
    return None


# the lines of a jsonargparse error that name the problem, most telling first
_ARGUMENT_ERROR_NEEDLES = (
    "ConfigError: ",
    "is not accepted",
    "has no attribute",
    "No module named",
    "Unrecognized",
    "unrecognized",
    "Expected a",
    "not a valid",
    "invalid",
    "No such file",
)


def _condense_argument_error(message: str) -> str:
    """jsonargparse explains nested errors over many lines; keep the line that names the problem."""
    import re

    lines = [ln.strip().lstrip("- ").strip() for ln in message.splitlines() if ln.strip()]
    if not lines:
        return message
    key = re.search(r'[Kk]ey "([^"]+)"', lines[0])
    problem, detail = None, None
    for line, after in zip(lines, lines[1:]):  # a class the value names (a callback, a logger), what is wrong
        problem = re.match(r"Problem with given class_path '([^']+)':", line)
        if problem is not None:
            detail = f"{problem.group(1)}: {after}"
            break
    for needle in () if detail is not None else _ARGUMENT_ERROR_NEEDLES:
        detail = next((ln for ln in lines if needle in ln and "NoneType" not in ln), None)
        if detail is not None:
            detail = detail.split("ConfigError: ", 1)[-1]
            break
    given = next((ln for ln in lines if ln.startswith("Given value:")), None)
    if key is None:
        return detail or lines[0]
    out = f"invalid value for {key.group(1)}: {detail or lines[-1]}"
    if given is not None and detail is not None and problem is None and "is not accepted" not in out:
        out += f" ({given})"  # the value, unless the class's own complaint says it better
    return out


if __name__ == "__main__":
    sys.exit(main())
