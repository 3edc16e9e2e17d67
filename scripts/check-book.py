#!/usr/bin/env python3
"""Fails on a broken internal link in the built book (docs/book): a link to a page that
does not exist, or to an anchor its page does not have. Run by `just docs`."""
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlparse

BOOK = Path(__file__).resolve().parents[1] / "docs" / "book"


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


def main():
    if not BOOK.is_dir():
        sys.exit(f"check-book: {BOOK} is missing: run mdbook build docs first")
    pages = {}
    for f in BOOK.rglob("*.html"):
        p = Page()
        p.feed(f.read_text(encoding="utf-8"))
        pages[f.resolve()] = p
    broken = []
    checked = 0
    for f, page in pages.items():
        if f.name in ("print.html", "404.html", "toc.html"):
            continue
        for href in page.links:
            if urlparse(href).scheme or href.startswith("//"):
                continue
            path, frag = urldefrag(href)
            target = (f.parent / path).resolve() if path else f
            checked += 1
            if target not in pages:
                broken.append(f"{f.relative_to(BOOK)}: {href}: no such page")
            elif frag and frag not in pages[target].ids:
                broken.append(f"{f.relative_to(BOOK)}: {href}: no such anchor")
    for b in broken:
        print(f"check-book: broken link {b}")
    if broken:
        sys.exit(1)
    print(f"check-book: {checked} internal links in {len(pages)} pages, none broken")


if __name__ == "__main__":
    main()
