"""The lab's live progress (one line per entry: in place in a terminal, plain occasional lines
elsewhere) and how it shares the machine out (workers × threads = cores, one worker per GPU)."""

from __future__ import annotations

import io
import re

import pytest

from conftest import write_idx_folder
from genlab.errors import GenlabError
from genlab.lab import plan_workers, run_lab
from genlab.metrics import HEADLINE
from genlab.progress import LiveBoard, Progress, duration, progress_line


@pytest.mark.parametrize(
    "cores, gpus, entries, asked, expected",
    [
        (2, 0, 5, {}, (2, 1)),  # the 2-core machine: two single-thread entries side by side, as before
        (16, 0, 5, {}, (5, 3)),  # every entry at once, the other cores as threads
        (16, 0, 2, {}, (2, 8)),
        (1, 0, 5, {}, (1, 1)),
        (16, 1, 5, {}, (1, 16)),  # one GPU: one entry after another
        (16, 4, 5, {}, (4, 4)),  # one worker per GPU
        (16, 0, 5, {"workers": 1}, (1, 16)),
        (16, 0, 5, {"threads": 4}, (4, 4)),
        (16, 0, 5, {"workers": 2, "threads": 2}, (2, 2)),
    ],
)
def test_workers_times_threads_fill_the_cores(cores, gpus, entries, asked, expected):
    assert plan_workers(cores, gpus, entries, **asked) == expected


@pytest.mark.parametrize("asked", [{"workers": 0}, {"threads": 0}])
def test_workers_and_threads_must_be_positive(asked):
    with pytest.raises(GenlabError, match="at least 1"):
        plan_workers(2, 0, 5, **asked)


