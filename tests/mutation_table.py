"""Print the per-module mutation table of the last ``mutmut run`` (README, Development).

``TORCH_COMPILE_DISABLE=1 mutmut run && python tests/mutation_table.py`` prints a Markdown
table per module: mutants, killed, survived, timed out (counted as killed), not covered by
any test, not checked yet, and the killed fraction of the checked ones (``tests/MUTATION.md``
keeps the committed one). Mutants marked ``# pragma: no mutate`` are not generated.
"""

from __future__ import annotations

import collections
import datetime
import re
import subprocess
import sys

_LINE = re.compile(r"^\s*(?P<module>[\w.]+)\.x\w*__mutmut_\d+: (?P<status>.+)$")


def main() -> int:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in out.splitlines():
        m = _LINE.match(line)
        if m:
            counts[m["module"]][m["status"].strip()] += 1
    print(f"Mutation testing, mutmut, {datetime.date.today().isoformat()} (TORCH_COMPILE_DISABLE=1, compile-only, "
          "multi-process, example, benchmark and type-check tests deselected; pyproject.toml [tool.mutmut])\n")
    print("| module | mutants | killed | survived | timeout | no tests | not checked | killed % of checked |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    total: collections.Counter[str] = collections.Counter()
    for module in sorted(counts):
        c = counts[module]
        total.update(c)
        print(_row(module, c))
    print(_row("**all**", total))
    return 0


def _row(name: str, c: collections.Counter[str]) -> str:
    # A timeout is a kill (the mutant made a test hang); "no tests": no test covers the line.
    checked = c["killed"] + c["survived"] + c["timeout"] + c["no tests"]
    score = f"{100 * (c['killed'] + c['timeout']) / checked:.0f}%" if checked else "-"
    return (f"| {name} | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['timeout']} | {c['no tests']} | "
            f"{c['not checked']} | {score} |")


if __name__ == "__main__":
    sys.exit(main())
