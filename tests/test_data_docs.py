"""Data Docs offline: validate's pages load every script, stylesheet, font and image from the run folder."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

import great_expectations
from tasks.config import ValidateConfig
from tasks.data_docs import ASSETS_DIR, LOCAL_COPIES, VENDOR_DIR, make_offline, offline_page
from tasks.validate import validate_reviews
from tests.test_validate import make_corpus

GX_TEMPLATES = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
# What a browser fetches by itself: scripts, stylesheets, icons, images, and url() in styles (fonts, backgrounds).
ASSET_LINK = re.compile(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+?)["']?\s*\)""")


def asset_links(text: str) -> list[str]:
    return ASSET_LINK.findall(text) + [url for url in CSS_URL.findall(text) if not url.startswith("data:")]


def local_file(base: Path, link: str) -> Path:
    return (base / link.split("?", 1)[0].split("#", 1)[0]).resolve()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("docs")
    validate_reviews(ValidateConfig(), make_corpus(tmp_path / "ingest"), tmp_path / "validate")
    return tmp_path / "validate" / "data_docs"


def test_written_pages_load_no_asset_from_the_network_and_every_local_one_exists(site: Path):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 7  # index, two suites, four validation results
    for page in pages:
        html = page.read_text(encoding="utf-8")
        links = asset_links(html)
        assert any("jquery" in link for link in links) and any("bootstrap.min.css" in link for link in links)
        remote = [link for link in links if link.startswith(("http://", "https://", "//"))]
        assert remote == [], f"{page.relative_to(site)} loads {remote}"
        missing = [link for link in links if not local_file(page.parent, link).is_file()]
        assert missing == [], f"{page.relative_to(site)} links {missing}, which are not in the site"
        assert "integrity=" not in html and "crossorigin=" not in html  # a file:// page cannot make those fetches
    for stylesheet in (site / VENDOR_DIR).rglob("*.css"):  # fonts named by the bundled stylesheets came too
        for link in asset_links(stylesheet.read_text(encoding="utf-8")):
            assert not link.startswith(("http://", "https://")) and local_file(stylesheet.parent, link).is_file(), link


def test_the_site_carries_only_the_packages_its_pages_use(site: Path):
    packages = {path.name for path in (site / VENDOR_DIR).iterdir()}
    assert "jquery-3.7.1" in packages and "fontawesome-free-6.6.0" in packages
    assert not any(name.startswith("vega") for name in packages)  # rnnflow's suite draws no chart


def test_every_asset_gx_links_has_a_bundled_copy():
    templates = "".join(path.read_text(encoding="utf-8") for path in GX_TEMPLATES.rglob("*.j2"))
    linked = {link for link in ASSET_LINK.findall(templates) if link.startswith("https://")}
    assert linked, f"no CDN link found in {GX_TEMPLATES}: has GX moved its templates?"
    assert linked <= set(LOCAL_COPIES), f"GX links {sorted(linked - set(LOCAL_COPIES))}: bundle them (tasks/data_docs_assets/README.md)"
    for name in LOCAL_COPIES.values():
        assert (ASSETS_DIR / name).is_file(), name


def test_bundled_scripts_are_the_files_gx_integrity_hashes_name():
    templates = "".join(path.read_text(encoding="utf-8") for path in GX_TEMPLATES.rglob("*.j2"))
    pinned = re.findall(r'src="(https://[^"]+)" integrity="sha384-([^"]+)"', templates)
    assert pinned
    for url, digest in pinned:
        local = (ASSETS_DIR / LOCAL_COPIES[url]).read_bytes()
        assert base64.b64encode(hashlib.sha384(local).digest()).decode() == digest, url


def _page(tmp_path: Path, body: str) -> Path:
    page = tmp_path / "site" / "validations" / "suite" / "page.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>\n'
        '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>\n' + body,
        encoding="utf-8",
    )
    return page


def test_a_page_that_draws_a_chart_keeps_vega_from_the_bundle(tmp_path: Path):
    page = _page(tmp_path, "<script>vegaEmbed('#chart', spec);</script>")
    assert make_offline(tmp_path / "site") == []
    html = page.read_text()
    assert '<script src="../../static/vendor/vega-5.33.1/vega.min.js"></script>' in html
    assert (tmp_path / "site" / VENDOR_DIR / "vega-5.33.1" / "vega.min.js").is_file()


def test_a_page_without_charts_drops_vega_and_keeps_the_rest(tmp_path: Path):
    page = _page(tmp_path, "<p>no chart</p>")
    make_offline(tmp_path / "site")
    html = page.read_text()
    assert "vega" not in html and '<script src="../../static/vendor/jquery-3.7.1/jquery.min.js"></script>' in html
    assert not (tmp_path / "site" / VENDOR_DIR / "vega-5.33.1").exists()


def test_an_address_without_a_copy_is_left_as_it_is_and_reported(tmp_path: Path, caplog):
    html = '<link rel="stylesheet" href="https://example.invalid/new.css"><a href="https://greatexpectations.io">GX</a>'
    page = tmp_path / "index.html"
    rewritten, used, remote = offline_page(html, tmp_path, page)
    assert rewritten == html and used == set() and remote == ["https://example.invalid/new.css"]
    page.write_text(html)
    with caplog.at_level("WARNING"):
        assert make_offline(tmp_path) == ["https://example.invalid/new.css"]
    assert "https://example.invalid/new.css" in caplog.text
