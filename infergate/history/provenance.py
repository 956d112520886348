"""Which commit, branch and CI job a run was: from the CI's environment, else from git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and out else None


def _ci_job_url(env) -> str | None:
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return env.get("CI_JOB_URL") or env.get("BUILD_URL")  # GitLab, Jenkins


def describe(root: Path, env=None) -> dict:
    """``{"commit", "branch", "ci_job_url"}``, each None where nothing says."""
    env = os.environ if env is None else env
    commit = env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA") or env.get("GIT_COMMIT")
    # A pull request's GITHUB_REF_NAME is "123/merge"; its head branch is GITHUB_HEAD_REF.
    branch = (env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME")
              or env.get("CI_COMMIT_REF_NAME") or env.get("GIT_BRANCH"))
    if commit is None:
        commit = _git(root, "rev-parse", "HEAD")
    if branch is None:
        branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        branch = None if branch == "HEAD" else branch  # detached
    return {"commit": commit, "branch": branch, "ci_job_url": _ci_job_url(env)}
