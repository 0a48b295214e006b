import json
import statistics

import pytest

from tasks.compare import learning_curve, load_runs, main, make_run_table, make_table


def _run(root, task, name, elmo, frac, seed, test, hist):
    d = root / task / name
    d.mkdir(parents=True)
    cfg = {"elmo_model": "models/x" if elmo else None, "train_fraction": frac, "seed": seed}
    (d / "metrics.json").write_text(json.dumps({"score_scale": "percent", "test": test, "config": cfg,
                                                "train_seconds": 10.0}))
    (d / "history.json").write_text(json.dumps({"history": hist}))


@pytest.fixture
def runs(tmp_path):
    for s, (b, e) in enumerate([(80.0, 84.0), (82.0, 85.0), (81.0, 86.0)]):
        _run(tmp_path, "lac", f"base-s{s}", False, 0.2, s, {"f1": b, "seg_f1": b + 10},
             [{"step": 10, "f1": b - 10}, {"step": 20, "f1": b}])
        _run(tmp_path, "lac", f"elmo-s{s}", True, 0.2, s, {"f1": e, "seg_f1": e + 10},
             [{"step": 10, "f1": e - 10}, {"step": 20, "f1": e}])
    _run(tmp_path, "bidaf", "base-s0", False, 1.0, 0, {"f1": 50.0, "em": 0.5}, [{"step": 5, "f1": 40.0}])
    return tmp_path


def test_table_means_sd_and_delta(runs):
    table = make_table(load_runs(runs))
    base = [80.0, 82.0, 81.0]
    elmo = [84.0, 85.0, 86.0]
    row = next(line for line in table.splitlines() if "| lac | 0.2 | f1 |" in line)
    assert f"{statistics.mean(base):.2f} ± {statistics.stdev(base):.2f}" in row
    assert f"{statistics.mean(elmo):.2f} ± {statistics.stdev(elmo):.2f}" in row
    assert f"+{statistics.mean(elmo) - statistics.mean(base):.2f}" in row
    assert "3/3" in row
    bidaf = next(line for line in table.splitlines() if "| bidaf |" in line and "| f1 |" in line)
    assert "50.00 ± –" in bidaf and "1/0" in bidaf  # one seed: no spread to show
    em = next(line for line in table.splitlines() if "| bidaf |" in line and "| em |" in line)
    assert "0.50 ± –" in em  # scores are percentages: a small em is not a fraction


def test_cli_writes_table_and_plots(runs, capsys):
    assert main([str(runs)]) == 0
    assert (runs / "comparison.md").is_file()
    from PIL import Image

    for name in ("lac_dev_curves.png", "lac_learning_curve.png", "bidaf_dev_curves.png"):
        img = Image.open(runs / name).convert("L")
        lo, hi = img.getextrema()
        assert hi - lo > 100, name  # not blank
    assert "| lac | 0.2 | f1 |" in capsys.readouterr().out


def test_learning_curve_points_per_fraction(runs):
    """Mean, sd and seed count per fraction and variant; a fraction with one seed has sd 0 (no bar drawn)."""
    _run(runs, "lac", "base-f1", False, 1.0, 1, {"f1": 90.0}, [])
    _run(runs, "lac", "elmo-f1", True, 1.0, 1, {"f1": 99.0}, [])
    curve = learning_curve(load_runs(runs), "lac")
    f, m, sd, n = curve["baseline"][0]
    assert (f, m, n) == (0.2, 81.0, 3) and sd == pytest.approx(statistics.stdev([80.0, 82.0, 81.0]))
    assert curve["baseline"][1] == (1.0, 90.0, 0.0, 1)
    assert [p[0] for p in curve["+ELMo"]] == [0.2, 1.0] and curve["+ELMo"][0][1] == 85.0
    assert learning_curve(load_runs(runs), "bidaf")["+ELMo"] == []


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path)]) == 2
    assert "no finished task runs" in capsys.readouterr().err


