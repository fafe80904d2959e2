"""Great Expectations' Data Docs that render with no network: the CDN links in GX's pages, pointed at bundled copies.

GX 1.x writes pages that load Bootstrap, jQuery, bootstrap-table, Font Awesome (and Vega, for charts) from CDNs
and its logo from S3. Offline they render unstyled, and the index's table, which bootstrap-table fills from
JavaScript, stays empty. tasks/data_docs_assets/ holds the same releases, file for file from their npm packages
(its README: versions, licences, how to move to another GX). make_offline, run once GX has built a site, copies
the packages the pages use into the site's static/vendor/ and points every link at them by a relative path, so
the folder still works once moved, copied into a run or opened from a bucket's copy.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from tasks.logs import step_logger

ASSETS_DIR = Path(__file__).resolve().parent / "data_docs_assets"
VENDOR_DIR = "static/vendor"  # inside the site folder

# Each address GX links (its query string dropped) and the bundled file of the same release.
LOCAL_COPIES: dict[str, str] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap-4.3.1/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1/js/bootstrap.min.js",
    # GX links the unminified file; the .min.css of the same release holds the same rules at a sixth of the size.
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark-1.1.0/css/bootstrap-prefers-dark.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table-1.19.1/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table-1.19.1/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.js",
    # GX links 1.19.0's filter-control stylesheet: its two rules are 1.19.1's, only the version comment differs.
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker-1.9.0/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker-1.9.0/js/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome-free-6.6.0/css/all.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js-1.12.9/umd/popper.min.js",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/vega-embed.min.js",
}
VEGA = frozenset(url for url in LOCAL_COPIES if url.startswith("https://cdn.jsdelivr.net/npm/vega"))

# GX's logos, from its S3 bucket: GX copies the light one into every site (static/images/). It ships no dark one,
# so dark mode shows the light logo rather than none.
GX_IMAGES: dict[str, str] = {
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png": "static/images/logo-long.png",
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png": "static/images/logo-long.png",
}

VEGA_SCRIPT = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*(["'])(https://cdn\.jsdelivr\.net/npm/vega[^"']*)\1[^>]*>\s*</script>\s*""", re.IGNORECASE)
ASSET_TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.IGNORECASE)
TAG_URL = re.compile(r"""\b(?:src|href)\s*=\s*(["'])(https?://[^"']+)\1""", re.IGNORECASE)
# GX's own links into static/ (the favicon), one "../" short on validation pages (GX 1.x's favicon.j2 counts 3, its navbar 4).
STATIC_LINK = re.compile(r"""\bhref\s*=\s*(["'])((?:\./|(?:\.\./)+)static/[^"']+)\1""", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*(["']?)(https?://[^"')]+)\1\s*\)""", re.IGNORECASE)
# A file:// page cannot make the CORS request that integrity checking needs: Chromium refuses the local script.
# The bundled files are the ones these hashes name (tests/test_data_docs.py checks them).
CORS_ATTRIBUTES = re.compile(r"""\s+(?:integrity|crossorigin)\s*=\s*(["'])[^"']*\1""", re.IGNORECASE)


def _site_file(url: str) -> str | None:
    """The path inside the site that stands for a linked address, or None when nothing local does."""
    address = url.split("?", 1)[0].split("#", 1)[0]
    if address in LOCAL_COPIES:
        return f"{VENDOR_DIR}/{LOCAL_COPIES[address]}"
    return GX_IMAGES.get(address)


def _relative(site_dir: Path, page: Path, site_file: str) -> str:
    return Path(os.path.relpath(site_dir / site_file, page.parent)).as_posix()


def _mend_static_link(tag: str, site_dir: Path, page: Path) -> str:
    """A tag's relative link into the site's static/ that misses the file, pointed at it (tags that hit are unchanged)."""
    found = STATIC_LINK.search(tag)
    if found is None or (page.parent / found.group(2)).is_file():
        return tag
    site_file = found.group(2)[found.group(2).index("static/") :]
    if not (site_dir / site_file).is_file():
        return tag
    return tag[: found.start(2)] + _relative(site_dir, page, site_file) + tag[found.end(2) :]


def offline_page(html: str, site_dir: Path, page: Path) -> tuple[str, set[str], list[str]]:
    """One page's HTML with its asset links made local: (html, site files it now loads, addresses left remote).

    Vega's three scripts are dropped from a page that draws no chart (no vegaEmbed call), rather than copied.
    """
    used: set[str] = set()
    remote: list[str] = []

    def local_tag(match: re.Match[str]) -> str:
        tag = match.group(0)
        found = TAG_URL.search(tag)
        if found is None:
            return _mend_static_link(tag, site_dir, page)
        url = found.group(2)
        site_file = _site_file(url)
        if site_file is None:
            remote.append(url)
            return tag
        used.add(site_file)
        tag = tag[: found.start(2)] + _relative(site_dir, page, site_file) + tag[found.end(2) :]
        return CORS_ATTRIBUTES.sub("", tag)

    def local_css_url(match: re.Match[str]) -> str:
        site_file = _site_file(match.group(2))
        if site_file is None:
            remote.append(match.group(2))
            return match.group(0)
        used.add(site_file)
        return f"url('{_relative(site_dir, page, site_file)}')"

    if "vegaEmbed(" not in html:
        html = VEGA_SCRIPT.sub(lambda match: "" if match.group(2) in VEGA else match.group(0), html)
    html = ASSET_TAG.sub(local_tag, html)
    html = CSS_URL.sub(local_css_url, html)
    return html, used, remote


def make_offline(site_dir: Path) -> list[str]:
    """Point every page of a built Data Docs site at local copies; return the addresses left remote (logged).

    The bundled packages a page loads are copied whole into site_dir/static/vendor/ (a stylesheet's fonts with it).
    """
    site_dir = Path(site_dir)
    used: set[str] = set()
    remote: set[str] = set()
    for page in sorted(site_dir.rglob("*.html")):
        html, page_used, page_remote = offline_page(page.read_text(encoding="utf-8"), site_dir, page)
        page.write_text(html, encoding="utf-8")
        used |= page_used
        remote.update(page_remote)
    packages = {Path(name).relative_to(VENDOR_DIR).parts[0] for name in used if name.startswith(f"{VENDOR_DIR}/")}
    for package in sorted(packages):
        shutil.copytree(ASSETS_DIR / package, site_dir / VENDOR_DIR / package, dirs_exist_ok=True)
    logger = step_logger()
    for name in sorted(name for name in used if not (site_dir / name).is_file()):
        logger.warning(f"Data Docs under {site_dir} link {name}, which is not there: is tasks/data_docs_assets/ complete?")
    for url in sorted(remote):
        logger.warning(
            f"Data Docs still load {url} from the network: rnnflow bundles no copy of it "
            f"(tasks/data_docs_assets/README.md says how to add one)."
        )
    return sorted(remote)
