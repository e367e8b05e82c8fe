"""No module in relayd/ is over MAX_LINES lines (issue 9, "Done when"): a module that grows past
it is split along a seam of its own (as relayd/wire/nmf.py was: records vs the preamble parser)."""

from pathlib import Path

import relayd

ROOT = Path(relayd.__file__).resolve().parent
MAX_LINES = 400


def test_no_module_is_over_the_limit():
    sizes = {p.relative_to(ROOT.parent): len(p.read_text(encoding="utf-8").splitlines())
             for p in sorted(ROOT.rglob("*.py"))}
    assert len(sizes) > 50  # the walk saw the package
    over = ["%s: %d lines" % (path, n) for path, n in sizes.items() if n > MAX_LINES]
    assert not over, "split these modules (at most %d lines each):\n%s" % (MAX_LINES, "\n".join(over))
