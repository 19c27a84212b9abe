"""The static leaderboard site: every entry on its pages, nothing external, labels escaped, and a
real headless Chromium that loads the pages, sorts a table and takes a screenshot.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` and the selenium package;
without them it is skipped, saying what to install.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from click.testing import CliRunner

from ropebench.cli.site import site as site_command
from ropebench.errors import UsageError
from ropebench.leaderboard import load_suite, suite_names
from ropebench.leaderboard.site import MARKER, build_site
from ropebench.protocol import ALL_TASKS

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None  # plots are an extra
REPOSITORY_ROOT = Path(__file__).resolve().parents[1] / "leaderboards"
EVIL_LABEL = "<script>alert(1)</script>"
EVIL_DESCRIPTION = "<img src=x onerror=alert(2)> & friends"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _add_escaping_suite(root: Path) -> None:
    """A copy of rope-test as suite 'escaping' whose second entry has a hostile label."""
    source = root / "rope-test"
    target = root / "escaping"
    target.mkdir()
    spec = json.loads((source / "suite.json").read_text(encoding="utf-8"))
    first, second = spec["entries"]
    spec.update(name="escaping", title="Escaping <b>test</b>", entries=[first, "evil"])
    (target / "suite.json").write_text(json.dumps(spec), encoding="utf-8")
    shutil.copy(source / f"{first}.json", target / f"{first}.json")
    evil = json.loads((source / f"{second}.json").read_text(encoding="utf-8"))
    evil.update(name="evil", label=EVIL_LABEL, description=EVIL_DESCRIPTION)
    for name in (first, "evil"):
        path = target / f"{name}.json"
        entry = evil if name == "evil" else json.loads(path.read_text(encoding="utf-8"))
        entry["suite"] = "escaping"
        path.write_text(json.dumps(entry), encoding="utf-8")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """(leaderboards root, site directory, files written): the repository's suites plus 'escaping'."""
    base = tmp_path_factory.mktemp("site")
    root = base / "leaderboards"
    shutil.copytree(REPOSITORY_ROOT, root)
    _add_escaping_suite(root)
    out = base / "public"
    return root, out, build_site(root, out)


