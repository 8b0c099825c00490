"""The guides' examples run as written: every fenced ``python`` and ``bash`` block of
docs/guides/*.md, each guide's blocks in order in a fresh folder (with small stand-ins for the
user's own files they name: X.npz in the note's layout, big.csv). A block that installs packages
is CI's own step; the one that starts a web server is fenced as ``text`` and says so.

The built site is checked in a real browser where it was built (``bash docs/build.sh``)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigd import datasets

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ROOT / "docs" / "guides"
SITE = ROOT / "docs" / "_build" / "html"


def blocks(guide: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (GUIDES / guide).read_text(), re.S)


def block(guide: str, language: str, containing: str) -> str:
    """The guide's one fenced block of ``language`` that contains ``containing``."""
    found = [text for text in blocks(guide, language) if containing in text]
    assert len(found) == 1, f"{guide} has {len(found)} {language} blocks with {containing!r}"
    return found[0]


@pytest.fixture()
def users_files(tmp_path):
    """The files the guides name as the user's: X.npz (features x samples) and big.csv (a
    header, then features and a label per row)."""
    pytest.importorskip("sklearn")
    train, _ = datasets.load("digits")
    np.savez(tmp_path / "X.npz", X=train.X.T, y=train.y)
    rows = np.column_stack([train.X, train.y])
    header = ",".join([f"pixel{i}" for i in range(train.X.shape[1])] + ["label"])
    np.savetxt(tmp_path / "big.csv", rows, delimiter=",", header=header, comments="", fmt="%g")
    return tmp_path


def run_bash(script: str, folder: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent  # the environment's minigd, as an activated venv has
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f'export PATH="{bin_dir}:$PATH"\n{script}'],
        cwd=folder, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, MPLBACKEND="Agg"),
    )  # fmt: skip


def run_python(code: str, folder: Path) -> subprocess.CompletedProcess:
    code = "import matplotlib\nmatplotlib.use('Agg')\n" + code
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_every_runnable_block_is_run_by_a_test():
    """A block added to a guide gets a test here, or this fails."""
    tested = {
        ("getting-started.md", "python"): 1,
        ("getting-started.md", "bash"): 2,  # the first installs: CI's own step
        ("the-note.md", "python"): 2,
        ("the-note.md", "bash"): 1,
        ("choosing-a-batch-size.md", "python"): 1,
        ("choosing-a-batch-size.md", "bash"): 3,
        ("your-own-data.md", "bash"): 1,
        ("more-processes.md", "bash"): 1,
        ("clusters.md", "bash"): 1,
        ("scikit-learn.md", "python"): 1,
    }
    found = {}
    for guide in sorted(GUIDES.glob("*.md")):
        for language in ("python", "bash"):
            if n := len(blocks(guide.name, language)):
                found[(guide.name, language)] = n
    assert found == tested


def test_getting_started_from_python(tmp_path):
    pytest.importorskip("mlxtend")
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    done = run_python(block("getting-started.md", "python", "import minigd\n"), tmp_path)
    assert done.returncode == 0, done.stderr
    printed = re.search(r"^(0\.\d+) (0\.\d+)$", done.stdout, re.M)  # the first print()
    accuracy, score = map(float, printed.groups())
    assert accuracy > 0.85 and score > 0.85
    assert "batch size" in done.stdout  # the advisor's recommendation, printed


def test_getting_started_from_the_command_line(users_files):
    pytest.importorskip("mlxtend")
    done = run_bash(block("getting-started.md", "bash", "minigd train --resume"), users_files)
    assert done.returncode == 0, done.stderr[-2000:]
    for run in ("adam64", "one"):
        assert (users_files / "runs" / run / "model.npz").exists()
    assert (users_files / "reports" / "time-budget" / "report.html").exists()
    assert blocks("getting-started.md", "bash")[0].startswith("pip install")


def test_the_note_reproduced(tmp_path):
    code = "\n".join(blocks("the-note.md", "python"))
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "938 batches an epoch" in done.stdout and "(64, 784)" in done.stdout
    table = [line.split() for line in done.stdout.splitlines()[2:5]]
    assert [row[:2] for row in table] == [["full", "20"], ["32", "900"], ["1", "28740"]]
    noise = [float(row[2]) for row in table]
    assert noise[0] < noise[1] < noise[2]  # the smaller the batch, the noisier the curve
    first_epoch = [float(row[3]) for row in table]
    assert first_epoch[0] < first_epoch[1] < first_epoch[2]  # and the more progress an epoch
    done = run_bash(blocks("the-note.md", "bash")[0], tmp_path)
    assert done.returncode == 0 and "batch size: full (all 1437 samples)" in done.stdout


