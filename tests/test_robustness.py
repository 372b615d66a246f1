"""Robustness of a run's files and preconditions (issue 8): unreadable checkpoints, corrupt
resume checkpoints, the sampled protocol's feasibility, file modes, execution record."""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import logging
import os
import platform
import re
import stat
import subprocess
import types
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
import torch

from s3rec import cli, evaluation, files, runs, runtime, training
from s3rec.config import EvalConfig
from s3rec.data import write_prepared
from s3rec.synthetic import SyntheticSpec, generate
from conftest import commit_all
from scripts_import import load_script


def _checkpoint_bytes(tmp_path) -> bytes:
    path = tmp_path / "good.pt"
    torch.save({"config": {"a": 1}, "state_dict": {"w": torch.arange(300.0)}}, path)
    return path.read_bytes()


def _unreadable_files(tmp_path) -> dict[str, bytes]:
    good = _checkpoint_bytes(tmp_path)
    rng = np.random.default_rng(0)
    files = {f"truncated{n}": good[:n] for n in (0, 1, 100, len(good) // 2, len(good) - 1)}
    files["random"] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    files["text"] = b"not a checkpoint at all\n"
    # A plain pickle: torch's weights-only unpickler refuses it with "retry with weights_only=False".
    files["pickle"] = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."
    return files


# 6: an unreadable .pt is a clear ValueError naming the file, never torch's weights_only advice.
# (One of the files is a plain pickle, on which torch warns before it fails.)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_load_torch_rejects_unreadable_files_with_a_clear_message(tmp_path):
    for name, content in _unreadable_files(tmp_path).items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        with pytest.raises(ValueError) as info:
            files.load_torch(path)
        message = str(info.value)
        assert str(path) in message and "not a readable torch checkpoint" in message, (name, message)
        assert "weights_only" not in message, (name, message)
        assert "\n" not in message, (name, message)


def test_load_torch_still_loads_good_files_and_reports_missing_ones(tmp_path):
    path = tmp_path / "ok.pt"
    path.write_bytes(_checkpoint_bytes(tmp_path))
    assert torch.equal(files.load_torch(path)["state_dict"]["w"], torch.arange(300.0))
    with pytest.raises(FileNotFoundError):
        files.load_torch(tmp_path / "missing.pt")


class RunsCode:
    """Pickled as a call of print: what a checkpoint loaded as a full pickle would execute."""

    def __reduce__(self):
        return print, ("code ran while loading a checkpoint",)


def test_load_torch_never_runs_code_a_checkpoint_holds(tmp_path, capsys):
    """A checkpoint is data: a file that calls a function when unpickled is refused unread (torch's
    weights-only loader), not loaded; loading it in full would have printed the line."""
    path = tmp_path / "code.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": RunsCode()}, path)
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        files.load_torch(path)
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("number, unreadable", [(errno.EIO, False), (errno.EINVAL, True)])
def test_load_torch_passes_on_an_io_error_but_not_a_bad_file(tmp_path, monkeypatch, number, unreadable):
    """An I/O error (EIO: a failing disk, a lost network mount) says nothing of the file: it must
    stay an OSError, or resume would move a good checkpoint aside and start again from epoch 1.
    EINVAL (an invalid argument: load_torch counts it as the file's contents) is an unreadable file."""
    def failing_load(*args, **kwargs):
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(torch, "load", failing_load)
    with pytest.raises(OSError if not unreadable else files.UnreadableCheckpoint) as info:
        files.load_torch(tmp_path / "x.pt")
    assert isinstance(info.value, files.UnreadableCheckpoint) == unreadable


def test_save_torch_writes_the_same_bytes_for_the_same_contents(tmp_path):
    """Not the temporary's random name in the archive: a rewritten pretrain.pt keeps its digest,
    which a finetuning checks to resume."""
    checkpoint = {"state_dict": {"w": torch.arange(6.0)}, "epoch": 3}
    files.save_torch(tmp_path / "a.pt", checkpoint)
    first = (tmp_path / "a.pt").read_bytes()
    files.save_torch(tmp_path / "a.pt", checkpoint)
    files.save_torch(tmp_path / "b.pt", checkpoint)
    assert (tmp_path / "a.pt").read_bytes() == first == (tmp_path / "b.pt").read_bytes()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_prepared(generate(SyntheticSpec(users=30, items=40, attributes=8, seed=5, max_length=12)), out)
    return out


def test_script_with_a_random_bytes_checkpoint_exits_2_with_one_line(tiny_data, tmp_path, caplog):
    bad = tmp_path / "pretrain.pt"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    args = ["--data", str(tiny_data), "--variant", "full", "--out-dir", str(tmp_path / "run"),
            "--device", "cpu", "--threads", "1", "--pretrained", str(bad),
            "--settings", '{"eval": {"sampled_negatives": 9}}']  # 40 items: 99 negatives would fail first
    with pytest.raises(SystemExit) as exit_info:
        load_script("finetune").main(args)
    assert exit_info.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(bad) in errors[0] and "not a readable torch checkpoint" in errors[0]
    assert "weights_only" not in caplog.text