def progress(step: int, total: int = 100, test=None, elapsed: float = 10.0) -> Progress:
    return Progress("vae", step, total, 1 + step // 10, 10, {"loss": 40.0 - step / 10, "kl": 3.0}, test, elapsed, step)


def test_a_progress_line_says_step_of_total_losses_and_time():
    line = progress_line("vae-conv16", progress(25, elapsed=50.0))
    assert line.startswith("vae-conv16: step 25/100 (epoch 3/10)") and "loss 37.5" in line and "kl 3" in line
    assert line.endswith("50s, ~2m30s left")  # 2 s a step, 75 steps to go
    assert progress_line("vae", progress(100, test={"loss": 39.0})).endswith("done") and "test loss 39" in progress_line("vae", progress(100, test={"loss": 39.0}))
    assert [duration(s) for s in (None, 5, 65, 3725)] == ["?", "5s", "1m05s", "1h02m"]


def test_plain_lines_come_at_most_every_interval_per_entry_and_at_each_epoch_end():
    lines, now = [], [0.0]
    board = LiveBoard(["ae", "gan"], log=lines.append, every_s=10.0, clock=lambda: now[0])
    board.update("ae", progress(1))
    board.update("gan", progress(1))  # another entry: its own interval
    now[0] = 5.0
    board.update("ae", progress(2))  # too soon: not printed
    board.update("ae", progress(10, test={"loss": 1.0}))  # an epoch's end: printed
    now[0] = 11.0
    board.update("ae", progress(11))  # 6 s after the last line printed: not yet
    now[0] = 15.0
    board.update("ae", progress(12))
    board.message("data: a note")
    board.finish("ae", "ae: recon_mse_per_pixel 0.05")
    assert [line.split(" (")[0] for line in lines] == [
        "ae: step 1/100", "gan: step 1/100", "ae: step 10/100", "ae: step 12/100", "data: a note", "ae: recon_mse_per_pixel 0.05",
    ]


def screen(output: str) -> list[str]:
    """What a terminal shows after `output`: lines, with the board's two ANSI sequences applied
    (ESC[nF: to the start of the line n rows up; ESC[J: clear from there to the end)."""
    rows, row = [""], 0
    for token in re.split(r"(\x1b\[\d+F|\x1b\[J|\n)", output):
        if token == "\n":
            row += 1
            rows.extend([""] * (row + 1 - len(rows)))
        elif token == "\x1b[J":
            del rows[row + 1 :]
            rows[row] = ""
        elif token.startswith("\x1b["):
            row -= int(token[2:-1])
            assert row >= 0, "the cursor went above the board"
        else:
            rows[row] += token
    return rows[:-1] if rows[-1] == "" else rows


def test_the_terminal_board_redraws_one_line_per_entry_in_place_with_messages_above():
    out, now = io.StringIO(), [0.0]
    board = LiveBoard(["ae", "gan"], tty=True, out=out, width=40, clock=lambda: now[0])
    board.message("lab: 2 entries, 2 at a time, 1 thread each")
    assert screen(out.getvalue()) == ["lab: 2 entries, 2 at a time, 1 thread each", "ae: waiting", "gan: waiting"]
    now[0] = 1.0
    board.update("gan", progress(5))
    now[0] = 1.01
    board.update("gan", progress(6))  # within REDRAW_S of the last draw: skipped
    assert screen(out.getvalue())[2].startswith("gan: step 5/100")
    now[0] = 2.0
    board.update("ae", progress(10, test={"loss": 2.0}))
    board.message("warning: something")
    board.finish("gan", "gan: fid 12.3")
    shown = screen(out.getvalue())  # a finished entry's headline leaves the board, whole, for the lines above it
    assert shown[:3] == ["lab: 2 entries, 2 at a time, 1 thread each", "warning: something", "gan: fid 12.3"]
    assert shown[3].startswith("ae: step 10/100") and len(shown) == 4
    assert len(shown[3]) < 40  # the board's lines are cut to the width: one row each, so moving up stays right
    board.finish("ae", "ae: recon_mse_per_pixel 0.05, knn5_accuracy 0.8 and a headline longer than the width")
    assert screen(out.getvalue())[2:] == ["gan: fid 12.3", "ae: recon_mse_per_pixel 0.05, knn5_accuracy 0.8 and a headline longer than the width"]


def test_a_lab_not_on_a_terminal_prints_each_entrys_progress_before_its_headline(tmp_path, small_evaluation):
    data = write_idx_folder(tmp_path / "idx", n_train=64, n_test=20)  # 2 batches of 32 per epoch
    lines: list[str] = []
    run_lab(tmp_path / "lab", ["ae", "gan"], steps=5, data_dir=str(data), device="cpu", workers=2, log=lines.append)
    for name in ("ae", "gan"):
        headline = next(i for i, line in enumerate(lines) if line.startswith(f"{name}: ") and any(k in line for k in HEADLINE))
        steps = [i for i, line in enumerate(lines) if line.startswith(f"{name}: step ")]
        assert steps and max(steps) < headline, lines
        assert f"{name}: step 5/5 (epoch 3/3)" in "\n".join(lines)  # the last, partial epoch's end
        assert not any(line.startswith(f"{name} epoch") or line.startswith(f"{name.replace('gan', 'scgan')} epoch") for line in lines)
    # the same budget again: finished runs are reused; a larger one resumes them, in this process
    lines.clear()
    run_lab(tmp_path / "lab", ["ae", "gan"], steps=5, data_dir=str(data), device="cpu", workers=1, resume=True, log=lines.append)
    assert "ae: finished run found" in "\n".join(lines) and "gan: finished run found" in "\n".join(lines)
    lines.clear()
    run_lab(tmp_path / "lab", ["ae"], steps=7, data_dir=str(data), device="cpu", workers=1, resume=True, log=lines.append)
    text = "\n".join(lines)
    assert "ae: resuming" in text and "ae: step 7/7 (epoch 4/4)" in text
    assert text.index("ae: step 7/7") < text.index("ae: recon")


def test_a_failed_entry_stops_the_lab_with_its_error_after_the_others_finish_and_show_their_lines(tmp_path, small_evaluation):
    """vae-conv16 (batch 64) cannot train on 40 digits; ae goes on, its events (20 epoch ends)
    are shown while the lab waits for it, and then the lab stops with vae-conv16's error."""
    data = write_idx_folder(tmp_path / "idx", n_train=40, n_test=20)
    lines: list[str] = []
    with pytest.raises(GenlabError, match="batch size 64 is larger than the 40 training images"):
        run_lab(tmp_path / "lab", ["vae-conv16", "ae"], steps=40, data_dir=str(data), device="cpu", workers=2, log=lines.append)
    assert "ae: step 40/40 (epoch 20/20)" in "\n".join(lines)
    assert any(line.startswith("ae: recon_mse_per_pixel") for line in lines)
