"""Reading a dashboard page as a test does: elements by class, their data attributes and visible text."""

from __future__ import annotations

from html.parser import HTMLParser


class Elements(HTMLParser):
    """Every element with a given class: its attributes and its visible text (entities decoded; SVG tooltips,
    ``<title>``, left out)."""

    VOID = frozenset({"input", "br", "img", "meta", "link", "rect", "circle", "line", "polyline"})

    def __init__(self, css: str) -> None:
        super().__init__()
        self.css = css
        self.found: list[tuple[dict[str, str], list[str]]] = []
        self.open: list[tuple[str, list[str] | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        text: list[str] | None = None
        if self.css in attributes.get("class", "").split():
            text = []
            self.found.append((attributes, text))
        if tag not in self.VOID:
            self.open.append((tag, text))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.open.pop()

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if any(tag == "title" for tag, _ in self.open):
            return
        for _, text in self.open:
            if text is not None:
                text.append(data)


def elements(html: str, css: str) -> list[tuple[dict[str, str], str]]:
    parser = Elements(css)
    parser.feed(html)
    return [(attributes, " ".join(" ".join(text).split())) for attributes, text in parser.found]