# 7: a resume checkpoint that cannot be read is moved aside with a warning; the run starts fresh.
def _loop(tmp_path, epochs, stop_after=None, config=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.arange(12.0).reshape(4, 3) / 10

    def train_epoch(rng):
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    state = training.run_epochs(model=model, optimizer=optimizer, epochs=epochs, seed=0, train_epoch=train_epoch,
                                checkpoint=tmp_path / "x.state.pt", config=config or {"c": 1},
                                history_path=tmp_path / "history.csv", stop_after=stop_after)
    return state, model


def test_truncated_resume_checkpoint_is_moved_aside_and_the_run_starts_fresh(tmp_path, caplog):
    _, whole = _loop(tmp_path / "whole", epochs=3)
    run = tmp_path / "run"
    _loop(run, epochs=3, stop_after=2)
    checkpoint = run / "x.state.pt"
    content = checkpoint.read_bytes()
    checkpoint.write_bytes(content[: len(content) // 2])
    with caplog.at_level(logging.WARNING, logger="s3rec"):
        state, model = _loop(run, epochs=3)
    assert state.epoch == 3 and [row["epoch"] for row in state.history] == [1, 2, 3]  # fresh, not resumed
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), whole.state_dict().values()))
    aside = run / "x.state.pt.corrupt"
    assert aside.read_bytes() == content[: len(content) // 2]  # kept, not silently lost
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(checkpoint) in w and str(aside) in w for w in warnings), warnings


def test_a_checkpoint_of_other_settings_is_kept_aside_with_what_differs(tmp_path, caplog):
    """Before: "ignoring checkpoint ...: a different config", not saying what differed, and the
    finished run deleted it: a rerun with the old settings started again at epoch 1."""
    old = {"config": {"finetune": {"lr": 0.001, "patience": 5}}, "inputs": "abc"}
    _loop(tmp_path, epochs=3, stop_after=2, config=old)
    saved = (tmp_path / "x.state.pt").read_bytes()
    new = {"config": {"finetune": {"lr": 0.01, "patience": 5}}, "inputs": "abc"}
    with caplog.at_level(logging.WARNING, logger="s3rec"):
        state, _ = _loop(tmp_path, epochs=1, config=new)
    assert state.epoch == 1 and [row["epoch"] for row in state.history] == [1]
    aside = tmp_path / "x.state.pt.other-config"
    assert aside.read_bytes() == saved
    assert (f"not resuming from {tmp_path / 'x.state.pt'} (after epoch 2): it was made with other settings or input "
            f"files (config.finetune.lr 0.001 -> 0.01); moved it to {aside}") in caplog.text


def test_a_second_corrupt_checkpoint_does_not_overwrite_the_first(tmp_path):
    (tmp_path / "x.state.pt.corrupt").write_bytes(b"first")
    (tmp_path / "x.state.pt").write_bytes(b"second")
    state, _ = _loop(tmp_path, epochs=1)
    assert state.epoch == 1
    assert (tmp_path / "x.state.pt.corrupt").read_bytes() == b"first"
    assert (tmp_path / "x.state.pt.corrupt.1").read_bytes() == b"second"


def test_a_third_corrupt_checkpoint_takes_the_next_free_name(tmp_path):
    """.corrupt and .corrupt.1 taken: the next goes to .corrupt.2, neither earlier one overwritten."""
    (tmp_path / "x.state.pt.corrupt").write_bytes(b"first")
    (tmp_path / "x.state.pt.corrupt.1").write_bytes(b"second")
    (tmp_path / "x.state.pt").write_bytes(b"third")
    state, _ = _loop(tmp_path, epochs=1)
    assert state.epoch == 1
    assert [(tmp_path / f"x.state.pt.{name}").read_bytes() for name in ("corrupt", "corrupt.1", "corrupt.2")] == [
        b"first", b"second", b"third"]


def test_a_torch_file_that_is_no_resume_checkpoint_is_moved_aside(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "x.state.pt")
    state, _ = _loop(tmp_path, epochs=1)
    assert state.epoch == 1 and (tmp_path / "x.state.pt.corrupt").exists()


def test_a_stale_temporary_of_a_killed_write_is_removed_and_never_read(tmp_path):
    _loop(tmp_path, epochs=2, stop_after=1)
    stale = tmp_path / ".x.state.pt.k1ll3d.tmp"  # what files.atomic_write leaves when killed mid-write
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.k1ll3d.tmp"  # another file's temporary is not ours to remove
    other.write_bytes(b"x")
    state, _ = _loop(tmp_path, epochs=2)
    assert [row["epoch"] for row in state.history] == [1, 2]  # resumed after epoch 1
    assert not stale.exists() and other.exists()


def test_temporaries_of_a_file_with_glob_characters_in_its_name_are_found(tmp_path):
    """files.temporary_name escapes the name: for run[1].csv the glob is .run[1].csv.*.tmp, not
    a character class that matches .run1.csv's temporaries instead and misses its own."""
    own = tmp_path / ".run[1].csv.0a1b2c3d.tmp"
    other = tmp_path / ".run1.csv.0a1b2c3d.tmp"
    own.write_text("half")
    other.write_text("another file's")
    training.remove_temporaries([tmp_path / "run[1].csv"])
    assert not own.exists() and other.exists()