def test_runs_of_different_protocols_are_not_averaged(tmp_path, capsys):
    for s, (epochs, f1) in enumerate([(1, 50.0), (1, 52.0), (3, 70.0)]):
        d = tmp_path / "lac" / f"base-s{s}"
        d.mkdir(parents=True)
        cfg = {"elmo_model": None, "train_fraction": 0.2, "seed": s, "epochs": epochs, "run_name": d.name}
        (d / "metrics.json").write_text(json.dumps({"score_scale": "percent", "test": {"f1": f1}, "config": cfg,
                                                    "train_seconds": 1.0}))
    for m in ("models/a", "models/b"):
        d = tmp_path / "lac" / f"elmo-{m[-1]}"
        d.mkdir(parents=True)
        cfg = {"elmo_model": m, "train_fraction": 0.2, "seed": 0, "epochs": 1, "run_name": d.name}
        (d / "metrics.json").write_text(json.dumps({"score_scale": "percent", "test": {"f1": 60.0}, "config": cfg,
                                                    "train_seconds": 1.0}))
    table = make_table(load_runs(tmp_path))
    one = next(line for line in table.splitlines() if "| 0.2 (epochs=1) | f1 |" in line)
    three = next(line for line in table.splitlines() if "| 0.2 (epochs=3) | f1 |" in line)
    assert "51.00 ± 1.41" in one and "2/2" in one
    assert "70.00 ± –" in three and "1/0" in three
    assert "2 different biLMs" in capsys.readouterr().err


def test_one_biLM_name_with_two_weights_is_two_biLMs(tmp_path, capsys):
    """`zh-char-elmo` named v2, then v3: runs that record different weights' sha256 under one name are not
    averaged silently (the checksum comes from the run's saved model, as metrics.json's config predates it)."""
    for i, sha in enumerate(["aa" * 32, "bb" * 32, "aa" * 32]):
        d = tmp_path / "lac" / f"elmo-s{i}"
        (d / "best").mkdir(parents=True)
        cfg = {"elmo_model": "zh-char-elmo", "train_fraction": 1.0, "seed": i, "run_name": d.name}
        (d / "metrics.json").write_text(json.dumps({"score_scale": "percent", "test": {"f1": 90.0}, "config": cfg,
                                                    "train_seconds": 1.0}))
        (d / "best" / "config.json").write_text(json.dumps({**cfg, "elmo_weights_sha256": sha}))
    runs = load_runs(tmp_path)
    assert sorted(r["bilm"] for r in runs) == ["zh-char-elmo (aaaaaaaa)"] * 2 + ["zh-char-elmo (bbbbbbbb)"]
    make_table(runs)
    err = capsys.readouterr().err
    assert "2 different biLMs" in err and "zh-char-elmo (bbbbbbbb)" in err
    make_table([r for r in runs if r["bilm"].endswith("(aaaaaaaa)")])
    assert "different biLMs" not in capsys.readouterr().err


def test_runs_stopped_by_patience_compare_across_epoch_caps(tmp_path):
    """Early stopping ended both runs (3 evaluations after the best with patience 3): their different `epochs`
    caps never acted, so they are one group; a run that hit its cap stays apart."""
    hist = [{"step": s, "f1": 50.0} for s in (10, 20, 30, 40, 50)]
    for name, epochs, best, f1 in (("base-s1", 30, 20, 80.0), ("elmo-s1", 60, 20, 83.0), ("elmo-s2", 5, 40, 70.0)):
        d = tmp_path / "lac" / name
        d.mkdir(parents=True)
        cfg = {"elmo_model": "m" if name.startswith("elmo") else None, "train_fraction": 1.0, "seed": 1,
               "epochs": epochs, "patience": 3, "run_name": name}
        (d / "metrics.json").write_text(json.dumps({"score_scale": "percent", "test": {"f1": f1}, "config": cfg,
                                                    "best_step": best, "train_seconds": 1.0}))
        (d / "history.json").write_text(json.dumps({"history": hist}))
    table = make_table(load_runs(tmp_path))
    together = next(line for line in table.splitlines() if "| 1 (epochs=early stop) | f1 |" in line)
    assert "80.00 ± –" in together and "83.00 ± –" in together and "1/1" in together
    capped = next(line for line in table.splitlines() if "| 1 (epochs=5) | f1 |" in line)
    assert "70.00 ± –" in capped
    per_run = make_run_table(load_runs(tmp_path)).splitlines()  # the numbers behind the means, one row a run
    assert len(per_run) == 2 + 3 and "| lac | base-s1 | baseline |" in per_run[2]  # baselines first
    assert "| 1 | 1 | – (early stop) | – (20) | 80.00 |" in per_run[2]
    assert any("| elmo-s2 |" in line and "(early stop)" not in line for line in per_run)


