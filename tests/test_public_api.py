"""The public names are the contract (DESIGN.md §1): sorted, complete, importable."""

from __future__ import annotations

import aioq

CONTRACT = {
    "App",
    "Worker",
    "Job",
    "JobStatus",
    "JobInfo",
    "Retry",
    "TaskFailed",
    "JobCancelled",
    "current_job",
    "chain",
    "group",
    "chord",
    "GroupJob",
}


def test_all_is_sorted_and_unique() -> None:
    assert list(aioq.__all__) == sorted(set(aioq.__all__))


def test_all_names_exist_and_nothing_public_is_missing() -> None:
    for name in aioq.__all__:
        assert hasattr(aioq, name), name
    public = {
        n for n in vars(aioq) if not n.startswith("_") and n not in {"annotations", "logging"}
    }
    modules = {n for n in public if type(getattr(aioq, n)).__name__ == "module"}
    assert public - modules == set(aioq.__all__)


def test_design_contract_names_are_exported() -> None:
    assert set(aioq.__all__) >= CONTRACT


def test_job_status_values_are_lowercase_strings() -> None:
    assert [s.value for s in aioq.JobStatus] == [
        "queued", "scheduled", "running", "succeeded", "failed", "cancelled", "expired",
    ]  # fmt: skip
    assert aioq.JobStatus("queued") == "queued"
