"""The documentation site builds in strict mode (a broken link, anchor or missing page fails), and
LICENSE and CITATION.cff say what they must."""
import datetime
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
RESULT_PAGE = re.compile(r"^(\d{4}-\d{2}-\d{2})-[a-z0-9-]+\.md$")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """mkdocs build --strict of `config` into `site` (mkdocs-material comes with the test extra)."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--config-file", str(config), "--site-dir", str(site)],
                          cwd=config.parent, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def nav_pages(nav) -> list[str]:
    """Every page file mkdocs.yml's nav lists, in order."""
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out.extend(nav_pages(value) if isinstance(value, list) else [value])
    return out


def load_mkdocs_config() -> dict:
    # plain YAML: no !!python tags in this project's mkdocs.yml
    return yaml.safe_load((REPO / "mkdocs.yml").read_text())


def test_site_builds_in_strict_mode(tmp_path):
    result = build(REPO / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    # Every page of the nav became a page of the site, and every page in docs/ is in the nav
    # (strict mode already refuses one that is not: the omitted_files check).
    pages = nav_pages(load_mkdocs_config()["nav"])
    on_disk = sorted(str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md"))
    assert sorted(pages) == on_disk
    for page in pages:
        stem = page[:-len(".md")]
        html = stem + ".html" if Path(stem).name == "index" else stem + "/index.html"
        assert (tmp_path / "site" / html).is_file(), page
    # The pictures the pages show are in the built site.
    for picture in ("viewer.png", "tracking.png", "bench.png"):
        assert (tmp_path / "site" / picture).is_file(), picture


def test_a_broken_link_or_anchor_fails_the_build(tmp_path):
    """The strictness is real: a copy of the site with one bad anchor and one missing page fails,
    naming both."""
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "install.md"
    page.write_text(page.read_text() + "\n[a](training.md#no-such-section) [b](no-such-page.md)\n")
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "no-such-section" in log and "no-such-page.md" in log, log


def test_results_pages_are_dated_and_listed_in_date_order():
    pages = [p for p in nav_pages(load_mkdocs_config()["nav"]) if p.startswith("results/")]
    dated = [Path(p).name for p in pages if p != "results/index.md"]
    assert dated, "no results pages in the nav"
    dates = []
    for name in dated:
        m = RESULT_PAGE.match(name)
        assert m, f"results/{name} is not named YYYY-MM-DD-slug.md"
        dates.append(datetime.date.fromisoformat(m.group(1)))
    assert dates == sorted(dates)
    index = (REPO / "docs" / "results" / "index.md").read_text()
    for name in dated:                   # the index links every results page
        assert f"({name})" in index, name


def test_license_is_the_apache_license_2_0():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text.splitlines()[1] and "Version 2.0, January 2004" in text
    # The nine sections of the terms, in order, and the end of the terms.
    headings = ["Definitions", "Grant of Copyright License", "Grant of Patent License", "Redistribution",
                "Submission of Contributions", "Trademarks", "Disclaimer of Warranty",
                "Limitation of Liability", "Accepting Warranty or Additional Liability"]
    at = [text.index(f"{k}. {h}.") for k, h in enumerate(headings, 1)]
    assert at == sorted(at)
    assert text.index("END OF TERMS AND CONDITIONS") > at[-1]


def test_citation_cff_parses_and_matches_the_package():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "version", "date-released"):   # CFF's required keys, and ours
        assert cff.get(key), key
    # tomllib is Python 3.11+; the project supports 3.10, and [project] has the only version line.
    version = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert str(cff["version"]) == version
    released = cff["date-released"]
    assert isinstance(released, datetime.date) or datetime.date.fromisoformat(released)
    assert cff["license"] == "Apache-2.0"
    for person in cff["authors"]:        # an entity (name) or a person (family-names)
        assert person.get("name") or person.get("family-names"), person
    for ref in cff.get("references", []):
        assert ref.get("type") and ref.get("title") and ref.get("authors"), ref
    assert any("2509.19804" in str(ref) for ref in cff["references"])     # DynaFlow
