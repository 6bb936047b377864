"""Shared by the reference scripts that print C++ constants for the doctests.

A script defines generate() -> str, the "// BEGIN GENERATED ... // END
GENERATED" block, and calls main(generate, __doc__). Run bare, it prints the
block (to paste into the test); run with `--check TEST.cpp`, it exits 1 when
the block in TEST.cpp differs (CTest runs that, so constants cannot drift).
"""
import re
import sys

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def same_block(expected, found):
    """Same text outside numbers; numbers equal within 1e-12 relative."""
    expected_text, found_text = NUMBER.split(expected), NUMBER.split(found)
    if [" ".join(t.split()) for t in expected_text] != [" ".join(t.split()) for t in found_text]:
        return False, "the text around the numbers differs"
    for a, b in zip(NUMBER.findall(expected), NUMBER.findall(found)):
        x, y = float(a), float(b)
        if abs(x - y) > 1e-12 * max(1.0, abs(x), abs(y)):
            return False, f"expected {a}, found {b}"
    return True, ""


def check(path, generate):
    text = open(path, encoding="utf-8").read()
    start = text.find("// BEGIN GENERATED")
    end = text.find("// END GENERATED")
    if start < 0 or end < 0:
        print(f"{path}: no BEGIN/END GENERATED block", file=sys.stderr)
        return 1
    found = text[start : end + len("// END GENERATED")] + "\n"
    ok, why = same_block(generate(), found)
    if not ok:
        print(f"{path}: the generated constants are stale ({why}); re-run {sys.argv[0]} and paste its output",
              file=sys.stderr)
        return 1
    print(f"{path}: constants match {sys.argv[0]}")
    return 0


def main(generate, usage):
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2], generate))
    if len(sys.argv) != 1:
        print(usage, file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(generate())
