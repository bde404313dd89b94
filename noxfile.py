"""nox sessions: ``tests`` (the suite), ``slow`` (the long learning tests; CI runs both), ``lint`` (ruff) and
``bench`` (peer comparisons)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
CONSTRAINTS = ("-c", "constraints-cpu.txt")


@nox.session
def tests(session: nox.Session) -> None:
    """Install with the CPU pins and run the test suite without the long learning runs (``-m "not slow"``;
    pytest options after -- replace that selection)."""
    session.install(*CONSTRAINTS, "-e", ".[test]")
    args = session.posargs or ["-m", "not slow"]
    session.run("pytest", "-q", "-p", "no:cacheprovider", *args, env={"OMP_NUM_THREADS": "1"})


@nox.session
def slow(session: nox.Session) -> None:
    """The long learning tests (``-m slow``): recipes reaching their targets, learning on Pendulum, stress runs."""
    session.install(*CONSTRAINTS, "-e", ".[test]")
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow", *session.posargs, env={"OMP_NUM_THREADS": "1"}
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks against peers (Stable-Baselines3, Reverb, TorchRL); writes benchmarks/RESULTS.md."""
    session.install(*CONSTRAINTS, "-e", ".[atari,test]")
    session.run("bash", "benchmarks/setup_peers.sh", external=True)
    session.run("python", "benchmarks/learning_cartpole.py", *session.posargs)
