"""A flame graph as SVG from py-spy's collapsed stacks (`frame;frame;... count` per line).

    python -m bench.compare.flamegraph PROFILE.txt [OUT.svg] [--title TITLE]

Each box is a function; its width is the share of samples with it on the stack, its children
stand on it. Hovering shows the function and its share. Written here rather than installed: the
usual renderers (inferno, flamegraph.pl) are not on PyPI, and this needs a page of code.
"""

from __future__ import annotations

import argparse
import html
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from bench.compare.profile import _frames

WIDTH = 1200
ROW = 16
FONT = 11
# Boxes narrower than this many pixels are left out (they could not be read anyway).
MIN_WIDTH = 0.4


@dataclass
class Node:
    name: str
    samples: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def tree(collapsed: str) -> Node:
    root = Node("all")
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        root.samples += samples
        node = root
        for frame in _frames(stack):
            node = node.children.setdefault(frame, Node(frame))
            node.samples += samples
    return root


def _colour(name: str) -> str:
    """A warm colour that stays the same for a function across graphs."""
    hue = zlib.crc32(name.encode()) % 40  # red to yellow
    return f"hsl({hue}, 80%, {60 + zlib.crc32(name[::-1].encode()) % 15}%)"


def render(collapsed: str, title: str) -> str:
    root = tree(collapsed)
    boxes: list[str] = []
    depth_reached = 0

    def draw(node: Node, x: float, depth: int) -> None:
        nonlocal depth_reached
        width = WIDTH * node.samples / root.samples
        if width < MIN_WIDTH:
            return
        depth_reached = max(depth_reached, depth)
        share = 100 * node.samples / root.samples
        name = node.name
        text_room = int(width / (FONT * 0.6))
        cut = name if len(name) <= text_room else name[: max(0, text_room - 2)] + ".."
        label, text = html.escape(name), html.escape(cut)
        boxes.append(
            f"<g><title>{label}: {node.samples} samples, {share:.1f}%</title>"
            f'<rect x="{x:.1f}" y="{{y{depth}}}" width="{width:.1f}" height="{ROW - 1}" '
            f'fill="{_colour(node.name)}" rx="2"/>'
            + (
                f'<text x="{x + 3:.1f}" y="{{t{depth}}}" font-size="{FONT}">{text}</text>'
                if text_room > 3
                else ""
            )
            + "</g>"
        )
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, child_x, depth + 1)
            child_x += WIDTH * child.samples / root.samples

    if root.samples:
        draw(root, 0.0, 0)
    height = (depth_reached + 1) * ROW + 40
    body = "\n".join(boxes)
    for depth in range(depth_reached + 1):  # the root at the bottom, flames upwards
        y = height - 10 - (depth + 1) * ROW
        body = body.replace(f"{{y{depth}}}", str(y)).replace(f"{{t{depth}}}", str(y + ROW - 4))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace">\n'
        f'<rect width="100%" height="100%" fill="#fdfdfd"/>\n'
        f'<text x="{WIDTH / 2}" y="20" font-size="14" text-anchor="middle">'
        f"{html.escape(title)} ({root.samples} samples)</text>\n{body}\n</svg>\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare.flamegraph")
    parser.add_argument("profile", type=Path, help="py-spy collapsed stacks (raw format)")
    parser.add_argument("output", type=Path, nargs="?", help="default: PROFILE with .svg")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    output = args.output or args.profile.with_suffix(".svg")
    output.write_text(render(args.profile.read_text(), args.title or args.profile.stem))
    print(output)


if __name__ == "__main__":
    main()
