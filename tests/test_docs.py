"""The README stays a newcomer's page (issue 21 item 2) and no documentation link is dead.

README.md is at most 250 lines and names the two commands a newcomer needs (`make dev` and
`make test`); everything else lives in docs/. Every relative link in README.md and docs/*.md must
name a file that exists and, when it points into a Markdown file, a heading that file has (anchors
as GitHub makes them from headings).
"""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 250
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the target ends at whitespace (a title may follow) or ")".
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: links and headings in code are not links."""
    lines, in_fence = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    kept = []
    for character in text:
        category = unicodedata.category(character)
        if character in " -" or category[0] in "LMN" or category == "Pc":
            kept.append("-" if character == " " else character)
    return "".join(kept)


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def relative_links(path: Path) -> list[tuple[int, str]]:
    links = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            target = match.group(1)
            if not EXTERNAL.match(target):
                links.append((number, target))
    return links


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not linked.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{where} (no heading with that anchor)")
    return problems


def test_the_readme_is_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; move detail into docs/ and link to it"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document):
    assert broken_links(document) == []


def test_the_readme_names_the_dev_and_test_commands():
    # Given the Makefile's targets
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-zA-Z_-]+):", makefile, flags=re.MULTILINE))
    # When the README's code blocks are read
    text = README.read_text(encoding="utf-8")
    in_code = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL))
    # Then both commands are there, as commands, and both exist
    for command in ("dev", "test"):
        assert re.search(rf"^\s*make {command}\b", in_code, flags=re.MULTILINE), command
        assert command in targets


def test_ci_runs_the_readmes_test_command():
    # CI checks the newcomer's path: the command it runs is the one the README gives.
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test\b", ci, flags=re.MULTILINE)


# The checker itself must be able to fail.
def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    # Given a document with two good links, two bad ones, and links that are not checked
    target = tmp_path / "docs" / "target.md"
    target.parent.mkdir()
    target.write_text("# Title\n\n## Make `dev`: in detail\n\n## Make `dev`: in detail\n")
    source = tmp_path / "docs" / "source.md"
    source.write_text(
        "[ok](target.md#make-dev-in-detail) [again](target.md#make-dev-in-detail-1)\n"
        "[gone](missing.md) [no anchor](target.md#nothing) `[in code](missing.md)`\n"
        "```\n[in a block](missing.md)\n```\n[external](https://example.com/x.md)\n"
    )
    # When it is checked
    problems = broken_links(source, root=tmp_path)
    # Then exactly the two bad links are reported
    assert problems == [
        "docs/source.md:2: missing.md (no such file)",
        "docs/source.md:2: target.md#nothing (no heading with that anchor)",
    ]


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Lambda containers: `make sam-local`", "lambda-containers-make-sam-local"),
        ("Tasks (function `tasks`)", "tasks-function-tasks"),
        ("Chat: bounded, exactly-once, metered", "chat-bounded-exactly-once-metered"),
        ("1. Create the secrets (once per stage)", "1-create-the-secrets-once-per-stage"),
        ("`CHAT_MAX_STEPS` and **co**", "chat_max_steps-and-co"),
    ],
)
def test_anchors_are_made_as_github_makes_them(heading, slug):
    assert github_slug(heading) == slug
