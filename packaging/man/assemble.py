#!/usr/bin/env python3
"""Completes the mdoc page swift-argument-parser's generate-manual writes from the binary.

  assemble.py GENERATED SECTIONS OUTPUT [OS]

Keeps the generated NAME and SYNOPSIS and the option list (as an OPTIONS section), drops what
generate-manual adds for commands with subcommands (which preforkd has none of), its generic EXIT
STATUS and the --help discussion text, and puts the hand-written sections of SECTIONS in: its
DESCRIPTION first, OPTIONS after it, then the rest. Fails when the generated page does not have
the shape this expects, rather than writing a page with a part missing.
"""
import re
import sys


def fail(message):
    sys.exit("assemble.py: " + message)


generated_path, sections_path, output_path = sys.argv[1:4]
# The footer's operating-system field (generate-manual leaves it empty, which renders as "BSD").
os_name = sys.argv[4] if len(sys.argv) > 4 else ""
lines = open(generated_path, encoding="utf-8").read().splitlines()
hand = [line for line in open(sections_path, encoding="utf-8").read().splitlines()]


def section_starts(lines):
    return [i for i, line in enumerate(lines) if line.startswith(".Sh ")]


starts = section_starts(lines)
names = [lines[i][4:].strip('"') for i in starts]
for needed in ("NAME", "SYNOPSIS", "DESCRIPTION"):
    if needed not in names:
        fail("%s: no %s section (sections: %s)" % (generated_path, needed, ", ".join(names)))


def section(lines, starts, name):
    for n, i in enumerate(starts):
        if lines[i][4:].strip('"') == name:
            end = starts[n + 1] if n + 1 < len(starts) else len(lines)
            return lines[i + 1:end]
    return []


prologue = [".Os " + os_name if line == ".Os" and os_name else line for line in lines[:starts[0]]]
# mdoc's .Nd takes no trailing period (the abstract of --help has one).
name = [re.sub(r"\.\"?$", lambda m: m.group(0)[1:], l) if l.startswith(".Nd ") else l
        for l in section(lines, starts, "NAME")]
synopsis = [l for l in section(lines, starts, "SYNOPSIS") if l != ".Ar subcommand"]
description = section(lines, starts, "DESCRIPTION")

# The option list: the first top-level .Bl … .El of DESCRIPTION, without the `help` subcommand
# entry (and the list nested in it).
try:
    begin = next(i for i, l in enumerate(description) if l.startswith(".Bl "))
except StopIteration:
    fail("%s: DESCRIPTION has no option list" % generated_path)
options, depth, skipping = [], 0, False
for line in description[begin:]:
    if line.startswith(".Bl "):
        depth += 1
    if depth == 1 and line.startswith(".It "):
        skipping = line.startswith(".It Em help")
    if line == ".El":
        depth -= 1
        if depth == 0:
            options.append(line)
            break
    if not skipping:
        options.append(line)
else:
    fail("%s: unterminated option list" % generated_path)
if not any(l.startswith(".It Fl") for l in options):
    fail("%s: the option list names no option" % generated_path)

hand_starts = section_starts(hand)
hand_names = [hand[i][4:].strip('"') for i in hand_starts]
if not hand_names or hand_names[0] != "DESCRIPTION":
    fail("%s: must start with its DESCRIPTION section" % sections_path)
hand_comment = hand[:hand_starts[0]]
hand_description = hand[hand_starts[0]:hand_starts[1] if len(hand_starts) > 1 else len(hand)]
hand_rest = hand[hand_starts[1]:] if len(hand_starts) > 1 else []

page = (prologue + hand_comment + [".Sh NAME"] + name + [".Sh SYNOPSIS"] + synopsis + hand_description
        + [".Sh OPTIONS"] + options + hand_rest)
text = "\n".join(page) + "\n"
# mdoc wants no blank lines; the generated text has none left, the hand-written part must not either.
if re.search(r"\n\s*\n", text):
    fail("blank line in the assembled page")
open(output_path, "w", encoding="utf-8").write(text)
