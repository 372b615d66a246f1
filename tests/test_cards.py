"""device cuda:any: each training job claims the card of its node that the fewest running jobs
hold (s3rec/cards.py). Jobs are separate processes here, as under snakemake; no GPU needed."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from s3rec import cards, runtime

# A job: claim one of `count` cards, print it, hold it until its standard input closes.
JOB = ("import sys; from s3rec.cards import claim_card; "
       "print(claim_card(int(sys.argv[1]), sys.argv[2]), claim_card(int(sys.argv[1]), sys.argv[2]), flush=True); "
       "sys.stdin.read()")


def start_job(count, folder):
    return subprocess.Popen([sys.executable, "-c", JOB, str(count), str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def card_of(job) -> int:
    first, second = job.stdout.readline().split()
    assert first == second  # claiming again in the same process keeps its card
    return int(first)


def end(jobs):
    for job in jobs:
        job.stdin.close()
        job.wait(timeout=30)
        job.stdout.close()  # else an unclosed-file ResourceWarning per job


def test_jobs_started_one_after_another_take_the_least_held_card(tmp_path):
    jobs, claimed = [], []
    try:
        for _ in range(5):
            jobs.append(start_job(2, tmp_path))
            claimed.append(card_of(jobs[-1]))  # waits until it has claimed
        assert claimed == [0, 1, 0, 1, 0]
        # a job on card 1 ends (killed: its lock goes with it); the next job takes its place
        ended = jobs.pop(1)
        ended.kill()
        end([ended])
        jobs.append(start_job(2, tmp_path))
        assert card_of(jobs[-1]) == 1
        assert list(tmp_path.glob(f"card1.pid{ended.pid}.*")) == []  # the dead job's file was cleared
        assert len(list(tmp_path.glob("card*.pid*"))) == 5
    finally:
        end(jobs)


def test_jobs_started_together_spread_evenly(tmp_path):
    jobs = [start_job(4, tmp_path) for _ in range(8)]
    try:
        claimed = sorted(card_of(job) for job in jobs)
    finally:
        end(jobs)
    assert claimed == [0, 0, 1, 1, 2, 2, 3, 3]
    assert cards.live_claims(tmp_path, 4) == [0, 0, 0, 0]  # every job ended: no live claim left
    assert list(tmp_path.glob("card*")) == []


def test_cuda_any_claims_a_card_and_makes_it_current(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(cards, "claim_card", lambda count: count - 1)
    assert runtime.choose_device("cuda:any") == torch.device("cuda:2")
    assert chosen == [torch.device("cuda:2")]
    assert runtime.choose_device("cuda:1") == torch.device("cuda:1")  # a named card is made current too
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one visible card: no claim
    monkeypatch.setattr(cards, "claim_card", lambda count: pytest.fail("claimed with one card"))
    assert runtime.choose_device("cuda:any") == torch.device("cuda:0")
    assert runtime.choose_device("cuda") == torch.device("cuda")  # the current card: left as it is
    assert chosen == [torch.device("cuda:2"), torch.device("cuda:1"), torch.device("cuda:0")]
    # a card beyond those visible: before, torch's "invalid device ordinal" traceback at set_device
    with pytest.raises(runtime.DeviceUnavailable, match=r"'cuda:1' requested but this machine shows 1 CUDA device"):
        runtime.choose_device("cuda:1")


def test_auto_is_cuda_where_cuda_is_and_the_cpu_elsewhere(monkeypatch):
    for available, device in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        assert runtime.choose_device("auto") == torch.device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_any_without_cuda_is_an_error():
    with pytest.raises(RuntimeError, match="'cuda:any' requested but CUDA is not available"):
        runtime.choose_device("cuda:any")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("script", ["pretrain", "finetune"])
def test_a_cuda_device_without_cuda_is_one_line_from_the_scripts(script, tmp_path, caplog):
    """Before, a traceback and exit 1: the RuntimeError escaped clear_errors."""
    from scripts_import import load_script

    with pytest.raises(SystemExit) as stop:
        load_script(script).main(["--data", str(tmp_path), "--variant", "full" if script == "pretrain" else "none",
                                  "--out-dir", str(tmp_path / "out"), "--device", "cuda"])
    assert stop.value.code == 2
    assert "device 'cuda' requested but CUDA is not available on this machine" in caplog.text


def test_a_folder_that_cannot_hold_claims_is_a_clear_error(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(RuntimeError, match=r"device cuda:any: cannot claim a card through lock files in .*file.*cuda:N"):
        cards.claim_card(2, blocked / "cards")
    # through a script: one line, exit 2 (before, a traceback: a plain RuntimeError escaped clear_errors)
    from scripts_import import load_script

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(cards, "default_folder", lambda: blocked / "cards")
    with pytest.raises(SystemExit) as stop:
        load_script("finetune").main(["--data", str(tmp_path), "--variant", "none", "--out-dir", str(tmp_path / "out"),
                                      "--device", "cuda:any"])
    assert stop.value.code == 2 and "device cuda:any: cannot claim a card" in caplog.text


def test_claims_of_two_processes_with_one_pid_do_not_collide(tmp_path, monkeypatch):
    """Processes of two PID namespaces (containers sharing /tmp) may have one PID: the second's
    claim opened the first's file, and its lock failed ("Resource temporarily unavailable")."""
    first = start_job(1, tmp_path)  # holds card 0 of 1 through its own claim file
    try:
        card_of(first)
        [held] = tmp_path.glob("card0.pid*")
        monkeypatch.setattr(cards.os, "getpid", lambda: int(held.name.split(".")[1][3:]))
        monkeypatch.setattr(cards, "_claim", None)
        assert cards.claim_card(1, tmp_path) == 0
        assert len(list(tmp_path.glob("card0.pid*"))) == 2 and cards.live_claims(tmp_path, 1) == [2]
    finally:
        end([first])
        if cards._claim is not None:
            cards._claim[1].close()
        monkeypatch.setattr(cards, "_claim", None)


def test_live_claims_count_old_claims_skip_cards_beyond_ours_and_leave_other_files(tmp_path):
    """A claim of an older version (no token) still holds its card; a live claim of a card beyond
    this job's `count` (a job that saw more cards) is neither counted nor deleted; a dead claim is
    deleted; files that are no claim are left alone."""
    import fcntl

    held = []
    try:
        for name in ("card0.pid99", "card5.pid98.ab12"):
            held.append(open(tmp_path / name, "a"))
            fcntl.flock(held[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
        (tmp_path / "card1.pid97.cd34").touch()  # its job ended
        (tmp_path / "notes").write_text("not a claim")
        assert cards.live_claims(tmp_path, 2) == [1, 0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["card0.pid99", "card5.pid98.ab12", "notes"]
    finally:
        for file in held:
            file.close()
    with pytest.raises(ValueError, match="no card to claim among 0"):
        cards.claim_card(0, tmp_path)