class _Page(HTMLParser):
    """What a test needs from a page: references, rows per table, scripts, visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.references: list[str] = []
        self.rows: dict[str, list[str]] = {}
        self.scripts = 0
        self.text: list[str] = []
        self.style = ""
        self._table: str | None = None
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.references += [value or "" for name, value in attrs
                            if name in ("href", "src", "srcset", "action", "data", "poster", "background")]
        if tag == "table":
            self._table = values.get("id") or ""
            self.rows[self._table] = []
        if tag == "tr" and self._table is not None and "data-entry" in values:
            self.rows[self._table].append(values["data-entry"] or "")
        self.scripts += tag == "script"
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] == "style":
            self.style += data
        elif not self._in or self._in[-1] != "script":
            self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_every_entry_appears_and_nothing_is_external(built: tuple[Path, Path, list[Path]]) -> None:
    root, out, written = built
    names = suite_names(root)
    assert names == ["escaping", "rope-sim", "rope-test"]
    assert written[:4] == [out / "index.html", *(out / f"{name}.html" for name in names)]
    assert all(path.is_file() for path in written) and (out / MARKER).is_file()
    index = _parse(out / "index.html")
    assert index.rows["suites"] == names
    for page_path in sorted(out.glob("*.html")):
        page = _parse(page_path)
        assert page.scripts == 1, page_path  # the page's own script; no label became one
        assert "url(" not in page.style and "@import" not in page.style
        for reference in page.references:
            parts = urlsplit(reference)
            assert not parts.scheme and not parts.netloc and not reference.startswith("//"), reference
            assert (page_path.parent / unquote(parts.path)).is_file(), reference  # no broken link
    for name in names:
        suite = load_suite(root, name)
        page = _parse(out / f"{name}.html")
        text = "".join(page.text)
        for entry in suite.entries:
            cross = [task for task in entry["results"] if "2" in task and task[0] != task[2]]
            assert page.rows[f"{name}-table1"].count(entry["name"]) == len(cross)
            assert page.rows[f"{name}-matrix-{entry['name']}"] == [entry["name"]] * 3
            assert entry["label"] in text and entry["description"] in text and entry["source"] in text
            if entry["kind"] == "computed":
                assert entry["submission"]["sha256"] in text and entry["manifest"]["sha256"] in text
        if not HAS_MATPLOTLIB:  # the pages say so instead (test_without_matplotlib_the_pages_say_so)
            assert not any(r.endswith(".svg") and r.startswith("plots/") for r in page.references)
            continue
        assert f"plots/{name}/curves.svg" in page.references
        computed = [entry["name"] for entry in suite.entries if entry["kind"] == "computed"]
        assert [r for r in page.references if r.endswith("-matrix.svg")] == [
            f"plots/{name}/{entry}-matrix.svg" for entry in computed]
        # The repository's computed entries carry their per-query files: one histogram each.
        assert [r for r in page.references if r.endswith("-difficulty.svg")] == [
            f"plots/{name}/{entry}-difficulty.svg" for entry in computed]
    raw = (out / "escaping.html").read_text(encoding="utf-8")
    assert EVIL_LABEL not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "<img src=x" not in raw and "<b>test</b>" not in raw


def test_rebuild_is_identical_and_refuses_unsafe_outputs(tmp_path: Path) -> None:
    root = tmp_path / "leaderboards"
    root.mkdir()
    shutil.copytree(REPOSITORY_ROOT / "rope-test", root / "rope-test")
    _add_escaping_suite(root)
    shutil.rmtree(root / "rope-test")
    first = {path.name: path.read_bytes() for path in build_site(root, tmp_path / "a", plots=False)}
    again = build_site(root, tmp_path / "a", plots=False)  # replaces the earlier build
    assert {path.name: path.read_bytes() for path in again} == first
    assert "No plots: this site was built without plots" in first["escaping.html"].decode()
    assert not list(tmp_path.glob(".a.*"))  # no staging directory left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="did not build"):
        build_site(root, tmp_path / "mine", plots=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(UsageError, match="inside the leaderboard"):
        build_site(root, root / "site", plots=False)


def test_without_matplotlib_the_pages_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "leaderboards"
    root.mkdir()
    shutil.copytree(REPOSITORY_ROOT / "rope-sim", root / "rope-sim")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    written = build_site(root, tmp_path / "site")
    assert [path.name for path in written] == ["index.html", "rope-sim.html", "favicon.svg"]
    page = (tmp_path / "site" / "rope-sim.html").read_text(encoding="utf-8")
    assert "matplotlib is not installed" in page and "pip install &#x27;ropebench[plot]&#x27;" in page
    assert "<img" not in page


def test_site_command_prints_the_files(tmp_path: Path) -> None:
    root = tmp_path / "leaderboards"
    shutil.copytree(REPOSITORY_ROOT, root)
    result = CliRunner().invoke(site_command, ["--root", str(root), "--out", str(tmp_path / "s"), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(tmp_path / "s" / name)
                                          for name in ("index.html", "rope-sim.html", "rope-test.html", "favicon.svg")]


# ------------------------------------------------------------------------------- real browser


def _unavailable(why: str) -> None:
    """Skip, saying what to install; CI sets ROPEBENCH_REQUIRE_BROWSER=1 so that a missing
    browser fails instead of passing unnoticed."""
    message = f"headless Chromium not installed (apt-get install chromium chromium-driver): {why}"
    if os.environ.get("ROPEBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " (ROPEBENCH_REQUIRE_BROWSER=1)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser_installed() -> None:
    """Skip unless selenium, chromium and chromedriver are there. Module-scoped and requested
    first, so it runs before the site is built and a skip costs nothing."""
    try:
        import selenium  # noqa: F401
    except ImportError as error:
        _unavailable(f"selenium is missing ({error}; pip install selenium)")
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if missing:
        _unavailable(f"{', '.join(missing)} not found")


@pytest.fixture()
def chromium(browser_installed: None, tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium driven by selenium, logging the console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An installed browser that does not start is a failure, not a skip.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture()
def served(built: tuple[Path, Path, list[Path]]) -> Iterator[str]:
    """The site served over HTTP on the loopback interface (an ephemeral port)."""
    handler = functools.partial(_QuietHandler, directory=str(built[1]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _rows(driver: Any, table: str) -> list[tuple[str, str, float]]:
    """(task, entry, R@1) of each row of a table, in the order shown."""
    return [tuple(row) for row in driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map(function (r) {"
        " return [r.cells[0].textContent, r.getAttribute('data-entry'),"
        " parseFloat(r.cells[2].getAttribute('data-sort'))]; });", f"#{table}")]


def test_in_a_real_browser(browser_installed: None, chromium: Any, built: tuple[Path, Path, list[Path]],
                           served: str, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    root, driver = built[0], chromium
    driver.get(f"{served}/index.html")
    links = [link.get_attribute("href") for link in driver.find_elements(By.CSS_SELECTOR, "#suites a")]
    assert links == [f"{served}/{name}.html" for name in suite_names(root)]
    for name in suite_names(root):
        driver.get(f"{served}/{name}.html")
        suite = load_suite(root, name)
        shown = {row.get_attribute("data-entry") for row in
                 driver.find_elements(By.CSS_SELECTOR, f"#{name}-table1 tbody tr")}
        assert shown == {entry["name"] for entry in suite.entries}
        broken = driver.execute_script(
            "return Array.from(document.images).filter(function (i) {"
            " return !i.complete || i.naturalWidth === 0; }).map(function (i) { return i.src; });")
        computed = [entry for entry in suite.entries if entry["kind"] == "computed"]
        # curves, and per computed entry its matrix and its first-hit ranks
        expected_images = 1 + 2 * len(computed) if HAS_MATPLOTLIB else 0
        assert broken == [] and len(driver.find_elements(By.TAG_NAME, "img")) == expected_images
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == [], severe
    # The hostile label is text in the table, and nothing it holds ran.
    driver.get(f"{served}/escaping.html")
    labels = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#escaping-table1 tbody td:nth-child(2)")]
    assert EVIL_LABEL in labels
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 (the property raises when no alert is open)
    # Sorting: R@1 best first, then reversed, then back to the protocol's task order.
    before = _rows(driver, "escaping-table1")
    header = driver.find_element(By.XPATH, "//table[@id='escaping-table1']//th[3]/button")
    assert header.text == "R@1"
    header.click()
    assert _rows(driver, "escaping-table1") == sorted(before, key=lambda row: -row[2])
    assert _rows(driver, "escaping-table1") != before
    header.click()
    assert _rows(driver, "escaping-table1") == sorted(before, key=lambda row: row[2])
    ascending = _rows(driver, "escaping-table1")
    driver.find_element(By.XPATH, "//table[@id='escaping-table1']//th[1]/button").click()
    # Stable: within a task the rows keep the R@1 order they had.
    assert _rows(driver, "escaping-table1") == sorted(ascending, key=lambda row: ALL_TASKS.index(row[0]))
    screenshot = tmp_path / "escaping.png"
    assert driver.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and screenshot.stat().st_size > 1000
    assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []


def test_metadata_filters_and_ranks_on_the_suite_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries added with --metadata get the filters' data attributes; computed entries get rank intervals."""
    import json

    import ropebench
    from ropebench import leaderboard as lb
    from tests.test_leaderboard import write_dataset

    write_dataset(tmp_path / "data")
    root = tmp_path / "leaderboards"
    lb.init_suite(root, "tiny", manifest=tmp_path / "data" / "manifest.parquet", title="Tiny", description="t")
    monkeypatch.chdir(tmp_path)
    for name, compress in (("full", None), ("bits", "binary")):
        ropebench.evaluate("data/sub.parquet", manifest="data/manifest.parquet", compress=compress).write(
            f"{name}.json", per_query=f"{name}.parquet")
    (tmp_path / "meta.json").write_text(json.dumps({"model": {"name": "Tiny", "parameters": 5_000_000},
                                                    "training_data": {"zero_shot": True}}))
    lb.add_entry("full.json", root=root, suite="tiny", name="full", label="Full", metadata="meta.json")
    lb.add_entry("bits.json", root=root, suite="tiny", name="bits", label="Bits")
    from ropebench.leaderboard.site import build_site

    build_site(root, tmp_path / "site", plots=False)
    page = (tmp_path / "site" / "tiny.html").read_text()
    assert '<form id="filters"' in page and 'id="only-zero-shot"' in page and 'id="max-bytes"' in page
    assert ('<tr data-entry="full" data-zero-shot="true" data-bytes="32" data-parameters="5000000">' in page)
    assert '<tr data-entry="bits" data-bytes="1">' in page  # filled from the compression, no training data
    assert "Tiny · d=8 · float32 · zero-shot" in page and "d=8 · binary · compressed binary" in page
    assert 'id="tiny-ranks"' in page and '<span class="rank">(1–1)</span>' in page
    assert "95% rank interval among the 2 computed entries" in page