def test_runs_written_before_the_percent_scale_are_skipped(runs, capsys):
    old = runs / "lac" / "old-s9"
    old.mkdir()
    (old / "metrics.json").write_text(json.dumps({"test": {"f1": 0.9}, "config": {"train_fraction": 0.2, "seed": 9}}))
    assert all(r["name"] != "old-s9" for r in load_runs(runs))
    assert "old-s9" in capsys.readouterr().err


def test_runs_that_read_the_data_from_other_paths_are_one_protocol(tmp_path):
    """A run started with `--data-dir ../shared/data` and one with the absolute path (or resumed) are one group."""
    for name, data_dir, resume, f1 in (("base-s1", "/work/shared/data", False, 80.0), ("base-s2", "../shared/data",
                                                                                       True, 82.0)):
        d = tmp_path / "lac" / name
        d.mkdir(parents=True)
        cfg = {"elmo_model": None, "train_fraction": 1.0, "seed": int(name[-1]), "data_dir": data_dir,
               "resume": resume, "epochs": 3, "run_name": name}
        (d / "metrics.json").write_text(json.dumps({"score_scale": "percent", "test": {"f1": f1}, "config": cfg,
                                                    "train_seconds": 1.0}))
    line = next(x for x in make_table(load_runs(tmp_path)).splitlines() if "| f1 |" in x)
    assert "81.00 ± 1.41" in line and "2/0" in line, line


def test_elmo_at_another_layer_is_its_own_row_not_averaged_with_input_only(tmp_path):
    """BiDAF's `elmo_at_modeling` (and LAC's `elmo_at_output`) run beside the input-only +ELMo runs in one
    folder: each placement is compared with the same baselines on rows of its own."""
    for name, extra, f1 in [("base-s1", None, 40.0), ("base-s2", None, 42.0), ("elmo-s1", {}, 50.0),
                            ("elmo-s2", {}, 52.0), ("elmo-mod-s1", {"elmo_at_modeling": True}, 70.0),
                            ("elmo-tok-s1", {"elmo_only_layer": 0}, 45.0)]:
        d = tmp_path / "bidaf" / name
        d.mkdir(parents=True)
        cfg = {"elmo_model": "zh-char-elmo" if extra is not None else None, "train_fraction": 1.0,
               "seed": int(name[-1]), "elmo_at_modeling": False, **(extra or {})}
        (d / "metrics.json").write_text(json.dumps({"score_scale": "percent", "test": {"f1": f1}, "config": cfg,
                                                    "train_seconds": 1.0}))
    runs = load_runs(tmp_path)
    assert sorted(r["variant"] for r in runs) == ["+ELMo", "+ELMo", "+ELMo (also at the modeling layer)",
                                                  "+ELMo, token layer only (no context)", "baseline", "baseline"]
    rows = [line for line in make_table(runs).splitlines() if line.startswith("| bidaf")]
    assert rows == ["| bidaf | 1 | f1 | 41.00 ± 1.41 | 51.00 ± 1.41 | +10.00 | 2/2 | 1/1 |",
                    "| bidaf | 1, +ELMo (also at the modeling layer) | f1 | 41.00 ± 1.41 | 70.00 ± – | +29.00 | 2/1 | 1/1 |",
                    "| bidaf | 1, +ELMo, token layer only (no context) | f1 | 41.00 ± 1.41 | 45.00 ± – | +4.00 | 2/1 | 1/1 |"]
    main([str(tmp_path), "--output", str(tmp_path / "out")])  # the plots take the third variant too