# 8: the sampled protocol's feasibility is known before training; negatives drawn once, reused.
@dataclass(frozen=True)
class ToySplit:
    train: list
    valid_target: np.ndarray
    test_target: np.ndarray


def _arrays(*lists):
    return [np.array(items, dtype=np.int32) for items in lists]


def test_check_sampled_protocol_names_the_first_user_short_of_candidates():
    sequences = _arrays([1, 2], [1, 2, 3, 4], [1, 2, 3])  # 10 items: 8, 6 and 7 candidates
    user_ids = np.array([70, 71, 72], dtype=np.int32)
    evaluation.check_sampled_protocol(sequences, 10, 6, user_ids)
    with pytest.raises(ValueError) as info:
        evaluation.check_sampled_protocol(sequences, 10, 7, user_ids)
    message = str(info.value)
    assert "user 71 " in message and "6 candidate" in message and "7" in message
    assert "eval.sampled_negatives" in message
    with pytest.raises(ValueError, match="user index 1 "):  # without ids, the position
        evaluation.check_sampled_protocol(sequences, 10, 7)
    # Repeated items count once: a user who has item 1 five times still has 9 candidates.
    evaluation.check_sampled_protocol(_arrays([1, 1, 1, 1, 1]), 10, 9)


def test_negatives_drawn_up_front_are_the_ones_evaluate_uses(monkeypatch):
    sequences = _arrays([1, 2, 3, 4], [5, 6, 7], [2, 8, 9, 10, 1], [3, 4, 5])
    split = ToySplit([s[:-2] for s in sequences], np.array([s[-2] for s in sequences]),
                     np.array([s[-1] for s in sequences]))
    user_ids = np.array([10, 11, 12, 13], dtype=np.int32)
    cfg = EvalConfig(sampled_negatives=3, negatives_seed=5)
    negatives = evaluation.draw_negatives(sequences, user_ids, 12, cfg)
    assert np.array_equal(negatives, evaluation.sample_negatives(sequences, 12, 3, 5))
    assert evaluation.draw_negatives(sequences, user_ids, 12, EvalConfig(protocols=("full",))) is None
    with pytest.raises(ValueError, match="user 12 "):
        evaluation.draw_negatives(sequences, user_ids, 12, EvalConfig(sampled_negatives=8))

    score_fn = lambda hs: torch.arange(13, dtype=torch.float32).repeat(len(hs), 1)  # noqa: E731
    expected = evaluation.evaluate(score_fn, split, sequences, user_ids, 12, cfg)
    monkeypatch.setattr(evaluation, "sample_negatives", lambda *a, **k: pytest.fail("drew negatives again"))
    reused = evaluation.evaluate(score_fn, split, sequences, user_ids, 12, cfg, negatives=negatives)
    assert reused[0] == expected[0] and reused[1].equals(expected[1])
    with pytest.raises(ValueError, match="negatives"):
        evaluation.evaluate(score_fn, split, sequences, user_ids, 12, cfg, negatives=negatives[:, :2])


# 11: run files get the mode the umask gives, as open() would, not mkstemp's 0600.
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        files.write_json(tmp_path / "a.json", {"x": 1})
        files.save_torch(tmp_path / "b.pt", {"x": torch.zeros(2)})
        files.save_frame(tmp_path / "c.csv", pl.DataFrame({"x": [1]}))
        files.save_frame(tmp_path / "d.parquet", pl.DataFrame({"x": [1]}))
        files.write_json(tmp_path / "a.json", {"x": 2})  # replacing a file too
    finally:
        os.umask(previous)
    for name in ("a.json", "b.pt", "c.csv", "d.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.pt", "c.csv", "d.parquet"]


def test_a_write_is_synced_before_the_rename(tmp_path, monkeypatch):
    """The temporary's data reach the disk before it takes the file's name: else a crash just
    after the rename can leave an empty a.json. The synced file is the one renamed (its inode)."""
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.fstat(fd).st_ino)) or fsync(fd))
    monkeypatch.setattr(os, "replace",
                        lambda src, dst: events.append(("replace", os.stat(src).st_ino)) or replace(src, dst))
    files.write_json(tmp_path / "a.json", {"x": 1})
    inode = (tmp_path / "a.json").stat().st_ino
    assert events == [("fsync", inode), ("replace", inode)]