def test_choosing_a_batch_size(tmp_path):
    pytest.importorskip("mlxtend")
    done = run_python(block("choosing-a-batch-size.md", "python", "advise("), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "batch size:" in done.stdout and "<- knee" in done.stdout
    done = run_bash(block("choosing-a-batch-size.md", "bash", "minigd advise"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_bash(block("choosing-a-batch-size.md", "bash", "--tensorboard"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((tmp_path / "runs" / "watched" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow  # ~40 s: three seeds, two targets, a learning-rate grid per batch size
def test_the_sweep_of_the_guide(tmp_path):
    pytest.importorskip("mlxtend")
    done = run_bash(block("choosing-a-batch-size.md", "bash", "minigd sweep"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "reports" / "sweep" / "report.html").exists()


def test_your_own_data_larger_than_memory(users_files):
    done = run_bash(block("your-own-data.md", "bash", "minigd convert big.csv"), users_files)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (users_files / "big-shards" / "minigd-shards.json").exists()
    assert (users_files / "runs" / "big" / "model.npz").exists()


def needs_mpiexec() -> None:
    pytest.importorskip("mpi4py")
    if shutil.which("mpiexec", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mpiexec is not installed (the mpi extra)")


def test_more_than_one_process(users_files):
    needs_mpiexec()
    done = run_bash(block("more-processes.md", "bash", "mpiexec"), users_files)
    assert done.returncode == 0, done.stderr[-2000:]
    history = json.loads((users_files / "runs" / "dp" / "history.json").read_text())
    assert history["epochs"][-1]["epoch"] == 2  # resumed on 3 ranks to the third epoch
    assert "on 3 MPI ranks" in done.stdout


def test_on_a_cluster_the_hostfile_path_tried_on_one_machine(tmp_path):
    needs_mpiexec()
    done = run_bash(block("clusters.md", "bash", "-launcher fork"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "data-parallel on 4 MPI ranks" in done.stdout
    assert (tmp_path / "runs" / "two-hosts" / "model.npz").exists()


def test_for_scikit_learn_users(tmp_path):
    pytest.importorskip("sklearn")
    done = run_python(block("scikit-learn.md", "python", "GridSearchCV"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "'batch_size'" in done.stdout  # the grid's best parameters, printed


# -- the built site in a browser --------------------------------------------------------------
PAGES = ["index.html", "guides/the-note.html", "auto_examples/plot_01_three_regimes.html",
         "api/noise.html"]  # fmt: skip
PROBE = """<script>
window.__problems = [];
addEventListener("error", e => __problems.push(
  e.target && e.target !== window ? "failed to load " + (e.target.src || e.target.href)
                                  : "error: " + e.message), true);
const __error = console.error;
console.error = (...args) => { __problems.push("console: " + args.join(" ")); __error(...args); };
addEventListener("load", () => setTimeout(() => { document.title = JSON.stringify({
  problems: __problems,
  scroll: document.documentElement.scrollWidth, width: innerWidth,
  images: [...document.images].map(i => [i.getAttribute("src"), i.complete && i.naturalWidth > 0]),
  math: document.querySelectorAll("mjx-container").length }); }, 1500));
</script>"""


def test_the_built_site_renders_without_errors_or_sideways_scroll(tmp_path):
    """Pages of the site opened in headless Chromium at 800 and 1280 px: no error in the
    console or on a resource, no horizontal scroll, every image loaded, math typeset."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    if not (SITE / "index.html").exists():
        pytest.skip("the site is not built: bash docs/build.sh (CI builds it before the tests)")
    site = tmp_path / "site"
    shutil.copytree(SITE, site)
    seen = {}
    for page in PAGES:
        original = site / page
        probe = original.with_name("probe-" + original.name)
        text = original.read_text()
        probe.write_text(text.replace("<head>", "<head>" + PROBE, 1))
        for width in (800, 1280):
            seen[page, width] = render(chromium, probe, width, tmp_path)
    for (page, width), (report, log) in seen.items():
        assert report["problems"] == [], (page, width, report["problems"])
        assert not re.search(r":ERROR:CONSOLE|Uncaught", log), (page, width, log[-2000:])
        assert report["scroll"] <= report["width"], (page, width, report)  # no sideways scroll
        assert all(ok for _, ok in report["images"]), (page, width, report["images"])
    assert len(seen["auto_examples/plot_01_three_regimes.html", 800][0]["images"]) >= 1
    assert seen["api/noise.html", 1280][0]["math"] >= 3  # the estimator's equations, typeset


def render(chromium: str, page: Path, width: int, tmp_path: Path) -> tuple[dict, str]:
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / f'profile{width}'}",
         f"--window-size={width},1400", "--virtual-time-budget=8000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    title = re.search(r"<title>(\{.*?\})</title>", done.stdout, re.S)
    assert title, f"{page.name} at {width}px: the probe did not report ({done.stderr[-1000:]})"
    return json.loads(title.group(1).replace("&amp;", "&").replace("&quot;", '"')), done.stderr