def test_a_bidaf_run_is_told_apart_by_its_biLM_checksum_too(tmp_path):
    """BiDAF's saved model keeps its run config under "config" (beside "sizes"): the checksum is read there."""
    d = tmp_path / "bidaf" / "elmo-s1"
    (d / "model").mkdir(parents=True)
    cfg = {"elmo_model": "zh-char-elmo", "train_fraction": 1.0, "seed": 1}
    (d / "metrics.json").write_text(json.dumps({"score_scale": "percent", "test": {"f1": 50.0}, "config": cfg}))
    (d / "model" / "config.json").write_text(json.dumps({"sizes": {}, "config": {**cfg, "elmo_weights_sha256": "cc" * 32}}))
    assert [r["bilm"] for r in load_runs(tmp_path)] == ["zh-char-elmo (cccccccc)"]


def test_kept_records_give_the_same_table(runs, tmp_path_factory):
    """experiments/keep_results.py copies what compare reads (not checkpoints) into a tracked folder: the
    table rebuilt from that copy is the run folders' table; an unfinished run (no metrics.json) is left out."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "keep_results", Path(__file__).resolve().parents[1] / "experiments" / "keep_results.py")
    keep_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(keep_results)
    (runs / "lac" / "elmo-s0" / "best").mkdir()
    (runs / "lac" / "elmo-s0" / "best" / "config.json").write_text('{"elmo_weights_sha256": "ab12cd34ef"}')
    (runs / "lac" / "elmo-s0" / "best" / "weights.safetensors").write_bytes(b"x" * 100)
    (runs / "lac" / "elmo-s0" / "vdlrecords.123.log").write_bytes(b"curve")
    (runs / "lac" / "running").mkdir()
    (runs / "lac" / "running" / "history.json").write_text('{"history": []}')
    into = tmp_path_factory.mktemp("results")
    assert keep_results.main([str(runs), "--into", str(into)]) == 0
    kept = into / runs.name
    assert make_table(load_runs(kept)) == make_table(load_runs(runs))
    assert make_run_table(load_runs(kept)) == make_run_table(load_runs(runs))
    assert (kept / "lac" / "elmo-s0" / "best" / "config.json").is_file()
    assert (kept / "lac" / "elmo-s0" / "vdlrecords.123.log").read_bytes() == b"curve"  # VisualDL's curves
    assert not (kept / "lac" / "elmo-s0" / "best" / "weights.safetensors").exists()
    assert not (kept / "lac" / "running").exists()
    assert keep_results.keep(runs, into) == []  # nothing changed: nothing copied again


def test_kept_records_are_not_ignored_by_git():
    """results/ is meant to be committed: the run folders' ignore pattern (`runs_*/`) once matched
    results/runs_bidaf_full/ too, so a finished run's kept records never showed in `git status`."""
    import shutil
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    kept = ["results/runs_bidaf_full/bidaf/elmo-f1-s2/metrics.json", "results/runs_msra/lac/elmo-f1-s1/best/config.json"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *kept], cwd=root, capture_output=True, text=True)
    assert ignored.stdout == "", f"git ignores kept records: {ignored.stdout}"
    run_folder = subprocess.run(["git", "check-ignore", "--no-index", "runs_msra/lac/x/metrics.json"], cwd=root,
                                capture_output=True, text=True)
    assert run_folder.stdout.strip() == "runs_msra/lac/x/metrics.json"  # the run folders themselves stay out