def test_a_write_never_takes_over_a_temporary_that_exists(tmp_path, monkeypatch):
    """Temporaries are created exclusively: a name already there (another writer's, same random
    token) is skipped for a fresh token, and that file is left as it is."""
    taken = tmp_path / ".a.json.0000aaaa.tmp"
    taken.write_text("another writer's")
    tokens = iter(["0000aaaa", "1111bbbb"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(tokens))
    files.write_json(tmp_path / "a.json", {"x": 1})
    assert taken.read_text() == "another writer's" and json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.json.0000aaaa.tmp", "a.json"]


def test_a_folder_where_a_file_goes_is_refused_before_writing(tmp_path):
    """Named after the path meant, before `write` runs: not after the work, naming a temporary."""
    written = []
    with pytest.raises(IsADirectoryError) as info:
        files.atomic_write(tmp_path, written.append)
    assert info.value.filename == str(tmp_path) and written == []


def test_a_failed_write_leaves_no_temporary_and_keeps_the_old_file(tmp_path):
    files.write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(TypeError):
        files.write_json(tmp_path / "a.json", {"x": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text().strip().endswith("}")


# 12: which device and how many threads actually ran.
def test_describe_execution_on_cpu():
    assert runtime.describe_execution(torch.device("cpu")) == {
        "device": "cpu", "cpu": runtime.cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads()}
    assert runtime.describe_execution("cpu")["cpu_capability"]


def test_cpu_model_without_a_model_name_line(monkeypatch, tmp_path):
    """aarch64 kernels often write no "model name" line: platform's guess, else "unknown"."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")
    monkeypatch.setattr(runtime.platform, "processor", lambda: "")
    assert runtime.cpu_model(cpuinfo) == "unknown"
    monkeypatch.setattr(runtime.platform, "processor", lambda: "aarch64")
    assert runtime.cpu_model(cpuinfo) == "aarch64"
    assert runtime.describe_execution("cpu")["device"] == "cpu"
    assert "torch_threads" not in runtime.provenance() and "threads" not in runtime.provenance()


def test_describe_execution_names_the_concrete_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"Fake GPU {index}")
    described = runtime.describe_execution(torch.device("cuda"))
    assert described == {"device": "cuda:1", "gpu": "Fake GPU 1", "threads": torch.get_num_threads()}
    assert runtime.describe_execution("cuda:0")["device"] == "cuda:0"
    assert runtime.describe_execution("cuda:0")["gpu"] == "Fake GPU 0"


@pytest.mark.parametrize("folder, script, option, value, expected", [
    ("benchmarks", "speed", "--batches", "0", "an integer >= 1"),  # was: whole epochs, silently
    ("benchmarks", "speed", "--threads", "0", "an integer >= 1"),  # was: torch's default, silently
    ("benchmarks", "speed", "--device", "gpu", "auto, cpu, cuda, cuda:N or cuda:any"),  # was: torch's traceback
    ("benchmarks", "speed", "--eval-batch-sizes", "0", "an integer >= 1"),
    ("benchmarks", "jobs_per_device", "--jobs", "0", "an integer >= 1"),
    ("benchmarks", "jobs_per_device", "--batches", "0", "an integer >= 1"),
    ("benchmarks", "runs_per_process", "--runs", "-1", "an integer >= 1"),
    ("benchmarks", "profile_step", "--warmup", "-1", "an integer >= 0"),
    ("benchmarks", "profile_step", "--steps", "ten", "an integer >= 1"),
    ("benchmarks", "profile_step", "--top", "0", "an integer >= 1"),
    ("benchmarks", "compare_pretraining", "--batches", "0", "an integer >= 1"),
    ("benchmarks", "continue_pretraining", "--seed", "-1", "an integer in [0, 4294967295]"),
    ("benchmarks", "seeds_needed", "--target", "nan", "a finite number > 0"),  # was: a ValueError traceback
    ("benchmarks", "seeds_needed", "--target", "0", "a finite number > 0"),
    ("benchmarks", "continue_pretraining", "--lr", "-0.1", "a finite number > 0"),
    ("benchmarks", "segment_scores", "--instances", "0", "an integer >= 1"),
    ("benchmarks", "head_energy", "--ranks", "0", "an integer >= 1"),
    ("benchmarks", "batch_drawing", "--repeats", "0", "an integer >= 1"),
    ("benchmarks", "batch_drawing", "--steps", "0", "an integer >= 1"),
    ("benchmarks", "authors_ranking", "--threads", "0", "an integer >= 1"),
    ("scripts", "finetune", "--device", "gpu", "auto, cpu, cuda, cuda:N or cuda:any"),
    ("scripts", "pretrain", "--threads", "0", "an integer >= 1"),
    ("scripts", "pretrain", "--seed", "4294967296", "an integer in [0, 4294967295]"),
    ("scripts", "popularity", "--threads", "0", "an integer >= 1"),
    ("scripts", "import_checkpoint", "--epochs", "0", "an integer >= 1"),
])
def test_a_count_seed_or_device_option_out_of_range_is_a_usage_error(capsys, folder, script, option, value, expected):
    with pytest.raises(SystemExit) as stop:
        load_script(script, folder).main([option, value])
    assert stop.value.code == 2
    assert f"argument {option}: expected {expected}, got '{value}'" in capsys.readouterr().err


def test_popularity_refuses_settings_beside_eval(tmp_path, caplog):
    """Before, a misspelt `eval` section was ignored and popularity ranked with the defaults."""
    with pytest.raises(SystemExit) as stop:
        load_script("popularity", "scripts").main(["--data", str(tmp_path), "--out-dir", str(tmp_path / "out"),
                                                   "--settings", '{"evall": {"sampled_negatives": 20}}'])
    assert stop.value.code == 2 and not (tmp_path / "out").exists()
    assert "--settings: expected only an `eval` section (popularity trains nothing), got keys ['evall']" in caplog.text


def test_integer_argument_takes_its_bounds():
    assert cli.integer_argument(0)("0") == 0
    assert cli.seed_argument(str(2**32 - 1)) == 2**32 - 1
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer in \[0, 4294967295\], got '4294967296'"):
        cli.seed_argument(str(2**32))
    assert cli.device_argument("cuda:3") == "cuda:3"


def test_a_folder_where_a_file_goes_is_named_without_a_traceback(tmp_path, caplog):
    """A folder given for a file to read (aggregate --metrics, finetune --pretrained) or to write
    (import_checkpoint --out): before, an IsADirectoryError traceback, the write's naming its
    temporary file after the work was done."""
    with pytest.raises(IsADirectoryError):
        files.atomic_write(tmp_path, lambda tmp: tmp.write_text("x"))
    assert sorted(tmp_path.parent.glob(f".{tmp_path.name}.*.tmp")) == []
    with pytest.raises(SystemExit) as stop:
        load_script("aggregate", "scripts").main(["--metrics", str(tmp_path), "--out-dir", str(tmp_path / "t")])
    assert stop.value.code == 2 and f"{tmp_path}: is a directory; expected a file" in caplog.text
    assert not (tmp_path / "t").exists()
    with pytest.raises(SystemExit) as stop, cli.clear_errors():
        (tmp_path / "file").write_text("x")
        (tmp_path / "file" / "inside").write_text("x")
    assert stop.value.code == 2 and f"{tmp_path / 'file' / 'inside'}: not a directory; expected a folder" in caplog.text


@pytest.mark.parametrize("value", ["abc", "-3", "0", "\u00b2"])  # a superscript 2: isdigit(), but no int()
def test_a_bad_slurm_cpus_per_task_is_named(monkeypatch, value):
    """Before: an int() error naming no variable, a traceback, or (0) torch's default silently."""
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", value)
    with pytest.raises(ValueError, match=rf"SLURM_CPUS_PER_TASK='{value}': expected an integer >= 1"):
        runtime.set_threads(None)


def test_a_full_disk_is_one_line_and_other_os_errors_pass_through(caplog):
    """Before, a full disk while saving a checkpoint ended in a chained traceback."""
    import errno
    import os

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/.pretrain.state.pt.1a2b.tmp")
    with pytest.raises(SystemExit) as stop, cli.clear_errors():
        raise full
    assert stop.value.code == 2
    assert "out/.pretrain.state.pt.1a2b.tmp: no space left on device (files are written whole" in caplog.text
    with pytest.raises(ConnectionResetError), cli.clear_errors():  # not about the disk: as it was
        raise ConnectionResetError(errno.ECONNRESET, "reset")


@pytest.mark.parametrize("script", ["pretrain", "finetune", "popularity", "aggregate"])
def test_an_out_dir_that_is_a_file_or_below_one_is_a_usage_error(tmp_path, capsys, script):
    """Before, a run trained its first epoch, then failed writing its checkpoint (a traceback)."""
    (tmp_path / "file").write_text("x")
    for out_dir, message in ((tmp_path / "file", f"{tmp_path / 'file'}: is a file; expected a folder"),
                             (tmp_path / "file" / "run", f"{tmp_path / 'file'} is a file, where a folder is expected")):
        with pytest.raises(SystemExit) as stop:
            load_script(script, "scripts").main(["--out-dir", str(out_dir)])
        assert stop.value.code == 2 and f"argument --out-dir: {out_dir}" in (err := capsys.readouterr().err)
        assert message in err


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no file can be created in: by its mode for a user, by a read-only tmpfs for root
    (root writes through any mode); skipped where root may not mount."""
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without the right to mount a read-only tmpfs: no folder root cannot write in")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("script", ["pretrain", "finetune", "popularity", "aggregate"])
def test_an_out_dir_that_cannot_be_written_is_a_usage_error(read_only_folder, capsys, script):
    """Before, a run trained its first epoch, then failed naming a temporary file
    (`.pretrain_history.csv.<hex>.tmp: read-only file system`)."""
    for out_dir in (read_only_folder, read_only_folder / "seed0"):
        with pytest.raises(SystemExit) as stop:
            load_script(script, "scripts").main(["--out-dir", str(out_dir)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"argument --out-dir: {out_dir}: cannot write in {read_only_folder} (" in err


def test_a_write_that_cannot_start_names_the_file_meant(read_only_folder):
    """Before, the error named the temporary (`.metrics.json.<hex>.tmp`), a file the user never asked for."""
    with pytest.raises(OSError) as error:
        files.write_text(read_only_folder / "metrics.json", "{}")
    assert error.value.filename == str(read_only_folder / "metrics.json")
    with pytest.raises(ValueError, match=f"--out {read_only_folder / 'a.pt'}: cannot write in {read_only_folder}"):
        cli.check_destination(read_only_folder / "a.pt", "--out")


# ---------------------------------------------------------------- the path grammar of run files (s3rec/run_paths.py)


@pytest.mark.parametrize("path", [
    "results/beauty/seed-full/seeds2/pretrain_history.csv",  # seeds2 is no seed folder
    "results/beauty/seed-full/seed0/seed1/metrics.json",  # a seed folder inside one is no loss
    "results/beauty/none/metrics.json",  # only the authors' checkpoint has no seed folder
    "results/beauty/seed-full/seed0/2ce/metrics.json",  # a loss starts with a letter
])
def test_a_run_path_off_the_grammar_is_refused(path):
    from s3rec import run_paths
    with pytest.raises(ValueError, match=f"^{path}: not a run file; expected "):
        run_paths.run_of_path(path)


def test_the_data_set_of_a_run_file_under_a_root_named_report_is_the_folder_above_the_run():
    from s3rec import run_paths
    assert run_paths.dataset_of("report/beauty/seed-full/seed0/bce/metrics.json") == "beauty"
    assert run_paths.dataset_of("study/beauty/report/tables/difference.csv") == "beauty"


def test_a_run_folder_with_no_data_set_folder_above_it_is_refused():
    from s3rec import run_paths
    assert run_paths.run_of_path("seed-full/seed0/pretrain.pt") == ("seed-full", 0, None)
    with pytest.raises(ValueError, match=r"^seed-full/seed0/pretrain.pt: no <dataset> folder above the run folder"):
        run_paths.dataset_of("seed-full/seed0/pretrain.pt")


# ---------------------------------------------------------------- the command line's checks (s3rec/cli.py)


@pytest.mark.parametrize("text, message", [("{", "not valid JSON"), ("[1]", "expected a JSON object, got list"),
                                           ('"epochs"', "expected a JSON object, got str")])
def test_settings_that_are_no_json_object_are_refused(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        cli.json_object(text)


@pytest.mark.parametrize("text", ["inf", "nan", "-inf", "0", "abc"])
def test_a_positive_number_is_finite(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected a finite number > 0, got '{text}'"):
        cli.positive_number(text)
    assert cli.positive_number("1e-3") == 0.001


@pytest.mark.parametrize("text", ["2.7", "1e3", "2.0"])
def test_an_integer_argument_is_never_rounded(text):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"expected an integer >= 1, got '{text}'")):
        cli.positive_int(text)


@pytest.mark.parametrize("number", [errno.EROFS, errno.EDQUOT])
def test_a_read_only_or_over_quota_disk_is_one_line(caplog, number):
    with pytest.raises(SystemExit) as stop, cli.clear_errors():
        raise OSError(number, os.strerror(number), "out/metrics.json")
    assert stop.value.code == 2
    assert f"out/metrics.json: {os.strerror(number).lower()} (files are written whole" in caplog.text


def test_a_permission_error_is_one_line_naming_the_file_when_it_names_one(caplog):
    with pytest.raises(SystemExit) as stop, cli.clear_errors():
        raise PermissionError(errno.EACCES, "Permission denied", "out/metrics.json")
    assert stop.value.code == 2 and caplog.records[-1].getMessage() == "out/metrics.json: permission denied"
    with pytest.raises(SystemExit), cli.clear_errors():
        raise PermissionError(errno.EACCES, "Permission denied")  # no file: the error as it is, not "None: ..."
    assert caplog.records[-1].getMessage() == "[Errno 13] Permission denied"


# ---------------------------------------------------------------- where a run runs, what it records (s3rec/runtime.py)


def test_threads_given_win_over_slurms_which_win_over_torchs_default(monkeypatch, torch_threads):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert runtime.set_threads(1) == 1 and torch.get_num_threads() == 1
    assert runtime.set_threads(None) == 2 and torch.get_num_threads() == 2


def test_pack_forces_or_skips_the_one_copy_per_dtype():
    """pack=True is how the tests reach the GPU path's packing on a CPU (test_finetuning,
    test_pretraining): it must pack there, into one buffer per dtype, and the CPU default not."""
    tensors = {"a": torch.arange(6).reshape(2, 3), "b": torch.ones(2), "c": torch.arange(4)}
    for pack, shared in ((True, True), (False, False), (None, False)):
        moved = runtime.to_device(tensors, "cpu", pack=pack)
        assert all(torch.equal(moved[name], tensors[name]) for name in tensors)
        same_buffer = moved["a"].untyped_storage().data_ptr() == moved["c"].untyped_storage().data_ptr()
        assert same_buffer == shared, pack


def test_cpu_model_is_the_model_name_line_not_the_model_number(tmp_path, monkeypatch):
    """x86's /proc/cpuinfo has a "model : 85" line before "model name"."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel\t\t: 85\nmodel name\t: Fake CPU @ 2.00GHz\n")
    assert runtime.cpu_model(cpuinfo) == "Fake CPU @ 2.00GHz"
    monkeypatch.setattr(runtime.platform, "processor", lambda: "")
    assert runtime.cpu_model(tmp_path / "missing") == "unknown"  # no /proc (not Linux)


def test_peak_memory_is_in_mib(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=3 * 1024 + 512))  # KiB
    assert runtime.peak_rss_mib() == 3.5
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 5 * 2**20 + 2**19)  # bytes
    assert runtime.peak_device_memory_mib("cuda:0") == 5.5
    assert runtime.peak_device_memory_mib("cpu") is None