def test_code_spans_in_descriptions_are_code_not_backticks(built: tuple[Path, Path, list[Path]]) -> None:
    """Suite and entry descriptions are written in Markdown-ish text (the README renders them too):
    `x` becomes <code>x</code> on the site, escaped like everything else."""
    _, out, _ = built
    page = (out / "rope-sim.html").read_text(encoding="utf-8")
    assert "<code>ropebench leaderboard verify</code>" in page
    assert "`" not in page.split("<script")[0]


def test_a_suite_with_fewshot_entries_shows_the_fewshot_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import ropebench
    from ropebench import leaderboard as lb
    from tests.test_leaderboard import write_dataset

    write_dataset(tmp_path / "data")
    lb.init_suite(tmp_path / "leaderboards", "tiny", manifest=tmp_path / "data" / "manifest.parquet", title="Tiny",
                  description="t", label_column="model", captions={"1": "Cross", "2": "Intra"})
    monkeypatch.chdir(tmp_path)
    result = ropebench.evaluate("data/sub.parquet", manifest="data/manifest.parquet", ci=False, fewshot=True,
                                shots=(1,), draws=2)
    result.write_json(tmp_path / "results.json")
    lb.add_entry(tmp_path / "results.json", root=tmp_path / "leaderboards", suite="tiny", name="a", label="A")
    build_site(tmp_path / "leaderboards", tmp_path / "site", plots=False)
    page = (tmp_path / "site" / "tiny.html").read_text(encoding="utf-8")
    assert "<h2>Few-shot classification</h2>" in page and "P2V/1-shot" in page
    acc = result.fewshot["tasks"]["P2V"]["1-shot"]["acc"]
    assert f"{acc:.2f}" in page
