"""The README's figures and links: every image it shows exists and stays light, and every file under
docs/images is shown (a re-measured figure copied at full size, or one left unlinked, fails here)."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
IMAGES = ROOT / "docs" / "images"
MAX_WIDTH_PX = 1600
MAX_BYTES = 300_000

_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
_FILE_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s#]+)(?:#([^)\s]*))?\)")


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_images_exist_and_every_docs_image_is_shown():
    shown = {Path(link) for link in _IMAGE_LINK.findall(_readme())}
    assert shown, "the README shows no figures"
    missing = sorted(str(p) for p in shown if not (ROOT / p).is_file())
    assert not missing, f"README shows images that do not exist: {missing}"
    unlinked = sorted(str(p.relative_to(ROOT)) for p in IMAGES.iterdir() if p.relative_to(ROOT) not in shown)
    assert not unlinked, f"docs/images files the README does not show: {unlinked}"


@pytest.mark.parametrize("image", sorted(IMAGES.iterdir()), ids=lambda p: p.name)
def test_docs_images_are_readme_sized(image: Path):
    size = image.stat().st_size
    assert size <= MAX_BYTES, f"{image.name}: {size} bytes; downscale it (README figures stay <= {MAX_BYTES})"
    pixels = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, f"{image.name}: not a readable image"
    assert pixels.shape[1] <= MAX_WIDTH_PX, f"{image.name}: {pixels.shape[1]} px wide (at most {MAX_WIDTH_PX})"


def _heading_anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_readme_file_links_resolve():
    links = [(t, anchor) for t, anchor in _FILE_LINK.findall(_readme()) if "://" not in t]
    assert links, "the README links no files"
    broken = sorted(t for t, _ in links if not (ROOT / t).exists())
    assert not broken, f"README links files that do not exist: {broken}"
    for target, anchor in links:
        if anchor and target.endswith(".md"):
            anchors = _heading_anchors((ROOT / target).read_text(encoding="utf-8"))
            assert anchor in anchors, f"README links {target}#{anchor}, a heading {target} does not have"