def test_git_sha_marks_uncommitted_changes(monkeypatch):
    status = {"out": " M s3rec/runs.py\n"}

    def git(args, **kwargs):
        command = next(arg for arg in args if arg in ("ls-files", "rev-parse", "status"))  # after any -c options
        stdout = {"ls-files": "s3rec/runtime.py\n", "rev-parse": "0123abcd\n"}.get(command, status["out"])
        return subprocess.CompletedProcess(args, 0, stdout=stdout, stderr="")

    monkeypatch.setattr(runtime.subprocess, "run", git)
    assert runtime.git_sha() == "0123abcd-dirty"
    status["out"] = ""
    assert runtime.git_sha() == "0123abcd"


def test_git_sha_is_unknown_for_an_installed_copy_inside_a_checkout(tmp_path, caplog):
    """`pip install .` (not -e) into the checkout's .venv: scripts ran the installed copy, and a
    commit made after the install was recorded as the code that ran (2026-12-07)."""
    (tmp_path / ".gitignore").write_text(".venv/\n")
    tracked, installed = tmp_path / "s3rec" / "runtime.py", tmp_path / ".venv" / "site" / "s3rec" / "runtime.py"
    for path in (tracked, installed):
        path.parent.mkdir(parents=True)
        path.write_text("# code\n")
    head = commit_all(tmp_path)
    assert runtime.git_sha(tracked) == head
    with caplog.at_level(logging.WARNING, logger="s3rec"):
        assert runtime.git_sha(installed) == "unknown"
        assert runtime.git_sha(installed) == "unknown"
    said = [r.getMessage() for r in caplog.records if "does not read as a checkout's tracked code" in r.getMessage()]
    assert len(said) == 1 and str(installed.parent) in said[0] and "did not match any file" in said[0]  # once
    runtime.warn_git_sha_unknown.cache_clear()


