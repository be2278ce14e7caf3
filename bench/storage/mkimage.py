"""Fills DIR with a copy of real files from /usr (binaries, libraries, Python modules, headers,
documentation) up to BYTES of file data, in a fixed order so every run builds the same tree.

Usage: mkimage.py DIR BYTES
"""
import os
import shutil
import sys

# Where the files come from, with each source's share of the budget: a mix of executables and
# libraries (compress ~2:1), Python sources and headers (text) and /usr/share (docs, locales, data).
SOURCES = [('/usr/lib/x86_64-linux-gnu', 0.40), ('/usr/bin', 0.12), ('/usr/lib/python3', 0.13),
           ('/usr/include', 0.05), ('/usr/share', 0.25), ('/usr/lib/gcc', 0.05)]


def main():
    dst, budget = sys.argv[1], int(sys.argv[2])
    total = files = 0
    for src, share in SOURCES:
        # What an earlier source could not fill passes on to the later ones.
        limit = total + int(budget * share) if src != SOURCES[-1][0] else budget
        for root, dirs, names in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, '/usr')
            out = os.path.join(dst, rel)
            os.makedirs(out, exist_ok=True)
            for n in sorted(names):
                p = os.path.join(root, n)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                size = os.path.getsize(p)
                if total + size > limit:
                    continue
                try:
                    shutil.copyfile(p, os.path.join(out, n))
                except OSError:
                    continue
                total += size
                files += 1
            if total >= limit - (1 << 20):
                break
    print('%d files, %d bytes' % (files, total))


main()
