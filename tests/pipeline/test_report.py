"""metrics.jsonl is rebuilt from committed metrics stages; the report writes plots and a summary."""
from __future__ import annotations

import json

import storage
from pipeline.records import RoundMetrics, commit_metrics, read_metrics
from pipeline.report import main, summary


def _metrics(r):
    return RoundMetrics(round=r, policy_version=r, success_rate=0.25 * r, eval_success_rate=0.5,
                        anchored_share=0.4, anchor_pure_share=0.75 if r else None,
                        stage_seconds={"collect": 6.0, "advantage": 1.0, "train": 3.0})


def test_metrics_are_committed_once_per_round(tmp_path):
    run = storage.open_run(str(tmp_path))
    for r in (0, 1):
        commit_metrics(run, _metrics(r), "cfg")
    commit_metrics(run, _metrics(1), "cfg")  # a resumed round commits again: no second line
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1]
    assert read_metrics(run) == [_metrics(0), _metrics(1)]


def test_report_files_and_summary(tmp_path, capsys):
    run = storage.open_run(str(tmp_path))
    for r in (0, 1):
        commit_metrics(run, _metrics(r), "cfg")
    assert main([str(tmp_path)]) == 0
    names = [p.rsplit("/", 1)[1] for p in capsys.readouterr().out.split()]
    assert names == ["success.png", "training.png", "anchors.png", "purity.png", "stage_times.png", "summary.md"]
    for name in names[:5]:
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = summary([_metrics(1)]).splitlines()
    assert table[2] == "| 1 | 0.25 | 0.5 | 0 | 0 | 0.4 | 0.75 | - | - | - | - | - | 0.1 |"


def test_no_line_hides_another_it_coincides_with():
    import matplotlib.pyplot as plt

    from pipeline.report import _lines

    fig, ax = plt.subplots()
    same = [0.25, 0.5, None]
    _lines(ax, [-1, 0, 1], {name: same for name in "abcd"}, "t", "y")
    lines = ax.get_lines()
    assert [line.get_xdata().tolist() for line in lines] == [[-1, 0]] * 4
    assert len({(line.get_marker(), line.get_linestyle()) for line in lines}) == 4
    sizes, widths = [line.get_markersize() for line in lines], [line.get_linewidth() for line in lines]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4  # each drawn inside the one before
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 4
    assert lines[0].get_markerfacecolor() == "none"
    plt.close(fig)


def test_round_minus_1_has_no_anchor_figures_and_no_collect_figures_without_demos():
    from pipeline.report import _col

    before = RoundMetrics(round=-1, policy_version=-1, stage_seconds={"evaluate": 1.0})
    demos = RoundMetrics(round=-1, policy_version=-1, success_rate=0.9, stage_seconds={"demos": 1.0})
    assert _col([before, _metrics(0)], "anchored_share") == [None, 0.4]
    assert _col([before, _metrics(0)], "success_rate") == [None, 0.0]
    assert _col([demos], "success_rate") == [0.9] and _col([demos], "anchored_share") == [None]


def test_report_of_empty_run_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "no committed round has metrics yet" in capsys.readouterr().err


def test_report_shows_the_baseline_before_round_0(tmp_path):
    run = storage.open_run(str(tmp_path))
    before = RoundMetrics(round=-1, policy_version=-1, success_rate=1.0, eval_success_rate=0.125, loss=0.5,
                          stage_seconds={"demos": 2.0, "warm_start": 4.0, "evaluate": 1.0})
    for m in (before, _metrics(0)):
        commit_metrics(run, m, "cfg")
    assert [json.loads(line)["round"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [-1, 0]
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "1 round(s) committed.\n\nHeld-out success before training (baseline): 0.125\n" in text
    assert "| -1 | 1 | 0.125 | 0 | 0 | 0 | - | 0.5 | - | - | - | - | 0 |" in text