def test_git_sha_without_git_says_why(tmp_path, monkeypatch, caplog):
    """A slim container has no git: runs recorded git_sha unknown and no log said why."""
    monkeypatch.setenv("PATH", str(tmp_path))
    runtime.warn_git_sha_unknown.cache_clear()  # said once a process: say it here
    with caplog.at_level(logging.WARNING, logger="s3rec"):
        assert runtime.git_sha() == "unknown"
    assert "No such file or directory: 'git'" in caplog.text and "git_sha unknown" in caplog.text
    runtime.warn_git_sha_unknown.cache_clear()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a checkout another owner")
def test_git_sha_reads_a_checkout_another_user_owns_with_its_code(tmp_path, monkeypatch, caplog):
    """A lab's shared clone, run by another user from a venv of their own: git refused it
    ("dubious ownership"), so every run recorded git_sha unknown and blamed `pip install .`."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")  # no safe.directory of this machine's
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    code = tmp_path / "s3rec" / "runtime.py"
    code.parent.mkdir()
    code.write_text("# code\n")
    head = commit_all(tmp_path)
    subprocess.run(["chown", "-R", "54321", str(tmp_path)], check=True)
    assert runtime.git_sha(code) == head
    os.chown(code, 0, 0)  # code of one user in a checkout of another's: git's refusal stands, and says why
    with caplog.at_level(logging.WARNING, logger="s3rec"):
        assert runtime.git_sha(code) == "unknown"
    assert "dubious ownership" in caplog.text
    runtime.warn_git_sha_unknown.cache_clear()


SPACED_TORCH = "/home/a researcher/My Projects/s3rec/.venv/lib/python3.11/site-packages/torch/__init__.py"


def test_a_compile_mode_torch_cannot_link_here_is_refused_before_any_work(monkeypatch, tmp_path, capsys):
    """torch 2.13 links inductor's C++ with unquoted library folders: in a clone whose path has a
    space, `compile: default` on a CPU failed at its first step with a page of linker errors
    (found 2026-12-07, a clone in "/tmp/my study/s3rec lowrank")."""
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    monkeypatch.setattr(torch, "__file__", SPACED_TORCH)
    monkeypatch.setattr(runtime.sysconfig, "get_config_var", lambda name: "/usr/lib")
    problem = runtime.inductor_build_problem("default", "cpu")
    assert f"({os.path.dirname(SPACED_TORCH) + '/lib'!r})" in problem and "torch 2.14 quotes them" in problem
    for mode, device in [("none", "cpu"), ("eager", "cpu"), ("cuda-graph", "cpu"), ("default", "cuda"),
                         ("reduce-overhead", "cuda:0")]:
        assert runtime.inductor_build_problem(mode, device) is None, (mode, device)
    # a run: before the data is read (there is none); a script's --compile: its usage error
    cfg = runs.resolve_config({}, "full", 0, "cpu", 1, "max-autotune")
    with pytest.raises(ValueError, match="compile max-autotune on a CPU: torch 2.13.0"):
        runs.pretrain(tmp_path / "no data", tmp_path / "out", cfg, "full")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_:
        cli.device_argument_checked(argparse.ArgumentParser(prog="speed.py"), "cpu", "default")
    assert exit_.value.code == 2 and "--compile default on a CPU" in capsys.readouterr().err
    # Python's own library folder counts as much; without a space, or with torch 2.14, nothing to say
    monkeypatch.setattr(runtime.sysconfig, "get_config_var", lambda name: "/opt/my python/lib")
    monkeypatch.setattr(torch, "__file__", "/opt/venv/lib/torch/__init__.py")
    assert "('/opt/my python/lib')" in runtime.inductor_build_problem("default", "cpu")
    monkeypatch.setattr(runtime.sysconfig, "get_config_var", lambda name: None)
    assert runtime.inductor_build_problem("default", "cpu") is None
    monkeypatch.setattr(torch, "__file__", SPACED_TORCH)
    monkeypatch.setattr(torch, "__version__", "2.14.1")
    assert runtime.inductor_build_problem("default", "cpu") is None


def test_provenance_names_the_host():
    assert runtime.provenance()["host"] == platform.node()


def test_provenance_records_the_torch_build(monkeypatch):
    """PyPI's CUDA wheel tells pip "2.13.0" and torch "2.13.0+cu130": a GPU run recorded the
    former and so no CUDA build (found running the suite in such an install)."""
    # a plain str: torch's own TorchVersion would make weights-only checkpoint loads refuse the run
    assert type(runtime.provenance()["versions"]["torch"]) is str
    monkeypatch.setattr(torch, "__version__", "2.13.0+cu130")
    assert runtime.provenance()["versions"]["torch"] == "2.13.0+cu130"


def test_the_data_digest_is_of_the_files_bytes_in_the_order_given(tmp_path):
    """sequences then attributes (runs.data_files): checkpoints hold digests taken in that order."""
    (tmp_path / "b.bin").write_bytes(b"sequences")
    (tmp_path / "a.bin").write_bytes(b"attributes")
    expected = hashlib.sha256(b"sequencesattributes").hexdigest()
    assert runtime.digest([tmp_path / "b.bin", tmp_path / "a.bin"]) == expected


def test_popularity_writes_a_runs_record_of_its_whole_job(tmp_path, monkeypatch, torch_threads):
    """Found by a mutation probe of scripts/popularity.py (each line below failed a mutant that
    every other test let pass): metrics.json has a run's structure, as README and the report
    read it: variant popularity, seed 0, the data set's folder name, no parameters, no epochs, no
    pretraining time but the whole job's wall and CPU seconds, no loss, the eval settings used,
    where it ran (--threads applied: SLURM's 2 would be taken without it) and what made it, the
    data's digest (park_runs restore checks it); written as every run's JSON (2-space indents, a
    final newline) beside ranks.parquet; the scores are float32 counts."""
    from s3rec import runs
    from s3rec.config import RunConfig

    popularity = load_script("popularity", "scripts")
    assert popularity.popularity_scores([np.array([2, 2])], 2).dtype == torch.float32
    data, out = tmp_path / "tiny", tmp_path / "out"
    write_prepared(generate(SyntheticSpec(users=40, items=20, attributes=5, seed=3, max_length=10)), data)
    settings = {"sampled_negatives": 10, "negatives_seed": 4}
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert popularity.main(["--data", str(data), "--out-dir", str(out), "--settings", json.dumps({"eval": settings}),
                            "--threads", "1"]) == 0
    text = (out / "metrics.json").read_text()
    result = json.loads(text)
    assert text == json.dumps(result, indent=2) + "\n"
    assert {k: result[k] for k in ("dataset", "variant", "seed", "best_epoch", "epochs_run", "parameters", "finetune")} == {
        "dataset": "tiny", "variant": "popularity", "seed": 0, "best_epoch": 0, "epochs_run": 0,
        "parameters": {"encoder": 0, "heads": {}, "heads_total": 0, "total": 0},
        "finetune": {"loss": None, "negatives_exclude_heldout": None}}
    for seconds in (result["wall_seconds"], result["cpu_seconds"]):
        assert seconds["pretrain"] == 0.0 and seconds["finetune"] > 0
    assert result["config"] == json.loads(json.dumps({"eval": RunConfig.from_dict({"eval": settings}).to_dict()["eval"]}))
    assert result["config"]["eval"]["sampled_negatives"] == 10 and result["config"]["eval"]["negatives_seed"] == 4
    assert result["execution"]["device"] == "cpu" and result["execution"]["threads"] == 1
    assert result["provenance"]["host"] == platform.node() and set(result["provenance"]) == {"git_sha", "versions", "host"}
    assert result["data_sha256"] == runs.digest_of_data(data)
    ranks = pl.read_parquet(out / "ranks.parquet")
    assert ranks.height > 0
