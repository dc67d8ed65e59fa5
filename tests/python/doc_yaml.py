"""Parses every ```yaml block of a Markdown file with PyYAML and prints them as JSON: a
list with one entry per block, each the list of its documents (`---` separates them).

    doc_yaml.py docs/OPERATIONS.md

Exits 1 naming the block (its first line number) that does not parse.
"""

import json
import sys

import yaml


def blocks(text):
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```yaml":
            start = i + 1
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            yield start + 1, "\n".join(lines[start:end])
            i = end
        i += 1


def main():
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = []
    for line, block in blocks(text):
        try:
            out.append(list(yaml.safe_load_all(block)))
        except yaml.YAMLError as e:
            print(f"doc_yaml: {path}:{line}: {e}", file=sys.stderr)
            sys.exit(1)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
