"""Time `mimbench report` and open its report.html in a real headless browser.

    python benchmarks/report_browser_check.py                 # trains a small real suite first (~2-4 min on 2 cores)
    python benchmarks/report_browser_check.py results/quick   # or check an existing suite folder

It (1) runs a small suite with `mimbench run` unless a suite folder is given, (2) times
`write_report` on it (wall and CPU seconds), (3) loads report.html in headless Chromium
(Debian: `apt-get install -y chromium`) and reads back, from the rendered DOM, how many
images decoded and at what size, and (4) takes screenshots (1200x3000 and the whole page)
for a person to look at. Exit code 1 when an image did not decode.
"""

from __future__ import annotations

import argparse
import html.parser
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
name: report-check
description: small real suite for the report's browser check (2 encoders x 2 maskers x 2 ratios x 3 seeds)
dataset: {name: shapes, params: {num_images: 256}}
image_size: 16
seeds: [0, 1, 2]
train: {epochs: 2, batch_size: 64}
eval: {batch_size: 128, reference_masker: {name: patch, params: {ratio: 0.5, mask_patch_size: 4}}}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 16}}, {name: vit, params: {dim: 32, depth: 1, heads: 2}}]
  decoder: [linear]
  masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]
  loss: [l1]
sweep:
  masker.ratio: [0.4, 0.6]
"""

# Appended to a copy of the page: after load, write each image's decoded size into the DOM.
PROBE_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = Array.from(document.images).map(
    (img) => `${img.complete && img.naturalWidth > 0 ? "ok" : "BROKEN"} ${img.naturalWidth}x${img.naturalHeight} `
           + `shown ${img.width}x${img.height} ${img.alt}`).join("\\n");
  document.body.appendChild(out);
});
</script>
"""


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no headless browser found: apt-get install -y chromium")


def chromium(*args: str) -> subprocess.CompletedProcess:
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def run_suite(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    suite = out / "report-check.yaml"
    suite.write_text(SUITE)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mimbench", "run", str(suite), "--out", str(out)], check=False)
    print(f"suite trained and evaluated in {time.perf_counter() - started:.0f} s")
    return out / "report-check"


def time_report(suite_dir: Path) -> None:
    started, cpu = time.perf_counter(), time.process_time()
    from mimbench.report import write_report  # imports (pandas, matplotlib, seaborn) counted apart
    imported, cpu_imported = time.perf_counter(), time.process_time()
    report = write_report(suite_dir)
    done, cpu_done = time.perf_counter(), time.process_time()
    runs = sum(1 for _ in (suite_dir / "runs").iterdir()) if (suite_dir / "runs").is_dir() else 0
    print(f"write_report on {runs} runs: {done - imported:.1f} s wall, {cpu_done - cpu_imported:.1f} s CPU "
          f"(imports: {imported - started:.1f} s wall, {cpu_imported - cpu:.1f} s CPU); "
          f"{len(report.files)} files, warnings: {report.warnings or 'none'}")
    page = (suite_dir / "report.html").read_text()
    self_contained = 'src="figures/' not in page and "<img" in page
    print(f"report.html: {len(page.encode()) / 1e6:.1f} MB, images inlined: {self_contained}")


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.inside, self.text = False, ""

    def handle_starttag(self, tag, attrs):
        self.inside = self.inside or (tag == "pre" and ("id", "image-check") in attrs)

    def handle_data(self, data):
        if self.inside:
            self.text += data

    def handle_endtag(self, tag):
        if tag == "pre":
            self.inside = False


def check_images(page: Path) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "report.html"
        copy.write_text(page.read_text().replace("</body>", PROBE_SCRIPT + "</body>"))
        dom = chromium("--window-size=1200,3000", "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()).stdout
    parser = _Text()
    parser.feed(dom)
    lines = [line for line in parser.text.strip().splitlines() if line]
    print(f"images in the rendered page: {len(lines)}")
    for line in lines:
        print("  " + line)
    return bool(lines) and all(line.startswith("ok ") for line in lines)


def screenshots(page: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in (("report-top.png", "1200,3000"), ("report-full.png", "1200,16000")):
        result = chromium(f"--screenshot={folder / name}", f"--window-size={size}", page.as_uri())
        written = re.search(r"\d+ bytes written", result.stdout + result.stderr)
        print(f"screenshot {folder / name} ({size}): {written.group() if written else 'FAILED: ' + result.stderr[-300:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite_dir", nargs="?", type=Path, help="a finished suite folder (default: run a small suite)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "mimbench-report-check",
                        help="where the small suite and the screenshots go")
    args = parser.parse_args()
    suite_dir = args.suite_dir or run_suite(args.out)
    time_report(suite_dir)
    page = (suite_dir / "report.html").resolve()
    decoded = check_images(page)
    screenshots(page, args.out / "screenshots")
    print("all images decoded" if decoded else "SOME IMAGES DID NOT DECODE")
    sys.exit(0 if decoded else 1)


if __name__ == "__main__":
    main()
